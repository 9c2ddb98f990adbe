"""Upgrading from a release without ``cloud-devices.json`` (0.1.2 or older) leaves nothing of
what it published behind (a reviewer's reproduction, each earlier release run and then the
current one on the same state):

* a hub reset with the daemon stopped (``gatewayctl reset --full``) and given away: its
  release left the old account's Zigbee devices on the broker for good (``$state ready``,
  their last values), shown to the previous owner;
* a device whose description changed since (a water meter that now reports volume) kept
  the old release's topics (``meter/energy``) beside the new ones.

The broker is a real mosquitto whose retained tree is published as the old release left
it, before the hub connects; the hub is the real cloud link."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewayd import homie
from gatewayd.cloud import ownership as ownership_module
from gatewayd.cloud.attempts import CloudOutcome
from gatewayd.cloud.leftovers import Leftovers
from gatewayd.cloud.link import CloudLink
from gatewayd.cloud.ownership import Ownership
from gatewayd.cloud.published import FILE_NAME, UNSWEPT, PublishedDevices, shape
from gatewayd.cloud.stale import StaleTopics
from gatewayd.credentials import CloudCredentials, mqtt_username
from gatewayd.onboarding.cloud_step import CloudLinkStep
from gatewayd.simulator.broker import PLATFORM_USER, Broker
from gatewayd.simulator.platform import SimPlatform
from gatewayd.state import StateStore
from tests.cloud_helpers import (
    HUB_ID,
    WSP,
    Monitor,
    TcpProxy,
    creds_for,
    make_broker,
    make_child,
    make_link,
    retained_snapshot,
    run,
)
from tests.helpers import ctl

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

ROOT = mqtt_username(WSP)
OTHER = ("other@example.com", "other-token")
OLD_ADDRESS = "192.0.2.10"  # the hub's address in its last session under the old account
METER = "zigbee-000d6f000a9069e7"  # a Zigbee child of this hub
NEIGHBOUR_HUB = "11-22-33-44-55-66"  # another hub of the same account, elsewhere
NEIGHBOUR_METER = "zigbee-000d6f000a9069e8"  # its Zigbee child
ESP = "esp-kitchen"  # a device of the account that is no gatewayd child


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Broker, SimPlatform, TcpProxy]]:
    broker = make_broker(tmp_path / "broker")
    broker.add_account(*OTHER)
    platform = SimPlatform(broker.host, broker.port, PLATFORM_USER, broker.platform_password,
                           tmp_path / "platform.json").start()
    proxy = TcpProxy(broker.host, broker.port)
    store = StateStore(tmp_path / "state")
    store.open(device_id=HUB_ID, mac="aa:bb:cc:dd:ee:ff")
    store.commit_pairing(None, creds_for(broker, host=proxy.host, port=proxy.port))
    yield broker, platform, proxy
    proxy.close()
    platform.stop()
    broker.stop()


# ---- what an old release left on the broker -----------------------------------------------

def meter(device_id: str = METER, *, reading: str = "volume", address: str = "",
          implementation: str = "gatewayd zigbee") -> homie.Device:
    """A Zigbee water meter as a release describes it: 0.1.2 and older called its reading
    ``energy`` (kWh), the current one ``volume`` (m³)."""
    unit = {"volume": "m³", "energy": "kWh"}[reading]
    return homie.Device(device_id, "Water meter", localip=address,
                        mac="00:0d:6f:00:0a:90:69:e7", fw_name="Virtual Meter",
                        implementation=implementation, nodes=[
                            homie.Node("meter", "Meter", properties=[
                                homie.Property(reading, reading.title(), datatype="float",
                                               unit=unit, value=12.5)]),
                            homie.Node("switch", "Valve", properties=[
                                homie.Property("on-off", "Open", datatype="boolean",
                                               settable=True, value=True)])])


def old_hub(device_id: str, address: str) -> homie.Device:
    return homie.Device(device_id, "gatewayd hub", localip=address, mac="dc:a6:32:12:34:56",
                        fw_name="gatewayd", fw_version="0.1.2", nodes=[
                            homie.Node("zigbee", "Zigbee", properties=[
                                homie.Property("device-count", "Devices", datatype="integer",
                                               value=1)])])


def publish_as_old_release(broker: Broker, *devices: homie.Device) -> None:
    """Leave ``devices`` retained under the account, ``$state ready``, as a run of an old
    release did before it stopped."""
    with Monitor(broker, "seed/none") as mon:
        sent = []
        for device in devices:
            messages = [(m.topic, m.payload) for m in device.messages(ROOT)]
            messages.append((f"{device.base(ROOT)}/$state", "ready"))
            sent += [mon.client.publish(t, p, qos=1, retain=True) for t, p in messages if p]
        for info in sent:
            info.wait_for_publish(10)


def tree(broker: Broker, device_id: str, root: str = ROOT) -> dict[str, str]:
    """What an app subscribing now finds retained of the device."""
    found = retained_snapshot(broker, f"{root}/sweet-home/{device_id}/#")
    return {topic.split("/", 3)[3]: m.text for topic, m in found.items()}


def other_creds(broker: Broker) -> CloudCredentials:
    return CloudCredentials(wsp=OTHER[0], token=OTHER[1], host=broker.host, port=broker.port)


def cloud(state_dir: Path) -> tuple[StateStore, CloudLink, StaleTopics, Ownership]:
    """What a start of the current gatewayd builds for the cloud (gatewayd.daemon)."""
    store = StateStore(state_dir)
    store.open()
    link = make_link()
    leftovers = Leftovers(link, store, timeout=5.0)
    stale = StaleTopics(link, store, leftovers, PublishedDevices(state_dir / FILE_NAME),
                        timeout=5.0)
    return store, link, stale, Ownership(link, timeout=5.0, leftovers=leftovers, stale=stale)


def reset_offline_and_give_away(state_dir: Path, broker: Broker) -> Ownership:
    """``gatewayctl reset --full`` with the daemon stopped, then the current release starts
    (no child: the Zigbee network is forgotten) and is paired with another account."""
    answer = json.loads(ctl("--socket", str(state_dir / "none.sock"), "--json", "reset",
                            "--full", "--state-dir", str(state_dir)).stdout)
    assert answer["offline"] and answer["release_pending"]["root_topic"] == ROOT

    async def pair() -> Ownership:
        store, link, _, ownership = cloud(state_dir)
        assert store.state.release is not None
        assert (await CloudLinkStep(link, store, ownership).connect(other_creds(broker),
                                                                    10)).ok
        await link.stop()
        return ownership

    return run(pair())


# ---- releasing an account the record knows nothing of -------------------------------------

def test_a_hub_reset_offline_after_an_old_release_gives_none_of_its_devices_away(
        world: tuple[Broker, SimPlatform, TcpProxy], tmp_path: Path) -> None:
    broker, platform, _ = world
    publish_as_old_release(
        broker, old_hub(HUB_ID, OLD_ADDRESS), meter(reading="energy", address=OLD_ADDRESS),
        old_hub(NEIGHBOUR_HUB, "192.0.2.11"),
        meter(NEIGHBOUR_METER, reading="energy", address="192.0.2.11"),
        meter(ESP, address=OLD_ADDRESS, implementation="esp8266"))
    assert tree(broker, METER)["$state"] == "ready"
    assert not (tmp_path / "state" / FILE_NAME).exists()

    reset_offline_and_give_away(tmp_path / "state", broker)

    # Nothing of this hub is left for the previous owner: before, its meter stayed
    # ("$state ready", its last reading) for good.
    assert tree(broker, METER) == {}
    assert tree(broker, HUB_ID) == {}
    assert platform.ownership[-1]["device_id"] == HUB_ID
    assert platform.ownership[-1]["children"] == [METER]
    # The account's other devices stay: another hub's, and one that is no gatewayd child.
    assert tree(broker, NEIGHBOUR_HUB)["$state"] == "ready"
    assert tree(broker, NEIGHBOUR_METER)["meter/energy"] == "12.5"
    assert tree(broker, ESP)["$state"] == "ready"


def test_a_release_hears_of_a_bounded_number_of_devices_and_says_so(
        world: tuple[Broker, SimPlatform, TcpProxy], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A broker that keeps more devices under the account than the release hears of: those
    heard of are cleared, the others stay, and the release is reported incomplete."""
    broker, platform, _ = world
    monkeypatch.setattr(ownership_module, "MAX_FOUND", 3)
    children = [f"zigbee-000d6f000a9069{i:02x}" for i in range(5)]
    publish_as_old_release(broker, old_hub(HUB_ID, OLD_ADDRESS),
                           *(meter(c, address=OLD_ADDRESS) for c in children))

    ownership = reset_offline_and_give_away(tmp_path / "state", broker)

    left = [c for c in children if tree(broker, c)]
    assert len(left) == 2 and all(tree(broker, c)["$state"] == "ready" for c in left)
    assert sorted(platform.ownership[-1]["children"]) == sorted(set(children) - set(left))
    assert ownership.last is not None and ownership.last["released"] is False
    assert "could not hear of every device under root" in caplog.text


