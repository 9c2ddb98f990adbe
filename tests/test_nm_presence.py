"""NetworkManager restarting under the hub, missing when it starts, leaving during a pairing
(the review of NetworkManager handling). Against the NetworkManager mock on a private bus,
stopped and started again by the test, as tests/test_onboarding.py; a hub process where
what the user sees is gatewayctl status.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sdbus import DbusNoReplyError, SdBusLibraryError

from gatewayd.ap import HOTSPOT_ID
from gatewayd.nm.presence import gone
from gatewayd.onboarding.machine import Onboarding
from gatewayd.onboarding.pairing import PairingService
from gatewayd.onboarding.progress import describe
from gatewayd.onboarding.table import State
from gatewayd.runtime.sysbus import ended_with_bus
from gatewayd.simulator.bluez_mock import BluezMock
from gatewayd.simulator.dbus_daemon import PrivateBus
from gatewayd.simulator.nm_mock import NetworkManagerMock
from tests.helpers import Gatewayd, base_config, ctl_json, wait_for, write_config
from tests.test_onboarding import (
    HOME,
    active_ids,
    bus,
    fields,
    make_config,
    nm,
    onboarding,
    profile_ids,
    request,
    run,
    store_for,
    until,
)

__all__ = ["bus", "nm"]  # fixtures, from tests/test_onboarding.py

WAITING = "unpaired: waiting for pairing"


@pytest.fixture
def nm_saving(bus: PrivateBus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
              ) -> Iterator[NetworkManagerMock]:
    """The mock keeping saved profiles "on disk", as NetworkManager does across a restart."""
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)
    mock = NetworkManagerMock(bus, tmp_path / "nm", profiles_file=tmp_path / "profiles.json")
    yield mock.start()
    mock.stop()


def nm_running(ob: Onboarding) -> bool | None:
    """What the hub's status says of NetworkManager (progress ``networkmanager``)."""
    return ob.progress().networkmanager


def test_the_hotspot_comes_back_after_networkmanager_restarts(nm: NetworkManagerMock,
                                                              tmp_path: Path) -> None:
    """Before: the restarted NetworkManager's wlan0 came up disconnected, the hub still said
    "(hotspot up)" and a short press answered "the hotspot is back on": nobody could find
    the hub over Wi-Fi until it was restarted."""
    cfg = make_config(tmp_path)
    store = store_for(cfg)

    async def scenario() -> None:
        async with onboarding(cfg, store) as ob:
            assert active_ids(nm) == [HOTSPOT_ID]
            nm.stop()
            nm.start()  # back before the hub could look: a new owner of the name
            assert active_ids(nm) == []
            await until(ob, lambda: ob.progress().hotspot and active_ids(nm) == [HOTSPOT_ID])
            assert describe(ob.progress()) == f"{WAITING} (hotspot up)"
            assert ob.pairing_open

    run(scenario())


def test_a_reset_after_networkmanager_restarted_raises_the_hotspot(
        nm_saving: NetworkManagerMock, tmp_path: Path) -> None:
    """Before: the hub kept the hotspot profile's D-Bus path from the first NetworkManager;
    after its restart a reset failed with "Connection '/org/freedesktop/NetworkManager/
    Settings/2' is not available" at every retry, for ever."""
    nm = nm_saving
    cfg = make_config(tmp_path)
    store = store_for(cfg)

    async def scenario() -> None:
        async with onboarding(cfg, store) as ob:
            await ob.begin(request(HOME))
            await until(ob, lambda: ob.state == State.ONLINE)
            nm.stop()
            await until(ob, lambda: nm_running(ob) is False)
            assert describe(ob.progress()) == "online; NetworkManager is not running " \
                                               "(waiting for it)"
            nm.start()  # with the saved profile, which it joins again by itself
            await until(ob, lambda: nm_running(ob) is True)
            await ob.reset()
            await until(ob, lambda: ob.progress().hotspot)
            assert active_ids(nm) == [HOTSPOT_ID]
            assert describe(ob.progress()) == f"{WAITING} (hotspot up)"
            assert "gatewayd-client-HomeNet" not in [c["connection"]["id"]
                                                     for c in nm.connections()]

    run(scenario())


