"""A child removed while the cloud is out of reach leaves the broker even if the daemon
restarts before the cloud is back (a reviewer's reproduction: the app showed it as
``$state = ready`` for good); a child that merely is not there at a start stays."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gatewayd.cloud.attempts import CloudOutcome
from gatewayd.cloud.leftovers import Leftovers
from gatewayd.cloud.link import CloudLink
from gatewayd.cloud.ownership import Ownership
from gatewayd.credentials import CloudCredentials, mqtt_username
from gatewayd.owed import OwedClearing
from gatewayd.simulator.broker import Broker
from gatewayd.state import StateError, StateStore
from tests.cloud_helpers import (
    HUB_ID,
    WSP,
    TcpProxy,
    creds_for,
    make_broker,
    make_child,
    make_link,
    retained_snapshot,
    run,
    seed_retained,
)

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

ROOT = mqtt_username(WSP)
GONE = "zigbee-000d6f000a9069e7"  # removed with `gatewayctl zigbee remove`
OTHER = "zigbee-000d6f000a9069e8"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Broker, TcpProxy, Path]]:
    broker = make_broker(tmp_path / "broker")
    proxy = TcpProxy(broker.host, broker.port)
    store = StateStore(tmp_path / "state")
    store.open(device_id=HUB_ID, mac="aa:bb:cc:dd:ee:ff")
    store.commit_pairing(None, creds_for(broker, host=proxy.host, port=proxy.port))
    yield broker, proxy, store.dir
    proxy.close()
    broker.stop()


def tree(broker: Broker, device_id: str) -> dict[str, str]:
    """The device's retained topics on the broker, as a fresh subscriber gets them."""
    found = retained_snapshot(broker, f"{ROOT}/sweet-home/{device_id}/#")
    return {topic.split("/", 3)[3]: m.text for topic, m in found.items()}


def daemon(state_dir: Path, children: list[str]) -> tuple[StateStore, CloudLink, Leftovers]:
    """What a start of gatewayd builds for the cloud: the state, the link, its children."""
    store = StateStore(state_dir)
    store.open()
    link = make_link()
    leftovers = Leftovers(link, store, timeout=5.0)
    for child in children:
        link.add_device(make_child(child))
    return store, link, leftovers


def account(store: StateStore) -> CloudCredentials:
    assert store.state.cloud is not None
    return store.state.cloud


async def connect(link: CloudLink, store: StateStore) -> None:
    await link.start(account(store))
    assert (await link.wait_result(10)).outcome is CloudOutcome.CONNECTED
    assert await link.flush(10)


async def out_of_reach(link: CloudLink, proxy: TcpProxy) -> None:
    lost = asyncio.Event()
    link.add_listener(lambda r: lost.set() if r.outcome is CloudOutcome.UNREACHABLE else None)
    proxy.paused.set()
    proxy.cut()
    await asyncio.wait_for(lost.wait(), 10)
    assert not link.connected


def first_run(state_dir: Path, proxy: TcpProxy, children: list[str],
              offline: Callable[[CloudLink], None]) -> None:
    """Publish ``children``, lose the cloud, do ``offline(link)``, stop (a restart)."""

    async def main() -> None:
        store, link, _ = daemon(state_dir, children)
        await connect(link, store)
        await out_of_reach(link, proxy)
        offline(link)
        await link.stop()

    run(main())


def next_start(state_dir: Path, proxy: TcpProxy, children: list[str]) -> StateStore:
    """gatewayd starts again with ``children``; the cloud is back."""
    proxy.paused.clear()

    async def main() -> StateStore:
        store, link, leftovers = daemon(state_dir, children)
        await connect(link, store)
        assert await leftovers.wait(20)
        assert await link.flush(10)
        await link.stop()
        return store

    return run(main())


def test_a_child_removed_offline_is_cleared_after_a_restart(
        world: tuple[Broker, TcpProxy, Path]) -> None:
    broker, proxy, state_dir = world
    first_run(state_dir, proxy, [GONE], lambda link: link.remove_device(GONE))
    assert tree(broker, GONE)["$state"] == "ready"  # the clearing never went out
    assert StateStore(state_dir).open().redacted()["owed_clearings"] == 1

    store = next_start(state_dir, proxy, [])  # the child is gone from zigbee.db

    assert tree(broker, GONE) == {}
    assert store.state.owed == () and store.state.redacted()["owed_clearings"] == 0
    assert "owed_clearings" not in json.loads(store.path.read_text())


def test_a_child_added_again_before_the_clearing_keeps_its_topics(
        world: tuple[Broker, TcpProxy, Path]) -> None:
    broker, proxy, state_dir = world

    def offline(link: CloudLink) -> None:
        link.remove_device(GONE)
        link.remove_device(OTHER)
        link.add_device(make_child(OTHER))  # it joined again

    first_run(state_dir, proxy, [GONE, OTHER], offline)
    before = tree(broker, OTHER)
    assert before["$state"] == "ready"

    # The radio is down at this start: neither child is restored, only one was removed.
    store = next_start(state_dir, proxy, [])

    assert tree(broker, GONE) == {}
    assert tree(broker, OTHER) == before
    assert store.state.owed == ()


def test_a_child_only_absent_at_a_start_is_not_cleared(
        world: tuple[Broker, TcpProxy, Path]) -> None:
    broker, proxy, state_dir = world
    first_run(state_dir, proxy, [GONE, OTHER], lambda link: link.remove_device(GONE))
    before = tree(broker, OTHER)

    store = next_start(state_dir, proxy, [])  # OTHER not restored (e.g. radio down)

    assert tree(broker, GONE) == {}
    assert tree(broker, OTHER) == before and before["$state"] == "ready"
    assert store.state.owed == ()