def test_another_hub_at_the_same_address_keeps_its_children(
        world: tuple[Broker, SimPlatform, TcpProxy], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Two hubs of one account in two homes behind routers that both hand out the same
    private address: whose children are whose cannot be told from the broker, so none is
    taken (a review found the neighbour's meter cleared and named to the platform)."""
    broker, platform, _ = world
    publish_as_old_release(broker, old_hub(HUB_ID, OLD_ADDRESS), meter(address=OLD_ADDRESS),
                           old_hub(NEIGHBOUR_HUB, OLD_ADDRESS),
                           meter(NEIGHBOUR_METER, address=OLD_ADDRESS))

    reset_offline_and_give_away(tmp_path / "state", broker)

    assert tree(broker, HUB_ID) == {}  # the hub's own tree is its own
    assert tree(broker, NEIGHBOUR_METER)["$state"] == "ready"
    assert tree(broker, NEIGHBOUR_HUB)["$state"] == "ready"
    assert platform.ownership[-1]["children"] == []
    assert (f"another hub of the account ({NEIGHBOUR_HUB}) has this hub's address "
            f"{OLD_ADDRESS}") in caplog.text


def test_a_hub_of_this_release_without_children_is_recorded_and_asks_the_broker_nothing(
        world: tuple[Broker, SimPlatform, TcpProxy], tmp_path: Path) -> None:
    """Before: an account was recorded in cloud-devices.json only with a child, so every
    reset of a hub that had none (a hub paired a minute ago) took the broker path meant for
    accounts of 0.1.2 and older, and took devices of another hub at its address."""
    broker, platform, _ = world
    state_dir = tmp_path / "state"

    async def session() -> None:
        store, link, stale, ownership = cloud(state_dir)
        assert store.state.cloud is not None
        assert (await CloudLinkStep(link, store, ownership).connect(store.state.cloud, 10)).ok
        assert await stale.wait(30)
        await link.stop()
        await stale.flush()

    run(session())
    recorded = json.loads((state_dir / FILE_NAME).read_text())["roots"]
    assert recorded == {ROOT: {}}
    address = tree(broker, HUB_ID)["$localip"]
    # A meter of the account at the hub's address whose hub is gone from the broker.
    publish_as_old_release(broker, meter(NEIGHBOUR_METER, address=address))

    reset_offline_and_give_away(state_dir, broker)

    assert tree(broker, NEIGHBOUR_METER)["$state"] == "ready"
    assert platform.ownership[-1]["children"] == []


# ---- upgrading: devices whose tree changed since the old release --------------------------

def start(state_dir: Path, proxy: TcpProxy, *, added_after_connect: bool = False) -> None:
    """A start of the current release with a virtual lamp and the meter."""
    async def main() -> None:
        store, link, stale, _ = cloud(state_dir)
        link.add_device(make_child())
        if not added_after_connect:
            link.add_device(meter())
        assert store.state.cloud is not None
        await link.start(store.state.cloud)
        assert (await link.wait_result(10)).outcome is CloudOutcome.CONNECTED
        if added_after_connect:  # a Zigbee child comes once the radio is up
            assert await stale.wait(30)  # the lamp is recorded by then
            link.add_device(meter())
        assert await stale.wait(30)
        assert await link.flush(10)
        await link.stop()
        await stale.flush()

    run(main())


@pytest.mark.parametrize("added_after_connect", [False, True])
def test_the_first_start_after_an_upgrade_clears_what_a_changed_device_no_longer_has(
        world: tuple[Broker, SimPlatform, TcpProxy], tmp_path: Path,
        added_after_connect: bool) -> None:
    broker, _, proxy = world
    publish_as_old_release(broker, old_hub(HUB_ID, OLD_ADDRESS),
                           meter(reading="energy", address=OLD_ADDRESS))
    assert tree(broker, METER)["meter/energy/$unit"] == "kWh"

    start(tmp_path / "state", proxy, added_after_connect=added_after_connect)

    now = tree(broker, METER)
    # Before: meter/energy and its attributes stayed beside meter/volume, for good.
    assert [t for t in now if t.startswith("meter/energy")] == []
    assert now["meter/volume"] == "12.5" and now["meter/volume/$unit"] == "m³"
    assert now["meter/$properties"] == "volume" and now["switch/on-off"] == "true"
    record = PublishedDevices(tmp_path / "state" / FILE_NAME)
    assert record.shape_of(ROOT, METER) == shape(meter())


def test_a_comparison_cut_short_is_finished_at_the_next_start(
        world: tuple[Broker, SimPlatform, TcpProxy], tmp_path: Path) -> None:
    broker, _, proxy = world
    publish_as_old_release(broker, meter(reading="energy", address=OLD_ADDRESS))
    proxy.drop_publishes.set()  # the broker's answer does not reach the hub

    async def unanswered() -> None:
        store, link, stale, _ = cloud(tmp_path / "state")
        link.add_device(meter())
        assert store.state.cloud is not None
        await link.start(store.state.cloud)
        assert (await link.wait_result(10)).outcome is CloudOutcome.CONNECTED
        assert await stale.wait(30)
        await link.stop()
        await stale.flush()

    run(unanswered())
    assert "meter/energy" in tree(broker, METER)
    record = PublishedDevices(tmp_path / "state" / FILE_NAME)
    assert record.shape_of(ROOT, METER) == UNSWEPT  # the account is known now, the meter not

    proxy.drop_publishes.clear()
    start(tmp_path / "state", proxy)

    assert [t for t in tree(broker, METER) if t.startswith("meter/energy")] == []


def test_a_new_device_under_an_account_the_record_knows_is_not_compared(
        world: tuple[Broker, SimPlatform, TcpProxy], tmp_path: Path) -> None:
    """Nothing of a device that joined after the record knew the account can be stale: it
    is recorded as it is, without asking the broker."""
    broker, _, proxy = world
    record = PublishedDevices(tmp_path / "state" / FILE_NAME)
    record.note(ROOT, "virtual-kettle", "0123456789abcdef")

    async def saved() -> None:
        record.save()
        await record.flush()

    run(saved())
    # Whatever the broker keeps under it, the hub does not ask: it stays.
    publish_as_old_release(broker, meter(reading="energy", address=OLD_ADDRESS))

    start(tmp_path / "state", proxy)

    assert tree(broker, METER)["meter/energy"] == "12.5"
    assert PublishedDevices(tmp_path / "state" / FILE_NAME).shape_of(ROOT, METER) == shape(
        meter())