def test_a_reset_while_networkmanager_was_away_forgets_the_network_once_it_is_back(
        nm_saving: NetworkManagerMock, tmp_path: Path) -> None:
    """A reset while NetworkManager is away cannot delete the hub's client profile; it comes
    back with it saved and joins the network by itself. The hub deletes it then (the
    network's passphrase goes with it) and raises its hotspot. Before this test, a hub that
    left the profile (and sat unpaired on the old network, no hotspot) passed the suite."""
    nm = nm_saving
    cfg = make_config(tmp_path)
    store = store_for(cfg)

    async def scenario() -> None:
        async with onboarding(cfg, store) as ob:
            await ob.begin(request(HOME))
            await until(ob, lambda: ob.state == State.ONLINE)
            nm.stop()
            await until(ob, lambda: nm_running(ob) is False)
            store.reset()  # as the daemon's reset: the state forgets, then the machine
            await ob.reset()
            assert ob.state == State.UNPAIRED and not ob.progress().hotspot
            nm.start()  # with the saved profile, which it joins again by itself
            await until(ob, lambda: ob.progress().hotspot and active_ids(nm) == [HOTSPOT_ID])
            assert "gatewayd-client-HomeNet" not in profile_ids(nm)
            assert ob.progress().network is None
            assert describe(ob.progress()) == f"{WAITING} (hotspot up)"

    run(scenario())


def test_a_network_lost_while_networkmanager_was_away_takes_the_hub_offline(
        nm: NetworkManagerMock, tmp_path: Path) -> None:
    """Before: a hub whose network went while NetworkManager was down said online and on
    Wi-Fi for ever."""
    cfg = make_config(tmp_path)
    store = store_for(cfg)

    async def scenario() -> None:
        async with onboarding(cfg, store) as ob:
            await ob.begin(request(HOME))
            await until(ob, lambda: ob.state == State.ONLINE and ob.progress().network == "wifi")
            nm.stop()
            await until(ob, lambda: nm_running(ob) is False)
            nm.access_points[:] = [ap for ap in nm.access_points if ap["ssid"] != "HomeNet"]
            nm.start()  # HomeNet is out of range now
            await until(ob, lambda: ob.state == State.OFFLINE)
            assert ob.progress().network is None and nm_running(ob) is True
            assert describe(ob.progress()) == "offline: network lost"
            assert active_ids(nm) == []

    run(scenario())