def test_a_child_removed_online_is_cleared_and_no_longer_owed(
        world: tuple[Broker, TcpProxy, Path]) -> None:
    broker, _, state_dir = world

    async def main() -> StateStore:
        store, link, leftovers = daemon(state_dir, [GONE, OTHER])
        await connect(link, store)
        link.remove_device(GONE)
        assert await leftovers.wait(20)
        await link.stop()
        return store

    store = run(main())
    assert tree(broker, GONE) == {}
    assert tree(broker, OTHER)["$state"] == "disconnected"
    assert StateStore(store.dir).open().owed == ()


def test_many_removed_children_are_cleared_to_their_last_topic(
        world: tuple[Broker, TcpProxy, Path]) -> None:
    # Before: the hub asked about every removed device at once; the broker's burst of
    # retained messages overflowed the 512 inbound messages the hub keeps waiting, those
    # past it were dropped unseen, and the devices left the record with them still
    # retained: ghost devices in the app, for good.
    broker, proxy, state_dir = world
    gone = [f"zigbee-{i:016x}" for i in range(40)]
    seed_retained(broker, [f"{ROOT}/sweet-home/{d}/node{n}/$name" for d in gone
                           for n in range(40)])
    store = StateStore(state_dir)
    store.open()
    store.set_owed(tuple(OwedClearing(d, ROOT) for d in gone))

    store = next_start(state_dir, proxy, [])

    left = retained_snapshot(broker, f"{ROOT}/sweet-home/#")
    assert sorted(t for t in left if "/sweet-home/zigbee-" in t) == []
    assert store.state.owed == ()


def test_owed_clearings_go_with_the_account(world: tuple[Broker, TcpProxy, Path]) -> None:
    """They are the paired account's: a reset hands them to its release (and keeps them,
    for a pairing with the same account), another account never gets them."""
    broker, proxy, state_dir = world
    first_run(state_dir, proxy, [GONE], lambda link: link.remove_device(GONE))

    async def reset_offline() -> None:
        store, link, leftovers = daemon(state_dir, [OTHER])
        assert store.state.cloud is not None
        ownership = Ownership(link, leftovers=leftovers)
        release = await ownership.to_release(store.state.cloud)
        assert release.devices == (HUB_ID, OTHER, GONE)
        store.reset(release)
        assert not await ownership.release_at_reset(release)  # offline: kept
        assert store.state.owed == (OwedClearing(GONE, ROOT),)
        assert store.state.release == release

    run(reset_offline())
    store = StateStore(state_dir)
    store.open()
    assert store.state.redacted()["release_pending"]["devices"] == 3

    # gatewayctl reset with the daemon stopped: the same, from the state file alone.
    paired = creds_for(broker, host=proxy.host, port=proxy.port)
    store.commit_pairing(None, paired)
    store.set_owed((OwedClearing(GONE, ROOT),))
    reset = store.reset(keep_account=True)
    assert reset.release is not None and reset.release.devices == (HUB_ID, GONE)
    assert reset.owed == (OwedClearing(GONE, ROOT),)

    # Pairing with another account drops what was owed to the old one.
    store.commit_pairing(None, paired)
    store.set_owed((OwedClearing(GONE, ROOT),))
    assert store.state.owed == (OwedClearing(GONE, ROOT),)
    other = CloudCredentials(wsp="other@example.com", token="t", host=proxy.host,
                             port=proxy.port)
    assert store.commit_pairing(None, other).owed == ()


def test_a_child_removed_before_a_reset_is_cleared_when_the_same_account_pairs_again(
        world: tuple[Broker, TcpProxy, Path]) -> None:
    """A reset while offline, then the same account again (a new Wi-Fi network): no
    release runs (there is nothing to give up), and the removed child was lost with it."""
    broker, proxy, state_dir = world
    first_run(state_dir, proxy, [GONE, OTHER], lambda link: link.remove_device(GONE))

    async def reset_offline() -> None:
        store, link, leftovers = daemon(state_dir, [OTHER])
        assert store.state.cloud is not None
        ownership = Ownership(link, leftovers=leftovers)
        release = await ownership.to_release(store.state.cloud)
        store.reset(release)
        assert not await ownership.release_at_reset(release)  # offline: kept

    run(reset_offline())
    store = StateStore(state_dir)
    store.open()
    assert store.state.release is not None
    store.commit_pairing(None, store.state.release.cloud)  # what a person pairs with
    assert store.state.release is None

    store = next_start(state_dir, proxy, [OTHER])

    assert tree(broker, GONE) == {}
    assert "$homie" in tree(broker, OTHER)  # the child it has keeps its topics
    assert store.state.owed == ()


@pytest.mark.parametrize(("entry", "key"), [
    ("not an object", "owed_clearings[0]"),
    ({"device_id": "Not An Id", "root_topic": ROOT}, "owed_clearings[0].device_id"),
    ({"device_id": GONE, "root_topic": "a/b"}, "owed_clearings[0].root_topic"),
    ({"device_id": GONE}, "owed_clearings[0].root_topic"),
])
def test_a_broken_owed_clearing_in_the_state_file_is_refused_by_name(
        tmp_path: Path, entry: object, key: str) -> None:
    store = StateStore(tmp_path)
    store.open(device_id=HUB_ID, mac="aa:bb:cc:dd:ee:ff")
    data = json.loads(store.path.read_text())
    data["owed_clearings"] = [entry]
    store.path.write_text(json.dumps(data))
    with pytest.raises(StateError) as refused:
        StateStore(tmp_path).open()
    assert refused.value.key == key
    assert key in str(refused.value)
