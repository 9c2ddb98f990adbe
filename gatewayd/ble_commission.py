"""The BLE commissioning window: Improv Wi-Fi and the secure gatewayd service on BlueZ.

While the window is open the hub registers one GATT application (Improv, if usable, and the
secure service) and one advertisement on ``[ble] adapter``; while it is closed nothing of
ours is registered and nothing is advertised. The window opens at boot while the hub is
unpaired, after a factory reset, on a button short press (:meth:`authorize`) and from the
control socket (:meth:`open_window`); it closes after ``[ble] window_seconds`` (never in the
middle of a pairing attempt) or shortly after a pairing succeeds.

Advertising: Improv's service UUID and its 4677 service data fill the 31-byte legacy
advertisement (clients must find both in the same packet), so the secure service's UUID is
not advertised; the local name goes into the scan response and phones find the secure
service by GATT discovery after connecting. Without Improv the secure UUID is advertised.

Improv carries only an SSID and a passphrase. With a complete cloud account in the vendor's
presets (``[cloud]``) an Improv provisioning pairs the hub completely; without one it is
"Wi-Fi first, cloud later": the hub joins the network, stays unpaired with pairing open on
the LAN, and the Improv result is the panel's URL there, where the user adds the account.

Both services reach the rest of the hub only through their hosts
(:mod:`gatewayd.ble.hosts`), which hand pairing to the one front door,
:meth:`gatewayd.onboarding.pairing.PairingService.submit`; this class follows
:class:`~gatewayd.onboarding.machine.Onboarding` for progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from gatewayd.ble import improv_codec, improv_service, secure_protocol, secure_service
from gatewayd.ble.advertisement import Advertisement
from gatewayd.ble.gatt import Application, adapter_path
from gatewayd.ble.hosts import (
    HubView,
    ImprovHubHost,
    SecureHubHost,
    improv_provisioned,
    lan_panel_url,
)
from gatewayd.ble.peripheral import Peripheral
from gatewayd.config import Config
from gatewayd.identity import BLE_NAME_BYTES, Identity
from gatewayd.onboarding.machine import Onboarding
from gatewayd.onboarding.pairing import PairingService
from gatewayd.onboarding.progress import Progress
from gatewayd.onboarding.table import State
from gatewayd.runtime.sysbus import bus_lost, ended_with_bus
from gatewayd.state import StateStore

if TYPE_CHECKING:
    from sdbus import SdBus
    from sdbus.sd_bus_internals import SdBusMessage, SdBusSlot

    from gatewayd.hub import Hub

log = logging.getLogger(__name__)

APP_PATH = "/io/gatewayd/ble/commission"
ADV_PATH = "/io/gatewayd/ble/commission_adv"
MAX_LOCAL_NAME = BLE_NAME_BYTES  # bytes left in a 31-byte scan response after the AD header
CLOSE_DELAY = 2.0  # after a successful pairing: time for the last notifications to leave

PanelUrl = Callable[[], Awaitable[str | None]]
TextHook = Callable[[str], Awaitable[str]]


class BleUnavailable(RuntimeError):
    """BLE commissioning is switched off in the configuration."""


class BleCommissioner:
    """The window, its GATT application and advertisement, and the two services' host."""

    name = "ble"

    def __init__(self, config: Config, identity: Identity, store: StateStore,
                 onboarding: Onboarding, pairing: PairingService, *,
                 bus: SdBus | None = None, panel_url: PanelUrl | None = None,
                 identify: Callable[[], Awaitable[None]] | None = None,
                 set_hostname: TextHook | None = None, set_device_name: TextHook | None = None,
                 close_delay: float = CLOSE_DELAY,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.config = config
        self.identity = identity
        self.store = store
        self.onboarding = onboarding
        self.pairing = pairing
        self.bus = bus
        self.clock = clock  # the window's deadline; ``sleep`` waits for it (tests move both)
        self.sleep = sleep
        self.close_delay = close_delay
        self._panel_url = panel_url or self._default_panel_url
        self.hub = HubView(config, identity, store, onboarding, pairing,
                           identity.render(config.ble.name_template, MAX_LOCAL_NAME))
        self.improv_host = ImprovHubHost(self.hub, identify=identify, set_hostname=set_hostname,
                                         set_device_name=set_device_name, renamed=self._renamed,
                                         max_name=MAX_LOCAL_NAME)
        self.improv = improv_service.ImprovService(
            self.improv_host, authorization_seconds=config.ble.authorization_seconds,
            clock=clock)
        self.improv.on_state = self._on_improv_state
        self.secure = secure_service.SecureService(SecureHubHost(self.hub),
                                                   device_id=identity.device_id,
                                                   max_failures=config.ble.max_failures,
                                                   clock=clock)
        self.peripheral: Peripheral | None = None
        self._app: Application | None = None
        self._adv: Advertisement | None = None
        self._deadline: float | None = None
        self._opened_by: str | None = None
        self._closed_reason: str | None = None
        self._last_state: State | None = None
        self._events: asyncio.Queue[tuple[State, Progress]] = asyncio.Queue(maxsize=64)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._slot: SdBusSlot | None = None
        self._lock = asyncio.Lock()
        self.changed = asyncio.Condition()

    @classmethod
    def for_hub(cls, hub: Hub, onboarding: Onboarding, pairing: PairingService,
                **kwargs: Any) -> BleCommissioner:
        """Built from the hub, with its status section and reset hook registered."""
        commissioner = cls(hub.config, hub.identity, hub.store, onboarding, pairing, **kwargs)
        hub.add_status("ble", commissioner.status)
        hub.on_reset(commissioner.on_hub_reset)
        return commissioner

    # ---- properties ----------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self.config.ble.enabled

    @property
    def window_open(self) -> bool:
        return self.peripheral is not None

    @property
    def local_name(self) -> str:
        return self.hub.name

    @property
    def improv_problem(self) -> str | None:
        """Why Improv is not offered (None: it is)."""
        return self.improv_host.problem

    @property
    def improv_enabled(self) -> bool:
        return self.improv_problem is None

    @property
    def improv_wifi_only(self) -> bool:
        """Improv gives the hub Wi-Fi only (no complete cloud account in the presets): the
        cloud part is paired later over the LAN (panel, ``/pair``) or the secure service."""
        return self.improv_host.wifi_only

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        if not self.enabled:
            log.info("BLE commissioning disabled ([ble] enabled = false)")
            return
        if self.improv_problem:
            log.info("Improv Wi-Fi not offered: %s", self.improv_problem)
        elif self.improv_wifi_only:
            log.info("Improv Wi-Fi gives the hub Wi-Fi only (no cloud account in [cloud]); "
                     "the cloud part is paired on the LAN")
        bus = self.bus = self.bus or _system_bus()
        # Phones that disconnect leave half-written frames and sessions behind. Matched on
        # interface and member only (filtered by path in the callback): org.bluez's owner
        # changes when bluetoothd restarts.
        self._slot = await bus.match_signal_async(
            None, None, "org.freedesktop.DBus.Properties", "PropertiesChanged",
            self._on_properties)
        self.onboarding.subscribe(self._on_onboarding)
        self._spawn("events", self._event_loop())
        self._spawn("progress", self._push_progress())
        if not self.store.state.paired:
            try:
                await self.open_window("boot")
            except Exception:
                # A BLE problem must not keep the hub from pairing over the hotspot.
                log.exception("could not open the BLE commissioning window")

    async def stop(self) -> None:
        await self.close_window("shutdown")
        for task in list(self._tasks.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._slot is not None:
            self._slot.close()
            self._slot = None

    async def open_window(self, source: str = "control", *, authorize: bool = False,
                          seconds: float | None = None) -> dict[str, Any]:
        """Open (or extend) the window; either forgives wrong setup codes. ``seconds`` (the
        control API) closes it that long from now; without, it stays open at least
        ``[ble] window_seconds`` (a press must not cut short a window opened for longer)."""
        if not self.enabled:
            raise BleUnavailable("BLE commissioning is disabled ([ble] enabled = false)")
        async with self._lock:
            now = self.clock()
            deadline = now + (seconds or self.config.ble.window_seconds)
            if seconds is None and self._deadline is not None:
                deadline = max(deadline, self._deadline)
            self._deadline, seconds = deadline, deadline - now
            self._opened_by = source
            self._closed_reason = None
            # Not reset(): a session under way goes on when the window is extended (§7).
            self.secure.forgive()
            if self.peripheral is None:
                await self._register()
                log.info("BLE commissioning window open for %.0fs (%s), advertising as %r",
                         seconds, source, self.local_name)
            else:
                log.info("BLE commissioning window extended to %.0fs (%s)", seconds, source)
            self._spawn("expire", self._expire())
        if authorize and self.improv_enabled:
            await self.improv.authorize()
        await self._notify_changed()
        return self.status()

    async def authorize(self, source: str = "button") -> dict[str, Any]:
        """A button short press: open the window and authorize Improv for a while."""
        return await self.open_window(source, authorize=True)

    async def close_window(self, reason: str = "control") -> dict[str, Any]:
        async with self._lock:
            if self.peripheral is not None:
                await self._unregister()
                log.info("BLE commissioning window closed (%s)", reason)
                self._closed_reason = reason
            self._deadline = None
            for name in ("expire", "close-soon"):
                task = self._tasks.pop(name, None)
                if task is not None and task is not asyncio.current_task():
                    task.cancel()
        await self._notify_changed()
        return self.status()

    async def on_hub_reset(self, full: bool) -> None:
        """Hub.on_reset hook: a factory reset puts the hub back into pairing mode."""
        del full
        if not self.enabled:
            return
        if self.improv_host.attempt is not None:
            # The reset cancelled Improv's attempt and its id, so _on_state never sees it end:
            # its phone hears that it failed, and Improv takes Wi-Fi settings again.
            self.improv_host.attempt = None
            await self.improv.attempt_finished(False)
        await self.secure.end_session("the hub was reset")  # and its phone hears it
        self.secure.reset()
        await self.open_window("reset")

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(predicate), timeout)

    def status(self) -> dict[str, Any]:
        """The ``ble`` section of ``gatewayctl status``: never a secret."""
        if not self.enabled:
            return {"enabled": False}
        closes_in = None
        if self._deadline is not None:
            closes_in = max(0.0, round(self._deadline - self.clock(), 1))
        peripheral = self.peripheral
        return {
            "enabled": True, "adapter": self.config.ble.adapter, "name": self.local_name,
            "window": {"open": self.window_open, "opened_by": self._opened_by,
                       "closes_in": closes_in, "closed_reason": self._closed_reason},
            "registered": bool(peripheral and peripheral.registered_with),
            "advertising": bool(peripheral and peripheral.advertising),
            "improv": ({"enabled": True, "wifi_only": self.improv_wifi_only,
                        **self.improv.status()} if self.improv_enabled
                       else {"enabled": False, "reason": self.improv_problem}),
            "secure": self.secure.status(),
        }

    # ---- registration --------------------------------------------------------------------

    async def _register(self) -> None:
        busy, provisioned = self._hub_flags()
        services = []
        if self.improv_enabled:
            # Without a button nobody could authorize: authorized while the window is open.
            self.improv.open(requires_authorization=self.config.button.enabled, busy=busy,
                             provisioned=provisioned)
            services.append(self.improv.gatt_service())
        services.append(self.secure.gatt_service())
        app = Application(services, path=APP_PATH)
        adv = self._advertisement()
        peripheral = Peripheral(app, self.config.ble.adapter, self.bus)
        try:
            await peripheral.start()
            await peripheral.set_advertisement(adv)
        except BaseException:
            await peripheral.stop()
            app.unexport()
            adv.unexport()
            raise
        self.peripheral, self._app, self._adv = peripheral, app, adv

    async def _unregister(self) -> None:
        if self.bus is None or not bus_lost(self.bus):  # while the phone can still hear it
            await self.secure.end_session("the pairing window closed")
        peripheral, app, adv = self.peripheral, self._app, self._adv
        self.peripheral = self._app = self._adv = None
        if peripheral is not None:
            await peripheral.stop()
        try:
            if app is not None:
                app.unexport()
            if adv is not None:
                adv.unexport()
        except Exception as exc:
            # On an ended bus connection nobody is left to tell (the hub is on its way out).
            if not (self.bus is not None and (bus_lost(self.bus) or ended_with_bus(exc))):
                raise
        await self.improv.close()
        self.secure.reset()
        self.improv_host.attempt = None

    def _advertisement(self) -> Advertisement:
        if self.improv_enabled:
            return Advertisement(service_uuids=[improv_codec.SERVICE_UUID],
                                 service_data={improv_codec.SERVICE_DATA_UUID:
                                               self.improv.service_data()},
                                 local_name=self.local_name, path=ADV_PATH)
        return Advertisement(service_uuids=[secure_protocol.SERVICE_UUID],
                             local_name=self.local_name, path=ADV_PATH)

    def _on_improv_state(self, state: improv_codec.State) -> None:
        # Improv clients read the state from the advertisement before connecting.
        if self._adv is not None:
            self._spawn("adv-update", self._adv.update(
                service_data={improv_codec.SERVICE_DATA_UUID: self.improv.service_data()}))

    # ---- timers and events ---------------------------------------------------------------

    async def _expire(self) -> None:
        while self._deadline is not None:
            delay = self._deadline - self.clock()
            if delay > 0:
                await self.sleep(delay)
                continue
            if self.onboarding.busy:
                # Never pull the rug from under a phone that is watching an attempt.
                log.info("BLE commissioning window: its time is up; it stays open until the "
                         "pairing attempt ends")
                with contextlib.suppress(TimeoutError):
                    await self.onboarding.wait_for(lambda: not self.onboarding.busy, 3600)
                continue
            await self.close_window("timeout")
            return

    async def _close_soon(self, reason: str) -> None:
        await asyncio.sleep(self.close_delay)
        await self.close_window(reason)

    def _on_onboarding(self, state: State, progress: Progress) -> None:
        try:
            self._events.put_nowait((state, progress))
        except asyncio.QueueFull:
            log.warning("BLE commissioning: onboarding event dropped (queue full)")

    async def _event_loop(self) -> None:
        while True:
            state, progress = await self._events.get()
            try:
                await self._on_state(state, progress)
            except Exception:
                log.exception("BLE commissioning: handling an onboarding change failed")

    async def _on_state(self, state: State, progress: Progress) -> None:
        previous, self._last_state = self._last_state, state
        if not self.window_open:
            return
        busy = state == State.CONNECTING
        await self.improv.hub_changed(busy=busy, provisioned=improv_provisioned(busy, progress))
        improv_attempt = self.improv_host.attempt
        if improv_attempt is not None and progress.attempt_id == improv_attempt and not busy:
            self.improv_host.attempt = None
            # A failed attempt always leaves a last_failure; a reset clears the attempt (it
            # does not get here: on_hub_reset ends it). Success is online (paired with the
            # presets), or unpaired on the network: "Wi-Fi first, cloud later".
            ok = progress.last_failure is None and state in (State.ONLINE, State.UNPAIRED)
            await self.improv.attempt_finished(ok, await self._panel_url() if ok else None)
        if state == State.ONLINE and previous == State.CONNECTING:
            self._spawn("close-soon", self._close_soon("paired"))

    async def _push_progress(self) -> None:
        """Every change of onboarding progress (steps too) to the secure session's phone.

        Waits on the onboarding condition with a predicate rather than for single
        notifications: a change made while a push is still on its way is not lost.
        """
        last: Progress | None = None

        def moved() -> bool:
            return self.onboarding.progress() != last

        while True:
            async with self.onboarding.changed:
                await self.onboarding.changed.wait_for(moved)
            last = self.onboarding.progress()
            if self.window_open:
                await self.secure.push({"type": "progress", **last.to_json()})

    def _on_properties(self, message: SdBusMessage) -> None:
        path = message.path or ""
        if not path.startswith(adapter_path(self.config.ble.adapter) + "/dev_"):
            return
        contents: Any = message.get_contents()  # D-Bus "sa{sv}as"
        interface, changed, _ = contents
        connected = changed.get("Connected") if interface == "org.bluez.Device1" else None
        if connected is not None and not connected[1]:
            self.improv.forget(path)
            self.secure.forget(path)

    def _spawn(self, name: str, coro: Awaitable[None]) -> None:
        old = self._tasks.get(name)
        if old is not None and not old.done() and old is not asyncio.current_task():
            old.cancel()
        task = asyncio.ensure_future(coro)
        self._tasks[name] = task

    async def _notify_changed(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    def _hub_flags(self) -> tuple[bool, bool]:
        busy = self.onboarding.busy
        return busy, improv_provisioned(busy, self.onboarding.progress())

    async def _renamed(self, name: str) -> None:
        """Improv renamed the hub: the advertisement carries the new name at once."""
        if self._adv is not None:
            await self._adv.update(local_name=name)

    async def _default_panel_url(self) -> str | None:
        return await lan_panel_url(self.config, self.bus)


def _system_bus() -> SdBus:
    from sdbus import sd_bus_open_system

    return sd_bus_open_system()
