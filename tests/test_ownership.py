"""Releasing an account when a paired hub is reset (issue 16): online at once, offline at
the next pairing, with nothing left under the old root either way."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewayd.cloud.attempts import CloudOutcome
from gatewayd.cloud.ownership import Ownership
from gatewayd.credentials import CloudCredentials, mqtt_username
from gatewayd.onboarding.cloud_step import CloudLinkStep
from gatewayd.simulator.broker import PLATFORM_USER, Broker
from gatewayd.simulator.platform import SimPlatform
from gatewayd.state import StateError, StateStore
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

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

ROOT = mqtt_username(WSP)
OTHER = ("other@example.com", "other-token")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Broker, SimPlatform]]:
    broker = make_broker(tmp_path / "broker")
    broker.add_account(*OTHER)
    platform = SimPlatform(broker.host, broker.port, PLATFORM_USER, broker.platform_password,
                           tmp_path / "platform.json").start()
    yield broker, platform
    platform.stop()
    broker.stop()


def store_in(tmp: Path) -> StateStore:
    store = StateStore(tmp / "state")
    store.open(device_id=HUB_ID, mac="aa:bb:cc:dd:ee:ff")
    return store


def other_creds(broker: Broker) -> CloudCredentials:
    return CloudCredentials(wsp=OTHER[0], token=OTHER[1], host=broker.host, port=broker.port)


def test_a_reset_while_online_releases_the_account_at_once(
        world: tuple[Broker, SimPlatform], tmp_path: Path) -> None:
    broker, platform = world
    store = store_in(tmp_path)
    creds = creds_for(broker)
    store.commit_pairing(None, creds)

    async def main() -> None:
        link = make_link()
        link.add_device(make_child())
        with Monitor(broker) as mon:
            await link.start(creds)
            await mon.await_for(f"{ROOT}/sweet-home/virtual-lamp/$state", "ready")
            # A leftover of an earlier session the model no longer knows: cleared too.
            mon.publish(f"{ROOT}/sweet-home/{HUB_ID}/old/gone", "x", retain=True)
            ownership = Ownership(link)
            assert store.state.cloud is not None
            pending = await ownership.to_release(store.state.cloud)
            store.reset(pending)  # the reset writes the state first (gatewayd.hub)
            assert await ownership.release_at_reset(pending)
        assert not link.connected

    run(main())
    assert retained_snapshot(broker, f"{ROOT}/#") == {}
    assert platform.ownership[-1]["device_id"] == HUB_ID
    assert platform.ownership[-1]["children"] == ["virtual-lamp"]


def test_a_reset_while_offline_releases_at_the_next_pairing(
        world: tuple[Broker, SimPlatform], tmp_path: Path) -> None:
    broker, platform = world
    proxy = TcpProxy(broker.host, broker.port)
    store = store_in(tmp_path)
    creds = creds_for(broker, host=proxy.host, port=proxy.port)
    store.commit_pairing(None, creds)

    async def main() -> None:
        link = make_link()
        link.add_device(make_child())
        ownership = Ownership(link, timeout=3.0)
        with Monitor(broker) as mon:
            await link.start(creds)
            await mon.await_for(f"{ROOT}/sweet-home/virtual-lamp/$state", "ready")
        proxy.paused.set()  # the cloud is out of reach
        proxy.cut()
        assert store.state.cloud is not None
        release = await ownership.to_release(store.state.cloud)
        assert release.devices == (HUB_ID, "virtual-lamp")
        store.reset(release)
        assert not await ownership.release_at_reset(release)
        await link.stop()

        # The pending release survives a restart, in a private file.
        reloaded = StateStore(store.dir)
        reloaded.open()
        assert reloaded.state.release == release and not reloaded.state.paired
        assert stat.S_IMODE(store.path.stat().st_mode) == 0o600

        proxy.paused.clear()  # back; a new pairing with another account
        step = CloudLinkStep(link, store, ownership)
        result = await step.connect(other_creds(broker), timeout=10)
        assert result.ok, result
        store.commit_pairing(None, other_creds(broker))
        assert store.state.release is None
        await link.stop()

    try:
        run(main())
    finally:
        proxy.close()
    assert retained_snapshot(broker, f"{ROOT}/#") == {}
    assert platform.ownership[-1]["device_id"] == HUB_ID
    other_root = mqtt_username(OTHER[0])
    assert f"{other_root}/sweet-home/virtual-lamp/$state" in retained_snapshot(
        broker, f"{other_root}/#")


def test_a_release_the_broker_did_not_finish_answering_is_finished_at_the_next_pairing(
        world: tuple[Broker, SimPlatform], tmp_path: Path) -> None:
    # Before: a reset whose sweep did not hear the broker out (its answer too slow, or too
    # big for the hub) cleared what it had seen, reported the account released and kept
    # nothing: the rest stayed retained under the old root for good.
    broker, platform = world
    proxy = TcpProxy(broker.host, broker.port)
    store = store_in(tmp_path)
    creds = creds_for(broker, host=proxy.host, port=proxy.port)
    store.commit_pairing(None, creds)

    async def main() -> None:
        link = make_link()
        link.add_device(make_child())
        ownership = Ownership(link, timeout=1.0)
        with Monitor(broker) as mon:
            await link.start(creds)
            await mon.await_for(f"{ROOT}/sweet-home/virtual-lamp/$state", "ready")
        proxy.drop_publishes.set()  # the broker's answer does not reach the hub
        assert store.state.cloud is not None
        release = await ownership.to_release(store.state.cloud)
        store.reset(release)
        assert not await ownership.release_at_reset(release)
        assert ownership.last is not None and ownership.last["released"] is False
        assert release.devices == (HUB_ID, "virtual-lamp")
        assert retained_snapshot(broker, f"{ROOT}/sweet-home/virtual-lamp/#") != {}

        proxy.drop_publishes.clear()
        step = CloudLinkStep(link, store, ownership)
        assert (await step.connect(other_creds(broker), timeout=10)).ok
        assert ownership.last["released"] is True
        await link.stop()

    try:
        run(main())
    finally:
        proxy.close()
    assert retained_snapshot(broker, f"{ROOT}/#") == {}
    assert platform.ownership[-1]["device_id"] == HUB_ID


def test_a_reset_with_the_daemon_stopped_releases_at_the_next_pairing(
        world: tuple[Broker, SimPlatform], tmp_path: Path) -> None:
    """`gatewayctl reset` while gatewayd is stopped cannot reach the cloud: it keeps the
    account as a pending release (before: forgotten, its retained topics left for good),
    and the daemon releases it, with the children it has, at the next pairing."""
    broker, platform = world
    store = store_in(tmp_path)
    creds = creds_for(broker)
    store.commit_pairing(None, creds)

    async def published() -> None:
        link = make_link()
        link.add_device(make_child())
        with Monitor(broker) as mon:
            await link.start(creds)
            await mon.await_for(f"{ROOT}/sweet-home/virtual-lamp/$state", "ready")
        await link.stop()  # the daemon stops; its retained tree stays

    run(published())
    answer = json.loads(ctl("--socket", str(tmp_path / "none.sock"), "--json", "reset",
                            "--state-dir", str(store.dir)).stdout)
    assert answer["offline"] and answer["release_pending"]["root_topic"] == ROOT
    restarted = StateStore(store.dir)
    restarted.open()
    assert restarted.state.release is not None and not restarted.state.paired

    async def next_pairing() -> None:
        link = make_link()  # the daemon started again, with its child
        link.add_device(make_child())
        step = CloudLinkStep(link, restarted, Ownership(link, timeout=3.0))
        result = await step.connect(other_creds(broker), timeout=10)
        assert result.ok, result
        restarted.commit_pairing(None, other_creds(broker))
        assert restarted.state.release is None
        await link.stop()

    run(next_pairing())
    assert retained_snapshot(broker, f"{ROOT}/#") == {}
    assert platform.ownership[-1]["device_id"] == HUB_ID
    assert platform.ownership[-1]["children"] == ["virtual-lamp"]


def test_pairing_again_with_the_same_account_releases_nothing(
        world: tuple[Broker, SimPlatform], tmp_path: Path) -> None:
    broker, platform = world

    async def main() -> None:
        link = make_link()
        store = store_in(tmp_path)
        ownership = Ownership(link)
        release = await ownership.to_release(creds_for(broker))
        store.reset(release)
        assert not await ownership.release_at_reset(release)  # not connected
        result = await CloudLinkStep(link, store, Ownership(link)).connect(creds_for(broker), 10)
        assert result.ok and (await link.wait_result(1)).outcome is CloudOutcome.CONNECTED
        await link.stop()

    run(main())
    assert platform.ownership == []


def test_a_broken_release_in_the_state_file_is_refused_by_name(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    data = json.loads(store.path.read_text())
    data["release"] = {"cloud": {"wsp": WSP, "token": "t", "host": "h", "port": 1883},
                       "devices": ["Not An Id"], "since": 1.0}
    store.path.write_text(json.dumps(data))
    with pytest.raises(StateError) as refused:
        StateStore(store.dir).open()
    assert refused.value.key == "release.devices"
