"""The BLE commissioning window (issue 8): open, advertise, close, time out, survive a
bluetoothd restart; its control-socket API and ``gatewayctl ble-window``.

The BLE tests run the hub's real stack (Onboarding on the NetworkManager mock, the pairing
service, BleCommissioner over sdbus) against BlueZoo on a private bus, with a bleak phone on
hci1. The helpers here are shared with test_improv.py and test_ble_secure.py.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sdbus

from gatewayd.ap import NetworkManagerControl
from gatewayd.ble import improv_codec, secure_protocol
from gatewayd.ble_commission import BleCommissioner, BleUnavailable
from gatewayd.config import Config, with_overrides
from gatewayd.control.ble import ble_blueprint
from gatewayd.identity import Identity
from gatewayd.onboarding.machine import Onboarding
from gatewayd.onboarding.pairing import PairingService
from gatewayd.onboarding.steps import Failure, StepResult
from gatewayd.simulator.bluez_mock import BluezMock
from gatewayd.simulator.dbus_daemon import PrivateBus
from gatewayd.simulator.nm_mock import NetworkManagerMock
from gatewayd.state import StateStore
from tests.fakes import FakeClock, LogSignal, StubCloud
from tests.helpers import run_async

T = TypeVar("T")
IDENTITY = Identity("dc-a6-32-12-34-56", "dc:a6:32:12:34:56", "Acme Hub")
HUB_NAME = "Acme Hub 3456"
PHONE = "hci1"
STEP = 10.0  # bound for one step; normal runs take milliseconds


# --- the hardware-free world (shared with test_improv.py and test_ble_secure.py) ------------

@dataclass
class World:
    bus: PrivateBus
    bluez: BluezMock
    workdir: Path


def start_world(workdir: Path, mtu: int | None = None) -> World:
    # BlueZoo dies with the thread that started it: start it here, on the main thread.
    bus = PrivateBus(workdir / "bus").start()
    try:
        bluez = BluezMock(bus, workdir / "bluez", mtu=mtu).start()
    except BaseException:
        bus.stop()
        raise
    return World(bus, bluez, workdir)


def stop_world(world: World) -> None:
    world.bluez.stop()
    world.bus.stop()


def world_fixture(mtu: int | None) -> Any:
    @pytest.fixture(scope="module")
    def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
        w = start_world(tmp_path_factory.mktemp("ble"), mtu)
        yield w
        stop_world(w)
    return world


@pytest.fixture
def nm(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
       ) -> Iterator[NetworkManagerMock]:
    # sdbus (hub) and dbus-fast (bleak) both find the private bus through the environment.
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", world.bus.address)
    # With an Ethernet port (unplugged): a test plugs it in to pair "No Wi-Fi" (cloud only).
    mock = NetworkManagerMock(world.bus, tmp_path / "nm", ethernet=True).start()
    yield mock
    mock.stop()


def hub_config(tmp_path: Path, *, ble: dict[str, Any] | None = None,
               cloud: dict[str, Any] | None = None, **sections: dict[str, Any]) -> Config:
    """A hub with a button, cloud presets (so Improv pairs fully) and the panel on port 80."""
    cfg = with_overrides(Config(), hub={"state_dir": str(tmp_path / "state"),
                                        "product": "Acme Hub"})
    defaults: dict[str, dict[str, Any]] = {
        "cloud": {"host": "127.0.0.1", "wsp": "vendor@example.com", "token": "vendor-token",
                  **(cloud or {})},
        "ble": {"adapter": "hci0", **(ble or {})},
        "button": {"enabled": True},
        "portal": {"port": 80},
        "hotspot": {"connect_timeout": 5.0},
    }
    for name, values in sections.items():
        defaults[name] = {**defaults.get(name, {}), **values}
    return with_overrides(cfg, **defaults)


@dataclass
class RunningHub:
    config: Config
    store: StateStore
    onboarding: Onboarding
    pairing: PairingService
    commissioner: BleCommissioner
    cloud: StubCloud
    bus: sdbus.SdBus


@asynccontextmanager
async def running_hub(config: Config, *, cloud: StubCloud | None = None,
                      **kwargs: Any) -> AsyncIterator[RunningHub]:
    # A bus per event loop: sdbus ties a bus to the loop that first uses it.
    bus = sdbus.sd_bus_open_system()
    store = StateStore(config.state_dir)
    store.open(device_id=IDENTITY.device_id, mac=IDENTITY.mac)
    cloud = cloud or StubCloud()
    onboarding = Onboarding(config, store, NetworkManagerControl(config, IDENTITY, bus), cloud)
    await onboarding.start()
    pairing = PairingService(onboarding, config.cloud, wifi_enabled=config.hotspot.enabled)
    kwargs.setdefault("close_delay", 0.2)
    commissioner = BleCommissioner(config, IDENTITY, store, onboarding, pairing, bus=bus,
                                   **kwargs)
    try:
        await commissioner.start()
        if commissioner.peripheral is not None:
            await asyncio.wait_for(commissioner.peripheral.wait_registered(), STEP)
        yield RunningHub(config, store, onboarding, pairing, commissioner, cloud, bus)
    finally:
        await commissioner.stop()
        await onboarding.stop()
        bus.close()


async def scan_for(name: str, timeout: float,
                   wanted: Callable[[Any], bool] = lambda _adv: True) -> Any:
    """(device, advertisement) of the hub called ``name`` as the phone sees it, or None."""
    from bleak import BleakScanner

    found: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def detected(device: Any, adv: Any) -> None:
        if not found.done() and adv.local_name == name and wanted(adv):
            found.set_result((device, adv))

    async with BleakScanner(detected, bluez={"adapter": PHONE}):
        try:
            return await asyncio.wait_for(found, timeout)
        except TimeoutError:
            return None


run = functools.partial(run_async, timeout=60.0)


class HubThread:
    """A hub on its own event loop in a thread, for code that runs its own asyncio.run
    (``gatewayctl ble-pair``) on the main thread."""

    def __init__(self, config: Config, **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="hub", daemon=True)
        self._config = config
        self._kwargs = kwargs
        self._context: Any = None
        self.hub: RunningHub | None = None

    def call(self, coro: Awaitable[T], timeout: float = 30.0) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        return future.result(timeout)

    def __enter__(self) -> RunningHub:
        self._thread.start()

        async def enter() -> RunningHub:
            self._context = running_hub(self._config, **self._kwargs)
            return await self._context.__aenter__()

        self.hub = self.call(enter())
        return self.hub

    def __exit__(self, *exc: object) -> None:
        try:
            self.call(self._context.__aexit__(None, None, None))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


world = world_fixture(None)


# --- the window over BlueZoo ----------------------------------------------------------------

@pytest.mark.slow
def test_window_advertises_and_closing_unregisters_everything(
        world: World, nm: NetworkManagerMock, tmp_path: Path) -> None:
    from bleak import BleakClient

    async def scenario() -> None:
        async with running_hub(hub_config(tmp_path)) as hub:
            ble = hub.commissioner
            status = ble.status()
            assert status["window"]["open"] and status["window"]["opened_by"] == "boot"
            assert status["registered"] and status["advertising"]

            seen = await scan_for(HUB_NAME, STEP)
            assert seen is not None, "the phone did not see the hub's advertisement"
            device, adv = seen
            assert improv_codec.SERVICE_UUID in adv.service_uuids
            caps = improv_codec.Capability.DEVICE_INFO | improv_codec.Capability.SCAN_WIFI
            expected = bytes([0x01, caps, 0, 0, 0, 0])
            assert adv.service_data[improv_codec.SERVICE_DATA_UUID] == expected

            # The secure service is not advertised (no room) but is there after connecting.
            async with BleakClient(device, bluez={"adapter": PHONE}) as phone:
                assert phone.services.get_service(secure_protocol.SERVICE_UUID) is not None
                assert phone.services.get_service(improv_codec.SERVICE_UUID) is not None
                info = json.loads(bytes(await phone.read_gatt_char(secure_protocol.INFO_UUID)))
                assert info == {"protocol": 1, "device_id": IDENTITY.device_id,
                                "product": "Acme Hub", "name": HUB_NAME, "pairing_open": True,
                                "locked": False, "attempts_left": 5}

            peripheral = ble.peripheral
            assert peripheral is not None
            await ble.close_window()
            assert not ble.window_open and ble.status()["window"]["closed_reason"] == "control"
            assert peripheral.registered_with is None and not peripheral.advertising
            assert not peripheral.app.exported, "the GATT objects must leave the bus"
            # Absence can only be shown over time: several of BlueZoo's scan passes.
            assert await scan_for(HUB_NAME, 4 * world.bluez.scan_interval) is None

            # A new window builds new objects: the hub is visible and usable again.
            await ble.open_window("control")
            assert ble.peripheral is not None and ble.peripheral is not peripheral
            await asyncio.wait_for(ble.peripheral.wait_registered(), STEP)
            assert await scan_for(HUB_NAME, STEP) is not None

    run(scenario())


@pytest.mark.slow
@pytest.mark.ble_window
def test_window_closes_after_its_time_and_a_paired_hub_opens_none_at_boot(
        world: World, nm: NetworkManagerMock, tmp_path: Path) -> None:
    # The window's time on a FakeClock: with a real half-second window a loaded machine
    # could close it before the test looked (it did, under load).
    cfg = hub_config(tmp_path, ble={"window_seconds": 600.0})
    clock = FakeClock()

    async def scenario() -> None:
        async with running_hub(cfg, clock=clock, sleep=clock.sleep) as hub:
            ble = hub.commissioner
            assert ble.window_open
            await clock.sleeps(1)
            clock.advance(600.0)
            # Closed means closed with its reason (the window is down before the reason is
            # recorded): wait for what the user sees.
            await ble.wait_for(lambda: ble.status()["window"]["closed_reason"] is not None,
                               STEP)
            assert not ble.window_open
            assert ble.status()["window"]["closed_reason"] == "timeout"
            assert ble.peripheral is None

    run(scenario())

    store = StateStore(cfg.state_dir)
    store.open()
    from gatewayd.credentials import CloudCredentials, WifiCredentials

    store.commit_pairing(WifiCredentials("HomeNet", "supersecret"),
                         CloudCredentials("u@example.com", "t", "127.0.0.1", 1883))

    async def paired() -> None:
        async with running_hub(cfg) as hub:
            ble = hub.commissioner
            assert not ble.window_open and ble.status()["window"]["opened_by"] is None
            # The button opens it; a paired hub shows Improv "provisioned" (HA ignores it).
            await hub.onboarding.wait_for(lambda: not hub.onboarding.busy, STEP)
            await ble.authorize()
            assert ble.window_open and ble.status()["window"]["opened_by"] == "button"
            assert ble.improv.state == improv_codec.State.PROVISIONED

    run(paired())


@pytest.mark.slow
def test_hub_registers_again_when_bluetoothd_restarts_with_the_window_open(
        world: World, nm: NetworkManagerMock, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_hub(hub_config(tmp_path)) as hub:
            peripheral = hub.commissioner.peripheral
            assert peripheral is not None
            first = await asyncio.wait_for(peripheral.wait_registered(), STEP)
            count = peripheral.registrations
            # Blocking, on this (main) thread on purpose: BlueZoo dies with the thread that
            # started it.
            world.bluez.restart()
            second = await asyncio.wait_for(peripheral.wait_registered(after=count), STEP)
            assert second != first and peripheral.advertising
            assert hub.commissioner.status()["registered"]
            assert await scan_for(HUB_NAME, STEP) is not None

    run(scenario())


@pytest.mark.slow
@pytest.mark.ble_window
def test_window_stays_open_while_an_attempt_runs_past_its_time(
        world: World, nm: NetworkManagerMock, tmp_path: Path) -> None:
    """The window never closes under a phone that is watching an attempt: its time runs out
    during the attempt (a FakeClock: no real seconds), it stays open until the attempt has
    ended, then it closes for the timeout."""
    cfg = hub_config(tmp_path, ble={"window_seconds": 600.0})
    cloud = StubCloud()
    cloud.gate = asyncio.Event()  # the attempt waits in its cloud step
    clock = FakeClock()

    async def scenario() -> None:
        async with running_hub(cfg, cloud=cloud, clock=clock, sleep=clock.sleep) as hub:
            ble, onboarding = hub.commissioner, hub.onboarding
            await clock.sleeps(1)
            assert ble.window_open and clock.slept == [600.0]
            await hub.pairing.submit({"ssid": "HomeNet", "psk": "supersecret",
                                      "wsp": "user@example.com", "token": "user-token",
                                      "host": "127.0.0.1", "brport": "1883"}, "ble")
            await onboarding.wait_for(lambda: onboarding.step == "cloud", STEP)
            with LogSignal("stays open until the pairing attempt ends",
                           "window closed") as decided:
                clock.advance(600.0)
                said = await decided.wait(STEP)
            assert "stays open" in said.getMessage(), said.getMessage()
            assert ble.window_open and onboarding.busy
            assert ble.status()["window"]["closes_in"] == 0.0
            cloud.next_failure = StepResult(False, Failure.BROKER_REFUSED, "bad token")
            cloud.gate.set()
            # Closed means closed with its reason (the window is down before the reason is
            # recorded): wait for what the user sees.
            await ble.wait_for(lambda: ble.status()["window"]["closed_reason"] is not None,
                               STEP)
            assert not ble.window_open
            assert ble.status()["window"]["closed_reason"] == "timeout"
            assert onboarding.last_failure is not None  # the phone saw the attempt's end

    run(scenario())


@pytest.mark.slow
@pytest.mark.ble_window
def test_window_counts_down_can_be_extended_and_reopens_after_a_reset(
        world: World, nm: NetworkManagerMock, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gatewayd.ble_commission")
    cfg = hub_config(tmp_path, ble={"window_seconds": 600.0})
    clock = FakeClock()

    async def scenario() -> None:
        async with running_hub(cfg, clock=clock, sleep=clock.sleep) as hub:
            ble = hub.commissioner
            await clock.sleeps(1)
            assert ble.status()["window"] == {"open": True, "opened_by": "boot",
                                              "closes_in": 600.0, "closed_reason": None}
            status = ble.status()  # what gatewayctl status shows, beside the window
            assert status["enabled"] is True and status["adapter"] == cfg.ble.adapter
            assert status["name"] == HUB_NAME and status["secure"] == ble.secure.status()
            clock.advance(100.1)
            assert ble.status()["window"]["closes_in"] == 499.9
            await ble.open_window(seconds=60.0)  # a shorter window from now (the control API)
            await clock.sleeps(2)
            assert ble.status()["window"]["closes_in"] == 60.0
            assert ble.status()["window"]["opened_by"] == "control"
            assert clock.slept == [600.0, 60.0]  # the old countdown was replaced
            # What the journal says of it: the time left, not the clock's reading.
            assert "BLE commissioning window extended to 60s (control)" in caplog.text
            clock.advance(59.9)
            assert ble.window_open and ble.status()["window"]["closes_in"] == 0.1
            clock.advance(0.1)
            await ble.wait_for(lambda: ble.status()["window"]["closed_reason"] is not None,
                               STEP)
            assert ble.status()["window"] == {"open": False, "opened_by": "control",
                                              "closes_in": None, "closed_reason": "timeout"}
            await ble.on_hub_reset(True)  # a factory reset: pairing mode, window open
            assert ble.window_open and ble.status()["window"]["opened_by"] == "reset"
            await ble.close_window()
            assert ble.status()["window"]["closed_reason"] == "control"
            await ble.close_window("again")  # closing a closed window changes nothing
            assert ble.status()["window"]["closed_reason"] == "control"

    run(scenario())


@pytest.mark.slow
@pytest.mark.ble_window
def test_a_button_press_extends_a_window_opened_for_longer_never_shortens_it(
        world: World, nm: NetworkManagerMock, tmp_path: Path) -> None:
    """ble-protocol.md §1: a press while the window is open extends it. After
    ``gatewayctl ble-window open --seconds 3600`` a press (or an open without --seconds)
    keeps the longer time; with less than window_seconds left it gives window_seconds."""
    cfg = hub_config(tmp_path, ble={"window_seconds": 600.0})
    clock = FakeClock()

    async def scenario() -> None:
        async with running_hub(cfg, clock=clock, sleep=clock.sleep) as hub:
            ble = hub.commissioner
            await clock.sleeps(1)
            status = await ble.open_window("control", seconds=3600.0)
            assert status["window"]["closes_in"] == 3600.0
            # Opened from the control socket: Improv still needs the button (a press is
            # someone at the hub; a command is not).
            assert status["improv"]["state"] == "authorization-required"
            clock.advance(100.0)
            status = await ble.authorize("button")
            assert status["window"]["closes_in"] == 3500.0
            assert status["window"]["opened_by"] == "button"
            assert status["improv"]["state"] == "authorized"
            status = await ble.open_window("control")  # gatewayctl ble-window open
            assert status["window"]["closes_in"] == 3500.0
            clock.advance(3200.0)
            status = await ble.authorize("button")  # 300 s left: extended to 600 s
            assert status["window"]["closes_in"] == 600.0
            clock.advance(600.0)
            await ble.wait_for(lambda: ble.status()["window"]["closed_reason"] is not None,
                               STEP)
            assert ble.status()["window"] == {"open": False, "opened_by": "button",
                                              "closes_in": None, "closed_reason": "timeout"}

    run(scenario())


NO_PRESETS = {"wsp": "", "token": "", "host": ""}


@pytest.mark.slow
def test_improv_without_cloud_presets_gives_wifi_then_the_cloud_follows(
        world: World, nm: NetworkManagerMock, tmp_path: Path) -> None:
    """Wi-Fi first, cloud later: an Improv client (py-improv-ble-client) gives a hub without
    cloud presets Wi-Fi; the hub joins, stays unpaired with pairing open and answers with
    the panel's LAN URL; the secure service then pairs the cloud part (cloud-only)."""
    from improv_ble_client import ImprovBLEClient, device_filter
    from improv_ble_client import State as TheirState
    from improv_ble_client.models import DisconnectReason

    from gatewayd.ble import phone as ble_client
    from gatewayd.ble.improv_codec import State as ImprovState
    from gatewayd.onboarding.table import State

    cfg = hub_config(tmp_path, cloud=NO_PRESETS)

    async def scenario() -> None:
        async with running_hub(cfg) as hub:
            ble = hub.commissioner
            assert ble.improv_enabled and ble.improv_wifi_only
            seen = await scan_for(HUB_NAME, STEP, device_filter)
            assert seen is not None, "no Improv advertisement without cloud presets"
            client = ImprovBLEClient(*seen)
            await ble.authorize()  # the simulated button
            states: list[Any] = []
            url = await client.provision("HomeNet", "supersecret", states.append)
            assert url == "http://192.168.1.57/"  # the panel, at NetworkManager's address
            assert states[-1] == TheirState.PROVISIONED
            await client._execute_disconnect(DisconnectReason.TIMEOUT)

            # Settled (the result may reach the phone before onboarding's bookkeeping ends).
            await hub.onboarding.wait_for(lambda: hub.onboarding.pairing_open, STEP)
            progress = hub.onboarding.progress()
            assert hub.onboarding.state == State.UNPAIRED and progress.network == "wifi"
            assert progress.pairing_open and not progress.hotspot
            assert progress.last_failure is None
            assert "gatewayd-client-HomeNet" in [a["id"] for a in nm.active_connections()]
            assert hub.store.state.wifi is not None and hub.store.state.wifi.ssid == "HomeNet"
            assert hub.store.state.cloud is None and hub.cloud.connected is None
            # Improv's part is done; the window stays open for the cloud part.
            assert ble.improv.state == ImprovState.PROVISIONED and ble.window_open

            outcome = await ble_client.pair_secure(
                adapter=PHONE, name=HUB_NAME, setup_code=hub.store.state.setup_code,
                fields={"wsp": "user@example.com", "token": "user-token",
                        "host": "127.0.0.1", "brport": "1883"}, timeout=STEP)
            assert outcome["ok"] and outcome["progress"]["state"] == "online"
            assert hub.store.state.paired and hub.store.state.wifi is not None
            assert hub.store.state.wifi.ssid == "HomeNet"
            assert hub.cloud.connected is not None
            assert hub.cloud.connected.wsp == "user@example.com"
            # Closed means closed with its reason (the window is down before the reason is
            # recorded): wait for what the user sees.
            await ble.wait_for(lambda: ble.status()["window"]["closed_reason"] is not None,
                               STEP)
            assert not ble.window_open
            assert ble.status()["window"]["closed_reason"] == "paired"

    run(scenario())


