"""The hub's ``$telemetry/signal`` (docs/cloud.md): the strength of the access point the hub
is a client of, as NetworkManager tells it (review: it came from /proc/net/wireless only,
the kernel's view of whatever card the machine has, so the simulated hub on HomeNet at 82 %
published no signal at all and an app developer never saw the number their app shows).

Against the NetworkManager mock on a private bus (tests/test_onboarding.py's fixtures) and
the real control; the daemon's wiring with a real broker, where what counts is what the
broker got on the hub's ``$telemetry/signal``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gatewayd.ap import HOTSPOT_ID, NetworkManagerControl
from gatewayd.cloud import telemetry
from gatewayd.config import load_config
from gatewayd.credentials import mqtt_username
from gatewayd.daemon import Daemon
from gatewayd.nm.strength import WifiSignal
from gatewayd.onboarding.machine import Onboarding
from gatewayd.onboarding.pairing import PairingService
from gatewayd.onboarding.table import State
from gatewayd.runtime.logsetup import Redactor
from gatewayd.simulator.nm_mock import AP_IFACE, WIRELESS_IFACE, NetworkManagerMock
from gatewayd.state import StateStore
from tests.cloud_helpers import WSP, Monitor, creds_for, make_broker, retained_snapshot
from tests.fakes import StubCloud
from tests.helpers import base_config, write_config
from tests.test_hardware import until as condition
from tests.test_onboarding import (
    HOME,
    IDENTITY,
    active_ids,
    bus,
    fields,
    make_config,
    nm,
    run,
    store_for,
    until,
)

__all__ = ["bus", "nm"]  # fixtures, from tests/test_onboarding.py

pytestmark = pytest.mark.timeout(120)

HOME_BSSID = "10:6F:3F:5A:00:01"  # HomeNet's 2.4 GHz radio, 82 %: the one the hub joins
KERNEL = 57  # what /proc/net/wireless says here: the fallback, which must not win


def active_ap_strength(nm: NetworkManagerMock) -> int:
    """The Strength of the Wi-Fi device's ActiveAccessPoint, as the mock has it."""
    ap = str(nm._get(nm.device_path(), WIRELESS_IFACE, "ActiveAccessPoint"))
    return int(nm._get(ap, AP_IFACE, "Strength"))


async def signal_of(readers: dict[str, telemetry.Reader]) -> int | None:
    value = (await telemetry.sample(readers)).get("signal")
    return None if value is None else int(value)


def test_the_signal_is_the_joined_networks_strength_and_none_on_the_hotspot(
        nm: NetworkManagerMock, tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    store = store_for(cfg)

    async def scenario() -> None:
        control = NetworkManagerControl(cfg, IDENTITY)
        readers = telemetry.default_readers(WifiSignal(control, lambda: KERNEL).read)
        assert await signal_of(readers) is None  # the control has not started: not yet
        ob = Onboarding(cfg, store, control, StubCloud())
        await ob.start()
        try:
            await until(ob, lambda: ob.progress().hotspot)
            # NetworkManager's active access point is the hotspot itself, at 100 %: no
            # signal is the hub's on its hotspot, and not the kernel's either.
            assert active_ids(nm) == [HOTSPOT_ID] and active_ap_strength(nm) == 100
            assert await signal_of(readers) is None

            await PairingService(ob, cfg.cloud).submit(fields(HOME), "test")
            await until(ob, lambda: ob.state == State.ONLINE)
            assert await signal_of(readers) == 82

            nm.set_strength(HOME_BSSID, 35)  # the hub's router moved away: the next sample
            assert await signal_of(readers) == 35

            nm.remove_ap("HomeNet")  # no link: no signal, whatever the kernel says
            await until(ob, lambda: ob.state != State.ONLINE)
            assert await signal_of(readers) is None
        finally:
            await ob.stop()

    run(scenario())


def test_without_networkmanager_the_kernel_tells_the_signal(nm: NetworkManagerMock,
                                                             tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    store = store_for(cfg)
    store.commit_pairing(HOME, creds_for(None))

    async def scenario() -> None:
        control = NetworkManagerControl(cfg, IDENTITY)
        readers = telemetry.default_readers(WifiSignal(control, lambda: KERNEL).read)
        ob = Onboarding(cfg, store, control, StubCloud())
        await ob.start()
        try:
            await until(ob, lambda: ob.state == State.ONLINE)
            assert await signal_of(readers) == 82
            nm.stop()  # the link may well outlive NetworkManager; the kernel still knows
            assert await signal_of(readers) == KERNEL
        finally:
            await ob.stop()

    run(scenario())


def test_the_daemon_publishes_the_access_points_strength_as_the_hubs_signal(
        nm: NetworkManagerMock, tmp_path: Path) -> None:
    broker = make_broker(tmp_path / "broker")
    config = load_config(write_config(tmp_path / "g.toml", base_config(tmp_path, (
        "[ble]\nenabled = false\n[hotspot]\nconnect_timeout = 5\n"
        "[cloud]\nreconnect_min = 0.05\nreconnect_max = 0.3\n"))))
    store = StateStore(config.state_dir)
    store.open(device_id=IDENTITY.device_id, mac=IDENTITY.mac)
    store.commit_pairing(HOME, creds_for(broker))
    daemon = Daemon(config, store, IDENTITY, Redactor(), simulate=True)
    hub = f"{mqtt_username(WSP)}/sweet-home/{IDENTITY.device_id}"

    async def scenario() -> None:
        assert daemon.onboarding is not None and daemon.telemetry is not None
        await daemon.onboarding.wait_for(
            lambda: daemon.onboarding is not None and daemon.onboarding.state == State.ONLINE,
            30)
        link = daemon.cloud_link
        assert link is not None
        # Refreshed as the link connects, not a minute later: the hub has just joined.
        await condition(lambda: link.device(IDENTITY.device_id).find(
            "$telemetry/signal").value == 82, 10, "the signal read as the link connected")
        assert await link.flush(10)
        tree = await asyncio.to_thread(retained_snapshot, broker, f"{hub}/$telemetry/#")
        assert tree[f"{hub}/$telemetry/signal"].text == "82"
        assert tree[f"{hub}/$telemetry/signal/$unit"].text == "%"
        listed = await asyncio.to_thread(retained_snapshot, broker, f"{hub}/$telemetry")
        assert "signal" in listed[f"{hub}/$telemetry"].text.split(",")

        with Monitor(broker, f"{hub}/$telemetry/signal") as monitor:
            nm.set_strength(HOME_BSSID, 35)
            await daemon.telemetry.refresh()
            await monitor.await_for(f"{hub}/$telemetry/signal", "35", timeout=10)

    async def both() -> None:
        task = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(daemon.ready.wait(), 30)
            await scenario()
        finally:
            if daemon.hub is not None:
                daemon.hub.stop_requested.set()
            await task

    try:
        run(both())
    finally:
        broker.stop()