def test_a_pairing_without_networkmanager_fails_in_words_and_the_hotspot_returns_with_it(
        nm: NetworkManagerMock, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Before: "pairing attempt crashed" and "could not raise the hotspot" with tracebacks,
    and the user read "The hub hit an internal error ... restart the hub"."""
    cfg = make_config(tmp_path)
    store = store_for(cfg)
    caplog.set_level(logging.DEBUG, logger="gatewayd")

    async def scenario() -> None:
        async with onboarding(cfg, store) as ob:
            nm.stop()
            await until(ob, lambda: nm_running(ob) is False)
            assert not ob.progress().hotspot and ob.pairing_open
            assert describe(ob.progress()) == f"{WAITING}; NetworkManager is not running " \
                                               "(waiting for it)"
            await PairingService(ob, cfg.cloud).submit(fields(HOME), "test")
            await until(ob, lambda: ob.last_failure is not None and ob.state == State.UNPAIRED)
            assert ob.last_failure is not None
            assert ob.last_failure.code == "wifi-failed"
            assert ob.last_failure.reason.startswith("NetworkManager is not running")
            assert not store.state.paired and store.state.wifi is None
            nm.start()
            await until(ob, lambda: ob.progress().hotspot)
            assert active_ids(nm) == [HOTSPOT_ID] and nm_running(ob) is True
            assert describe(ob.progress()).startswith(f"{WAITING} (hotspot up); last attempt")

    run(scenario())
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []
    lines = [r.getMessage() for r in caplog.records]
    assert lines.count("NetworkManager left the bus; waiting for it to come back") == 1


def test_a_link_that_was_up_and_drops_is_not_blamed_on_the_password(
        nm: NetworkManagerMock, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Before: an access point that stopped answering (NetworkManager reason 11, supplicant
    timeout) on a link that had been up for days was logged "most often a wrong password.
    Check it and try again"."""
    cfg = make_config(tmp_path)
    store = store_for(cfg)

    async def scenario() -> None:
        lost: list[str] = []
        seen = asyncio.Event()

        class Lost(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if record.getMessage().startswith("network lost:"):
                    lost.append(record.getMessage())
                    seen.set()

        handler = Lost()
        logging.getLogger("gatewayd").addHandler(handler)
        try:
            async with onboarding(cfg, store) as ob:
                await ob.begin(request(HOME))
                await until(ob, lambda: ob.state == State.ONLINE)
                nm.drop_wifi(11)
                await asyncio.wait_for(seen.wait(), 10)
        finally:
            logging.getLogger("gatewayd").removeHandler(handler)
        assert len(lost) == 1 and "wrong password" not in lost[0], lost
        assert "NetworkManager reason 11" in lost[0] and "stopped accepting" in lost[0]

    run(scenario())


# ---- a hub process ----------------------------------------------------------------------------


class Hub:
    """A gatewayd process with Wi-Fi (and BLE, if asked) on a private system bus."""

    def __init__(self, tmp: Path, system_bus: PrivateBus, *, ble: bool = False) -> None:
        text = base_config(tmp, '[hotspot]\ninterface = "wlan0"\n[ble]\nenabled = '
                           + ("true" if ble else "false") + "\n")
        config = write_config(tmp / "gatewayd.toml",
                              text.replace("[hub]\n", '[hub]\ndevice_id = "nm-test"\n', 1))
        self.socket = tmp / "run" / "control.sock"
        self.proc = Gatewayd(["--config", str(config)],
                             env={"DBUS_SYSTEM_BUS_ADDRESS": system_bus.address})
        self.proc.wait_socket(self.socket)

    def wait(self, ready: Callable[[dict[str, Any]], Any], what: str) -> dict[str, Any]:
        """gatewayctl status, once ``ready`` says yes."""
        def check() -> dict[str, Any] | None:
            assert self.proc.proc.poll() is None, self.proc.output()
            answer: dict[str, Any] = ctl_json("--socket", str(self.socket), "status")
            return answer if ready(answer) else None
        return wait_for(check, 20, what)  # type: ignore[no-any-return]


def end(hub: Hub | None) -> None:
    """A daemon a failed assertion left running would outlive the test (and the suite)."""
    if hub is not None and hub.proc.proc.poll() is None:
        hub.proc.proc.kill()
        hub.proc.proc.wait(10)


def test_a_hub_started_without_networkmanager_waits_for_it_and_then_raises_its_hotspot(
        tmp_path: Path) -> None:
    """Before: gatewayd on a bus without NetworkManager exited 1 after 0.3 s with a
    traceback (DbusServiceUnknownError): under systemd a restart every 5 s, Zigbee and BLE
    going down with it."""
    system_bus = PrivateBus(tmp_path / "bus").start()
    hub: Hub | None = None
    try:
        hub = Hub(tmp_path, system_bus)
        waiting = hub.wait(lambda s: s["onboarding"]["networkmanager"] is False,
                           "the hub waiting for NetworkManager")
        assert waiting["state"] == "unpaired" and not waiting["onboarding"]["hotspot"]
        assert waiting["status_text"] == (f"{WAITING}; NetworkManager is not running "
                                          "(waiting for it)")
        nm = NetworkManagerMock(system_bus, tmp_path / "nm").start()
        try:
            up = hub.wait(lambda s: s["onboarding"]["hotspot"],
                          "the hotspot once NetworkManager runs")
            assert up["onboarding"]["networkmanager"] is True
            assert up["status_text"] == f"{WAITING} (hotspot up)"
            assert active_ids(nm) == [HOTSPOT_ID]
            assert hub.proc.stop() == 0, hub.proc.output()
        finally:
            nm.stop()
        log = hub.proc.output()
        assert log.count("NetworkManager is not running; waiting for it") == 1, log
        assert "Traceback" not in log and " ERROR " not in log, log
    finally:
        end(hub)
        system_bus.stop()


def test_a_hub_whose_system_bus_went_away_exits_for_systemd_to_start_it_again(
        tmp_path: Path) -> None:
    """Before: after the D-Bus daemon restarted, the hub ran on without a bus (status
    stale, pairing answered an internal error, SdBusLibraryError 107 in its log) and kept
    feeding systemd's watchdog: a zombie nobody restarted. Restart=on-failure restarts a
    hub that exits 1."""
    system_bus = PrivateBus(tmp_path / "bus").start()
    nm = NetworkManagerMock(system_bus, tmp_path / "nm").start()
    hub: Hub | None = None
    try:
        hub = Hub(tmp_path, system_bus)
        hub.wait(lambda s: s["onboarding"]["hotspot"], "the hotspot")
        system_bus.stop()
        assert hub.proc.proc.wait(30) == 1, hub.proc.output()
        log = hub.proc.output()
        assert log.count("the connection to the system D-Bus was lost") == 1, log
        assert "Traceback" not in log, log
    finally:
        end(hub)
        nm.stop()
        system_bus.stop()


def test_a_hub_with_ble_on_air_exits_cleanly_when_its_system_bus_goes_away(
        tmp_path: Path) -> None:
    """Before: with BLE commissioning on the air, the same exit logged "stopping ble failed"
    and a traceback (SdBusLibraryError 107: unregistering from bluetoothd on a connection
    that had ended, although bluetoothd forgets such registrations itself)."""
    system_bus = PrivateBus(tmp_path / "bus").start()
    nm = NetworkManagerMock(system_bus, tmp_path / "nm").start()
    bluez = BluezMock(system_bus, tmp_path / "bluez")
    hub: Hub | None = None
    try:
        bluez.start()
        hub = Hub(tmp_path, system_bus, ble=True)
        hub.wait(lambda s: s["onboarding"]["hotspot"] and s["ble"]["advertising"],
                 "the hotspot and the BLE advertisement")
        system_bus.stop()
        assert hub.proc.proc.wait(30) == 1, hub.proc.output()
        log = hub.proc.output()
        assert log.count("the connection to the system D-Bus was lost") == 1, log
        assert "Traceback" not in log and "stopping ble failed" not in log, log
    finally:
        end(hub)
        bluez.stop()  # on a bus that is gone: returns (it waited 10 s and raised before)
        nm.stop()
        system_bus.stop()


def test_only_an_ended_connection_reads_as_the_bus_gone() -> None:
    """A bus daemon that is slow (bluetoothd or NetworkManager not answering in time) is not a
    lost bus: the hub must not exit for it. An ended one, however the call learnt it, is."""
    call = "sd_bus_call_async(...) in function SdBus_call_async returned error number: "
    assert ended_with_bus(DbusNoReplyError("Connection terminated"))
    assert ended_with_bus(SdBusLibraryError(call + "107"))  # ENOTCONN
    assert ended_with_bus(SdBusLibraryError(call + "104"))  # ECONNRESET
    assert not ended_with_bus(DbusNoReplyError("Method call timed out"))
    assert not ended_with_bus(SdBusLibraryError(call + "22"))  # EINVAL: our own mistake
    assert not ended_with_bus(TimeoutError())


def test_networkmanager_leaving_in_the_middle_of_a_call_reads_as_not_running() -> None:
    """Before: NetworkManager stopping while it owed the hub an answer (the bus daemon's
    NoReply, "Message recipient disconnected from message bus without replying") was not
    read as NetworkManager gone, so the call's error went up as any other and the watch
    looked again only when the name's owner change reached it; a slow one (no answer in
    time) is still an error of its own."""
    assert gone(DbusNoReplyError(
        "Message recipient disconnected from message bus without replying"))
    assert not gone(DbusNoReplyError("Method call timed out"))
    assert not gone(DbusNoReplyError("Connection terminated"))  # ours: the bus, not NM