def test_disabled_ble_registers_nothing_and_refuses_to_open(tmp_path: Path) -> None:
    cfg = hub_config(tmp_path, ble={"enabled": False})
    store = StateStore(cfg.state_dir)
    store.open(device_id=IDENTITY.device_id, mac=IDENTITY.mac)

    async def scenario() -> None:
        onboarding = Onboarding(cfg, store, None, StubCloud())
        pairing = PairingService(onboarding, cfg.cloud, wifi_enabled=False)
        ble = BleCommissioner(cfg, IDENTITY, store, onboarding, pairing)
        await ble.start()
        assert ble.status() == {"enabled": False} and ble.peripheral is None
        with pytest.raises(BleUnavailable) as refused:
            await ble.open_window()
        assert str(refused.value) == "BLE commissioning is disabled ([ble] enabled = false)"
        await ble.stop()

    run(scenario())


def test_improv_is_left_out_without_wifi_or_when_disabled(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    store.open(device_id=IDENTITY.device_id, mac=IDENTITY.mac)
    for cfg, wifi, reason in (
            (hub_config(tmp_path, hotspot={"enabled": False}), False, "no Wi-Fi"),
            (hub_config(tmp_path, ble={"improv": False}), True, "disabled")):
        onboarding = Onboarding(cfg, store, None, StubCloud())
        ble = BleCommissioner(cfg, IDENTITY, store, onboarding,
                              PairingService(onboarding, cfg.cloud, wifi_enabled=wifi))
        assert not ble.improv_enabled and reason in str(ble.improv_problem)
        assert ble.status()["improv"] == {"enabled": False, "reason": ble.improv_problem}
        # Only the secure service then, and its UUID fits the advertisement.
        adv = ble._advertisement()
        assert adv.service_uuids == [secure_protocol.SERVICE_UUID] and adv.legacy_length() <= 31


@pytest.mark.parametrize(("cloud", "wifi_only"), [
    ({}, False),  # a complete cloud account in the presets: Improv pairs fully
    ({"wsp": "", "token": "", "host": ""}, True),  # none: Wi-Fi first, cloud later
    ({"wsp": "", "token": ""}, True),  # a preset broker alone is no account
])
def test_improv_is_offered_with_or_without_cloud_presets(tmp_path: Path, cloud: dict[str, Any],
                                                         wifi_only: bool) -> None:
    cfg = hub_config(tmp_path, cloud=cloud)
    store = StateStore(cfg.state_dir)
    store.open(device_id=IDENTITY.device_id, mac=IDENTITY.mac)
    onboarding = Onboarding(cfg, store, None, StubCloud())
    ble = BleCommissioner(cfg, IDENTITY, store, onboarding,
                          PairingService(onboarding, cfg.cloud))
    assert ble.improv_enabled and ble.improv_problem is None
    assert ble.improv_wifi_only is wifi_only
    assert ble.status()["improv"]["enabled"] and ble.status()["improv"]["wifi_only"] is wifi_only
    adv = ble._advertisement()
    assert adv.service_uuids == [improv_codec.SERVICE_UUID] and adv.legacy_length() <= 31


@pytest.mark.parametrize(("led", "capabilities"), [
    (False, improv_codec.Capability.DEVICE_INFO | improv_codec.Capability.SCAN_WIFI),
    (True, improv_codec.Capability.DEVICE_INFO | improv_codec.Capability.SCAN_WIFI
     | improv_codec.Capability.IDENTIFY),
])
def test_the_daemon_offers_improv_identify_only_with_an_led(
        tmp_path: Path, led: bool, capabilities: improv_codec.Capability) -> None:
    """ble-protocol.md §3: identify is offered only on a hub with an LED; a client that sees
    the bit shows an Identify button that would do nothing. Through the daemon's wiring."""
    from gatewayd.ble.gatt import GattRequest
    from gatewayd.daemon import Daemon
    from gatewayd.runtime.logsetup import Redactor

    cfg = hub_config(tmp_path, led={"enabled": led})
    store = StateStore(cfg.state_dir)
    store.open(device_id=IDENTITY.device_id, mac=IDENTITY.mac)

    async def scenario() -> None:
        daemon = Daemon(cfg, store, IDENTITY, Redactor(), simulate=True, cloud_step=StubCloud())
        daemon._build(asyncio.get_running_loop())
        [ble] = [c.inner for c in daemon._late if isinstance(getattr(c, "inner", None),
                                                                BleCommissioner)]
        read = await ble.improv._read_capabilities(GattRequest("/org/bluez/hci0/dev_1", 23))
        assert read == bytes([capabilities])
        assert ble.improv.service_data()[1] == capabilities  # in the advertisement too

    run(scenario())


# --- control socket API and gatewayctl ble-window -------------------------------------------

class StubCommissioner:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.open = False
        self.enabled = True

    def status(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "name": HUB_NAME,
                "window": {"open": self.open, "closes_in": 600.0 if self.open else None},
                "improv": {"state": "authorized"}, "secure": {"locked": False}}

    async def open_window(self, source: str = "control", *, authorize: bool = False,
                          seconds: float | None = None) -> dict[str, Any]:
        if not self.enabled:
            raise BleUnavailable("BLE commissioning is disabled")
        self.calls.append(("open", source, authorize, seconds))
        self.open = True
        return self.status()

    async def close_window(self, reason: str = "control") -> dict[str, Any]:
        self.calls.append(("close", reason))
        self.open = False
        return self.status()


def test_window_endpoints(core_loop: asyncio.AbstractEventLoop) -> None:
    from gatewayd.control.app import create_control_app
    from gatewayd.runtime.corecall import CoreCall

    stub = StubCommissioner()
    call = CoreCall(core_loop)
    app = create_control_app(object(), call, extra=[ble_blueprint(stub, call)])  # type: ignore[arg-type]
    client = app.test_client()

    assert client.get("/api/v1/ble").get_json()["window"]["open"] is False
    reply = client.post("/api/v1/ble/window", json={"action": "open", "authorize": True,
                                                     "seconds": 120})
    assert reply.status_code == 200 and reply.get_json()["window"]["open"] is True
    assert stub.calls[-1] == ("open", "control", True, 120.0)
    assert client.get("/api/v1/ble/window").get_json()["window"]["open"] is True
    assert client.post("/api/v1/ble/window", json={"action": "close"}).status_code == 200
    assert stub.calls[-1] == ("close", "control")

    for body, start in (({"action": "toggle"}, "action"),
                        ({"action": "open", "authorize": 1}, "authorize"),
                        ({"action": "open", "seconds": -5}, "seconds"), ([], "the body")):
        reply = client.post("/api/v1/ble/window", json=body)
        assert reply.status_code == 400, body
        assert reply.get_json()["error"]["message"].startswith(start)
    reply = client.post("/api/v1/ble/window", json={"action": "open", "seconds": 0})
    assert reply.get_json()["error"]["message"] == ("seconds: must be a number of seconds "
                                                    "above 0, at most 86400")

    stub.enabled = False
    reply = client.post("/api/v1/ble/window", json={"action": "open"})
    assert reply.status_code == 409 and reply.get_json()["error"]["code"] == "ble-disabled"


class RecordingClient:
    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.requests: list[tuple[str, str, Any]] = []

    def request(self, method: str, endpoint: str, body: Any = None) -> Any:
        self.requests.append((method, endpoint, body))
        return self.answer


def test_gatewayctl_ble_window(capsys: pytest.CaptureFixture[str]) -> None:
    from gatewayd.ctl.ble import add_ble_commands

    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    add_ble_commands(parser.add_subparsers(dest="command"))
    stub = StubCommissioner()
    stub.open = True
    client = RecordingClient(stub.status())

    args = parser.parse_args(["ble-window", "open", "--authorize", "--seconds", "90"])
    assert args.func(args, client) == 0
    assert client.requests == [("POST", "ble/window",
                                {"action": "open", "authorize": True, "seconds": 90.0})]
    out = capsys.readouterr().out
    assert f"open as {HUB_NAME!r}" in out and "Improv: authorized" in out

    args = parser.parse_args(["--json", "ble-window", "close"])
    assert args.func(args, client) == 0
    assert client.requests[-1] == ("POST", "ble/window", {"action": "close"})
    assert json.loads(capsys.readouterr().out)["name"] == HUB_NAME

    args = parser.parse_args(["ble-window", "status"])
    args.func(args, client)
    assert client.requests[-1] == ("GET", "ble/window", None)
