"""A virtual device dropped from the configuration, or changed into another kind, leaves the
broker at the next start (a reviewer's reproduction: the dropped timer stayed in the app for
good as ``$state = disconnected`` with all its 39 retained topics, a command sensor turned
into a switch kept ``sensor/$name``, and a reset's release did not name the dropped one).

The broker here keeps its retained messages across the hub's restarts, as a real one does;
the hub is built by the daemon's own wiring (:meth:`gatewayd.daemon.Daemon._build`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gatewayd.cloud.attempts import CloudOutcome
from gatewayd.cloud.published import FILE_NAME, MAX_DEVICES, PublishedDevices, shape
from gatewayd.config import Config, parse_config
from gatewayd.credentials import CloudCredentials, mqtt_username
from gatewayd.daemon import Daemon
from gatewayd.identity import Identity
from gatewayd.runtime.logsetup import Redactor
from gatewayd.simulator.broker import PLATFORM_USER, Broker
from gatewayd.simulator.platform import SimPlatform
from gatewayd.state import StateStore
from gatewayd.virtual.host import VirtualDevices
from tests.cloud_helpers import (
    HUB_ID,
    WSP,
    TcpProxy,
    creds_for,
    make_broker,
    retained_snapshot,
    run,
)

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

ROOT = mqtt_username(WSP)
IDENTITY = Identity(HUB_ID, "aa:bb:cc:dd:ee:ff", "Review hub")
OTHER = ("other@example.com", "other-token")
KETTLE = '[[virtual]]\ntype = "timer"\nid = "rvkettle"\nname = "Review kettle"\n'
TEA = '[[virtual]]\ntype = "timer"\nid = "rvtea"\nname = "Review tea"\n'
SENSOR = '[[virtual]]\ntype = "command"\nid = "probe"\ncommand = ["echo", "21"]\n'
SWITCH = ('[[virtual]]\ntype = "command"\nid = "probe"\nmode = "switch"\non = ["true"]\n'
          'off = ["true"]\n')


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Broker, SimPlatform, TcpProxy]]:
    broker = make_broker(tmp_path / "broker")
    broker.add_account(*OTHER)
    platform = SimPlatform(broker.host, broker.port, PLATFORM_USER, broker.platform_password,
                           tmp_path / "platform.json").start()
    proxy = TcpProxy(broker.host, broker.port)
    store = StateStore(tmp_path / "state")
    store.open(device_id=HUB_ID, mac=IDENTITY.mac)
    store.commit_pairing(None, creds_for(broker, host=proxy.host, port=proxy.port))
    yield broker, platform, proxy
    proxy.close()
    platform.stop()
    broker.stop()


def config(tmp: Path, *virtual: str) -> Config:
    text = (f'[hub]\nstate_dir = "{tmp / "state"}"\nruntime_dir = "{tmp / "run"}"\n'
            '[hotspot]\nenabled = false\n[ble]\nenabled = false\n' + "".join(virtual))
    return parse_config(tomllib.loads(text), str(tmp / "gatewayd.toml"))


def tree(broker: Broker, device_id: str, root: str = ROOT) -> dict[str, str]:
    """What an app subscribing now finds retained of the device."""
    found = retained_snapshot(broker, f"{root}/sweet-home/{device_id}/#")
    return {topic.split("/", 3)[3]: m.text for topic, m in found.items()}


def other_creds(broker: Broker) -> CloudCredentials:
    return CloudCredentials(wsp=OTHER[0], token=OTHER[1], host=broker.host, port=broker.port)


@contextlib.asynccontextmanager
async def hub(cfg: Config, *, online: bool = True) -> AsyncIterator[Daemon]:
    """A start of gatewayd with ``cfg``: its cloud link connecting with the stored account,
    if any (as onboarding does), and its virtual devices started; stopped on leaving."""
    store = StateStore(cfg.state_dir)
    store.open()
    daemon = Daemon(cfg, store, IDENTITY, Redactor(), simulate=True)
    daemon.hub = daemon._build(asyncio.get_running_loop())
    link, stale = daemon.cloud_link, daemon.stale
    assert link is not None and stale is not None
    [virtual] = [c for c in daemon._late if isinstance(c, VirtualDevices)]
    if store.state.cloud is not None:  # paired (else onboarding waits for a pairing)
        await link.start(store.state.cloud)
    if online:
        assert (await link.wait_result(10)).outcome is CloudOutcome.CONNECTED
    await virtual.start()
    if online:  # what the start has to clear is cleared
        assert await stale.wait(20) and await stale.leftovers.wait(20)
        assert await link.flush(10)
    try:
        yield daemon
    finally:
        await virtual.stop()
        await link.stop()


def switch_shape(tmp: Path) -> str:
    """The shape the record keeps of the probe as a switch, as a start records it."""
    async def main() -> str:
        async with hub(config(tmp / "elsewhere", SWITCH), online=False) as daemon:
            assert daemon.cloud_link is not None
            return shape(daemon.cloud_link.device("virtual-probe"))

    return run(main(), timeout=30)


def start(cfg: Config, *, online: bool = True) -> None:
    async def main() -> None:
        async with hub(cfg, online=online):
            pass

    run(main(), timeout=60)


def test_a_virtual_device_dropped_from_the_configuration_leaves_the_app_at_the_next_start(
        world: tuple[Broker, SimPlatform, TcpProxy], tmp_path: Path) -> None:
    broker = world[0]
    start(config(tmp_path, KETTLE))
    assert tree(broker, "virtual-rvkettle")["$name"] == "Review kettle"

    start(config(tmp_path, TEA))  # the kettle timer is no longer configured

    assert tree(broker, "virtual-rvkettle") == {}
    assert tree(broker, "virtual-rvtea")["$state"] == "disconnected"  # the one it has stays
    assert StateStore(tmp_path / "state").open().owed == ()
    record = tmp_path / "state" / FILE_NAME
    assert json.loads(record.read_text())["roots"][ROOT].keys() == {"virtual-rvtea"}
    assert record.stat().st_mode & 0o777 == 0o600

    start(config(tmp_path))  # and with no [[virtual]] at all
    assert tree(broker, "virtual-rvtea") == {}
    assert tree(broker, HUB_ID)["$state"] == "disconnected"


def test_a_virtual_device_whose_nodes_changed_keeps_no_topic_of_the_old_ones(
        world: tuple[Broker, SimPlatform, TcpProxy], tmp_path: Path) -> None:
    broker = world[0]
    start(config(tmp_path, SENSOR))
    assert tree(broker, "virtual-probe")["sensor/$name"] == "probe"

    start(config(tmp_path, SWITCH))  # the same device, now a switch

    now = tree(broker, "virtual-probe")
    assert [t for t in now if t.startswith("sensor/")] == []
    assert now["$nodes"] == "switch" and now["switch/state/$datatype"] == "boolean"
    assert now["$name"] == "probe"  # what it still has stays

    start(config(tmp_path, SWITCH))  # nothing changed: nothing cleared
    assert tree(broker, "virtual-probe") == now


def test_one_edit_that_drops_a_device_and_changes_another_clears_both_at_once(
        world: tuple[Broker, SimPlatform, TcpProxy], tmp_path: Path) -> None:
    """Both clearings ask the broker at the same time, each with its own marker round;
    before they took turns, one round's tap replaced the other's and it waited in vain."""
    broker = world[0]
    start(config(tmp_path, KETTLE, SENSOR))

    start(config(tmp_path, SWITCH))

    assert tree(broker, "virtual-rvkettle") == {}
    assert [t for t in tree(broker, "virtual-probe") if t.startswith("sensor/")] == []
    # Both seen done: nothing left to ask the broker at the next connection.
    assert StateStore(tmp_path / "state").open().redacted()["owed_clearings"] == 0
    again = PublishedDevices(tmp_path / "state" / FILE_NAME)
    assert again.devices(ROOT) == ["virtual-probe"]
    assert again.shape_of(ROOT, "virtual-probe") == switch_shape(tmp_path)


def test_a_reset_releases_a_dropped_device_still_on_the_broker(
        world: tuple[Broker, SimPlatform, TcpProxy], tmp_path: Path) -> None:
    """Reset while the cloud is out of reach, right after the start that dropped it: the
    release kept for the next pairing names it, and that pairing clears it."""
    broker, platform, proxy = world
    start(config(tmp_path, KETTLE, TEA))
    proxy.paused.set()
    proxy.cut()

    async def reset_offline_then_pair_another_account() -> None:
        async with hub(config(tmp_path, TEA), online=False) as daemon:
            assert daemon.hub is not None and daemon.onboarding is not None
            assert daemon.hub.releaser is not None
            # The factory reset's part for the account (Hub._reset): keep it, release it
            # if online (not here).
            assert daemon.store.state.cloud is not None
            release = await daemon.hub.releaser.to_release(daemon.store.state.cloud)
            daemon.store.reset(release)
            assert not await daemon.hub.releaser.release_at_reset(release)
            assert release.devices == (HUB_ID, "virtual-rvtea", "virtual-rvkettle")
            proxy.paused.clear()
            assert (await daemon.onboarding.cloud.connect(other_creds(broker), 10)).ok

    run(reset_offline_then_pair_another_account(), timeout=60)
    assert platform.ownership[-1]["children"] == ["virtual-rvtea", "virtual-rvkettle"]
    assert retained_snapshot(broker, f"{ROOT}/#") == {}


def test_a_reset_with_the_daemon_stopped_releases_every_device_it_published(
        world: tuple[Broker, SimPlatform, TcpProxy], tmp_path: Path) -> None:
    """`gatewayctl reset` with gatewayd stopped knows only the state file; the daemon's
    next pairing names what it had published, dropped devices included."""
    broker, platform, _ = world
    start(config(tmp_path, KETTLE, TEA))
    StateStore(tmp_path / "state").reset(keep_account=True)  # what gatewayctl reset does

    async def pair_another_account() -> None:
        async with hub(config(tmp_path, TEA), online=False) as daemon:
            assert daemon.onboarding is not None
            assert (await daemon.onboarding.cloud.connect(other_creds(broker), 10)).ok

    run(pair_another_account(), timeout=60)
    assert sorted(platform.ownership[-1]["children"]) == ["virtual-rvkettle", "virtual-rvtea"]
    assert retained_snapshot(broker, f"{ROOT}/#") == {}


@pytest.mark.parametrize("content", [b"{not json", b'{"version": 7}', b"\xff\xfe",
                                     b'{"version": 1, "roots": []}', b"[[[[" * 100])
def test_a_damaged_record_is_read_as_empty_and_named_in_the_log(
        tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / FILE_NAME
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        record = PublishedDevices(path)
    assert record.devices(ROOT) == []
    assert str(path) in caplog.text
    record.note(ROOT, "virtual-kettle", "0123456789abcdef")

    async def saved() -> None:
        record.save()  # replaced by a sound one, off the loop
        await record.flush()

    run(saved())
    assert PublishedDevices(path).devices(ROOT) == ["virtual-kettle"]


def test_a_damaged_entry_is_skipped_and_the_record_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    path.write_text(json.dumps({"version": 1, "roots": {
        ROOT: {"virtual-a": "0123456789abcdef", "Bad Id": "0123456789abcdef",
               "virtual-b": "not a shape"},
        "a/b": {"virtual-c": "0123456789abcdef"}}}))
    record = PublishedDevices(path)
    assert record.devices(ROOT) == ["virtual-a"] and record.devices("a/b") == []
    for i in range(MAX_DEVICES + 5):
        record.note(ROOT, f"zigbee-{i:016x}", "0123456789abcdef")
    assert len(record.devices(ROOT)) == MAX_DEVICES
    assert record.devices(ROOT)[-1] == f"zigbee-{MAX_DEVICES + 4:016x}"
