"""NetworkManager control: hotspot <-> client, the scan cache, device state by signals.

Profiles we create carry ids starting with ``gatewayd-``; only those are ever
replaced or deleted. The hotspot is an in-memory profile (AddConnectionUnsaved);
client profiles are saved so NetworkManager's autoconnect brings the hub back
after a reboot or an outage. What the profiles hold and what NetworkManager's numbers
mean is :mod:`gatewayd.nm.profiles`.

NetworkManager may be missing at start and may restart at any time
(:mod:`gatewayd.nm.presence` watches its bus name). Without it the hub waits: no hotspot,
scans keep the last list, an attempt's Wi-Fi step fails ``wifi-failed`` ("NetworkManager
is not running"). When it comes (back), the device is looked up again and its state taken
as it is: a hotspot or client link that did not survive is reported down, as if
NetworkManager had taken it down itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from sdbus import DbusFailedError

from gatewayd.config import Config
from gatewayd.credentials import RAW_KEY_WPA3, WifiCredentials, raw_wpa_key
from gatewayd.identity import SSID_BYTES, Identity
from gatewayd.nm.presence import NM, OwnerWatch, gone, not_running
from gatewayd.nm.profiles import (
    DOWN_STATES,
    HOTSPOT_ID,
    PREFIX,
    STATE_ACTIVATED,
    STATE_FAILED,
    TYPE_WIFI,
    client_profile,
    failure_for_reason,
    hotspot_profile,
    link_lost_text,
)
from gatewayd.nm.scan import ScanCache
from gatewayd.nm.wired import DEVICE_IFACE, WiredWatch, ethernet_up
from gatewayd.onboarding.steps import Failure, StepResult

log = logging.getLogger(__name__)

STATE_GONE = -1  # told to a waiting activation: NetworkManager left the bus


class NetworkManagerControl:
    """The :class:`~gatewayd.onboarding.machine.WifiControl` on the system bus."""

    def __init__(self, config: Config, identity: Identity, bus: Any = None) -> None:
        self.config = config
        self.identity = identity
        self.interface = config.hotspot.interface
        self._bus = bus
        self._nm: Any = None
        self._settings: Any = None
        self._device_path = ""
        self._device: Any = None
        self._slot: Any = None
        self._watch: OwnerWatch | None = None
        self._running = False  # NetworkManager is on the bus, and its device was found
        self._scans = ScanCache()
        self._hotspot_conn: str | None = None
        self._hotspot_active = False
        self._waiter: asyncio.Queue[tuple[int, int]] | None = None
        self._on_link: Callable[[bool, str], None] = lambda up, reason: None
        self._on_hotspot_down: Callable[[], None] = lambda: None
        self._on_service: Callable[[bool], None] = lambda running: None
        self._wired = WiredWatch()  # an Ethernet device's link came or went
        # The system bus connection ended: the daemon ends (and is started again).
        self.on_bus_lost: Callable[[], None] = lambda: None
        self._activated = False
        self._switching = False

    # ---- set-up ---------------------------------------------------------------------------

    async def start(self, on_link: Callable[[bool, str], None],
                    on_hotspot_down: Callable[[], None] | None = None,
                    on_service: Callable[[bool], None] | None = None,
                    on_wired: Callable[[], None] | None = None) -> None:
        from sdbus import sd_bus_open_system
        from sdbus_async.networkmanager import NetworkManager, NetworkManagerSettings

        self._on_link = on_link
        self._on_hotspot_down = on_hotspot_down or self._on_hotspot_down
        self._on_service = on_service or self._on_service
        self._wired.changed = on_wired or self._wired.changed
        if self._bus is None:
            self._bus = sd_bus_open_system()
        self._nm = NetworkManager(self._bus)
        self._settings = NetworkManagerSettings(self._bus)
        self._watch = OwnerWatch(self._bus, self._owner_changed, self._bus_lost)
        owner = await self._watch.subscribe()
        if owner is None:
            log.warning("NetworkManager is not running; waiting for it")
        else:
            state, _ = await self._attach()
            self._activated = state == STATE_ACTIVATED
            await self._drop_stale_hotspots()
        await self._watch.start(owner)

    async def stop(self) -> None:
        if self._watch is not None:
            await self._watch.stop()
        self._unsubscribe()

    @property
    def running(self) -> bool:
        return self._running

    @property
    def bus(self) -> Any:  # None before start(); gatewayd.nm.strength reads on it
        return self._bus

    def _unsubscribe(self) -> None:
        if self._slot is not None:
            with contextlib.suppress(Exception):  # a bus that is gone has no match to drop
                self._slot.close()
            self._slot = None
        self._wired.close()

    async def _attach(self) -> tuple[int, str | None]:
        """Find the Wi-Fi device (again) and subscribe to it; returns its state and the id
        of the profile active on it. Paths from an earlier NetworkManager mean nothing."""
        from sdbus_async.networkmanager import NetworkDeviceGeneric, NetworkDeviceWireless

        path = ""
        for candidate in await self._nm.get_devices():
            dev = NetworkDeviceGeneric(candidate, self._bus)
            if await dev.device_type == TYPE_WIFI and await dev.interface == self.interface:
                path = candidate
        if not path:
            raise RuntimeError(f"NetworkManager has no Wi-Fi device {self.interface!r} "
                               "([hotspot] interface)")
        self._unsubscribe()
        self._device_path, self._hotspot_conn = path, None
        self._device = NetworkDeviceWireless(path, self._bus)
        # Subscribe before acting, so no state change between our calls is missed.
        self._slot = await self._bus.match_signal_async(
            NM, path, DEVICE_IFACE, "StateChanged", self._on_state_message)
        await self._wired.subscribe(self._bus, path)
        state = int(await self._device.state)
        active_id = await self._active_id(await self._device.active_connection)
        self._running = True
        return state, active_id

    async def _active_id(self, active: str) -> str | None:
        from sdbus_async.networkmanager import ActiveConnection

        if not active or active == "/":
            return None
        with contextlib.suppress(DbusFailedError):  # ended between the two reads
            return str(await ActiveConnection(active, self._bus).id)
        return None

    async def _owner_changed(self, owner: str | None) -> None:
        """NetworkManager left the bus (None), or a new one owns its name."""
        if owner is None:
            log.warning("NetworkManager left the bus; waiting for it to come back")
            self._gone()
            return
        if self._running:  # restarted between two looks: it left in between
            self._gone()
        state, active_id = await self._attach()
        log.info("NetworkManager is on the bus: Wi-Fi device %s in state %s (%s active)",
                 self.interface, state, active_id or "nothing")
        self._reconcile(state, active_id)
        self._on_service(True)

    def _gone(self) -> None:
        self._running = False
        self._unsubscribe()
        self._device, self._device_path, self._hotspot_conn = None, "", None
        if self._waiter is not None:  # an activation waiting for NetworkManager's signal
            with contextlib.suppress(asyncio.QueueFull):
                self._waiter.put_nowait((STATE_GONE, 0))
        self._on_service(False)

    def _reconcile(self, state: int, active_id: str | None) -> None:
        """Take the device as a NetworkManager that came back has it: what the hub had
        (its hotspot, its client link) and is no longer there is reported down."""
        if self._switching:
            return  # an activation was under way: its waiter heard that it ended
        hotspot = state == STATE_ACTIVATED and active_id == HOTSPOT_ID
        client = state == STATE_ACTIVATED and active_id not in (None, HOTSPOT_ID)
        if self._hotspot_active and not hotspot:
            log.warning("the hotspot did not outlive NetworkManager's restart")
            self._hotspot_active = False
            self._on_hotspot_down()
        if client != self._activated and not self._hotspot_active:
            self._activated = client
            self._on_link(client, "connected" if client else
                          "the Wi-Fi link was down when NetworkManager came back")

    def _bus_lost(self) -> None:
        self._running = False
        self.on_bus_lost()

    def _on_state_message(self, message: Any) -> None:
        new, old, reason = message.get_contents()
        log.debug("wifi device %s: %s -> %s (reason %s)", self.interface, old, new, reason)
        if self._waiter is not None:
            with contextlib.suppress(asyncio.QueueFull):
                self._waiter.put_nowait((new, reason))
        if self._switching:
            return  # our own activation: its outcome is the waiter's business
        if self._hotspot_active:
            if new in DOWN_STATES:
                log.warning("hotspot went down (reason %s)", reason)
                self._hotspot_active = False
                self._on_hotspot_down()
            return
        if new == STATE_ACTIVATED and not self._activated:
            self._activated = True
            self._on_link(True, "connected")
        elif new in DOWN_STATES and self._activated:
            self._activated = False
            self._on_link(False, link_lost_text(reason) if reason else "disconnected")

    async def _drop_stale_hotspots(self) -> None:
        """A crash could leave our in-memory hotspot behind; never anybody else's profile."""
        for path, settings in await self._our_connections():
            if settings["connection"]["id"][1] == HOTSPOT_ID:
                await self._delete(path)

    async def _our_connections(self) -> list[tuple[str, dict[str, Any]]]:
        """Our profiles; none without NetworkManager (what it keeps on disk, a start after
        it returns sorts out: the machine forgets what the hub has not stored then)."""
        from sdbus_async.networkmanager import NetworkConnectionSettings

        found = []
        try:
            for path in await self._settings.list_connections() if self._running else []:
                settings = await NetworkConnectionSettings(path, self._bus).get_settings()
                conn_id = settings.get("connection", {}).get("id", ("s", ""))[1]
                if conn_id.startswith(PREFIX):
                    found.append((path, settings))
        except Exception as exc:
            if not self._absent(exc):
                raise
        return found

    def _absent(self, exc: BaseException) -> bool:
        """``exc`` says NetworkManager is not on the bus: the watch looks at once."""
        if not gone(exc):
            return False
        if self._watch is not None:
            self._watch.wake()
        return True

    async def _delete(self, path: str) -> None:
        from sdbus_async.networkmanager import NetworkConnectionSettings

        with contextlib.suppress(Exception):
            await NetworkConnectionSettings(path, self._bus).delete()

    # ---- scanning -------------------------------------------------------------------------

    async def scan(self, ssid: str | None = None, timeout: float = 10.0) -> None:
        """Scan and refresh the cache; skipped while the hotspot is up (NM can't scan then)
        and without NetworkManager (the last list stays)."""
        if self._hotspot_active or not self._running:
            return
        try:
            await self._scans.scan(self._bus, self._device_path, self._device, ssid, timeout)
        except Exception as exc:
            if not self._absent(exc):
                raise

    def networks(self) -> list[dict[str, Any]]:
        return self._scans.networks()

    def visible(self, ssid: str) -> bool:
        return self._scans.visible(ssid)

    async def ethernet_connected(self) -> bool:
        """Whether a cable is in and up; without NetworkManager nobody can tell: no."""
        try:
            return self._running and await ethernet_up(self._nm, self._bus)
        except Exception as exc:
            if not self._absent(exc):
                raise
        return False

    # ---- hotspot --------------------------------------------------------------------------

    @property
    def hotspot_active(self) -> bool:
        return self._hotspot_active and self._running

    @property
    def hotspot_ssid(self) -> str:
        return self.identity.render(self.config.hotspot.ssid_template, SSID_BYTES)

    async def start_hotspot(self) -> None:
        if self.hotspot_active:
            return
        if not self._running:
            log.debug("no hotspot: NetworkManager is not running")
            return
        self._activated = False
        try:
            conn = await self._hotspot_profile()
        except Exception as exc:
            if not self._absent(exc):
                raise
            return
        result = await self._activate(conn, 15.0, hotspot=True)
        if not result.ok:
            log.error("hotspot %r could not start: %s", self.hotspot_ssid, result.reason)
            return
        self._hotspot_active = True
        log.info("hotspot %r up on %s", self.hotspot_ssid, self.interface)

    async def _hotspot_profile(self) -> str:
        """Our in-memory hotspot profile: the one made before while NetworkManager knows it
        by that path, else a new one. A restarted NetworkManager hands out paths anew: a
        kept path may name nothing, or another profile (and one it kept in /run across
        its restart would be a second of ours: it goes)."""
        from sdbus_async.networkmanager import NetworkConnectionSettings

        if self._hotspot_conn is not None:
            with contextlib.suppress(DbusFailedError):  # no such object: made again below
                settings = await NetworkConnectionSettings(self._hotspot_conn,
                                                           self._bus).get_settings()
                if settings.get("connection", {}).get("id", ("s", ""))[1] == HOTSPOT_ID:
                    return self._hotspot_conn
            log.warning("NetworkManager no longer has the hotspot profile at %s: making it "
                        "again", self._hotspot_conn)
        await self._drop_stale_hotspots()
        self._hotspot_conn = await self._settings.add_connection_unsaved(
            hotspot_profile(self.config, self.identity, self.interface))
        return self._hotspot_conn

    async def stop_hotspot(self) -> None:
        if not self._hotspot_active:
            return
        self._hotspot_active = False
        with contextlib.suppress(Exception):  # gone, or NetworkManager with it
            active = await self._device.active_connection
            if active and active != "/":
                await self._nm.deactivate_connection(active)
        log.info("hotspot down")

    # ---- client ---------------------------------------------------------------------------

    async def connect(self, wifi: WifiCredentials, timeout: float) -> StepResult:
        """Join ``wifi`` with a new saved profile; the result's ``joined`` is the network as
        joined (hidden if only a directed scan found it)."""
        return await self._step(lambda: self._connect(wifi, timeout))

    async def reconnect_saved(self, wifi: WifiCredentials, timeout: float) -> StepResult:
        return await self._step(lambda: self._reconnect_saved(wifi, timeout))

    async def _step(self, step: Callable[[], Awaitable[StepResult]]) -> StepResult:
        """An attempt's Wi-Fi step; without NetworkManager, or if it leaves during the step,
        it fails in words ("not running"), never as an internal error."""
        if not self._running:
            return not_running()
        try:
            return await step()
        except Exception as exc:
            if not self._absent(exc):
                raise
            return not_running()

    async def _connect(self, wifi: WifiCredentials, timeout: float) -> StepResult:
        if wifi.hidden or not self.visible(wifi.ssid):
            await self.scan(ssid=wifi.ssid)  # a directed scan finds hidden networks
            if not wifi.hidden and self.visible(wifi.ssid):
                # Found by its name only: hidden, or NetworkManager would not find it again
                # after a restart (nor the offline retries, which scan by name only for a
                # hidden network). A network that merely came into range since the last
                # scan is taken as hidden too: that costs a probe naming it, no more.
                log.info("%r was found only by a directed scan: saved as hidden", wifi.ssid)
                wifi = replace(wifi, hidden=True)
        security = self._scans.security(wifi.ssid)
        if security == "wpa3" and raw_wpa_key(wifi.psk):
            return StepResult(False, Failure.WRONG_PASSWORD,
                              f"{RAW_KEY_WPA3[0].upper()}{RAW_KEY_WPA3[1:]}.", joined=wifi)
        profile = client_profile(wifi, self.interface, security)
        for path, settings in await self._our_connections():
            if settings["connection"]["id"][1] == profile["connection"]["id"][1]:
                await self._delete(path)  # replace our older profile for this SSID
        conn = await self._settings.add_connection(profile)
        result = await self._activate(conn, timeout)
        if not result.ok:
            # A profile that cannot connect must not autoconnect later in its place.
            await self._delete(conn)
        return replace(result, joined=wifi)

    async def _reconnect_saved(self, wifi: WifiCredentials, timeout: float) -> StepResult:
        for path, settings in await self._our_connections():
            if settings["connection"]["id"][1] == f"{PREFIX}client-{wifi.ssid}":
                return await self._activate(path, timeout)
        return await self._connect(wifi, timeout)

    async def forget(self, ssid: str) -> None:
        for path, settings in await self._our_connections():
            if settings["connection"]["id"][1] == f"{PREFIX}client-{ssid}":
                await self._delete(path)

    async def forget_clients(self) -> None:
        await self.forget_others(None)

    async def forget_others(self, keep: WifiCredentials | None) -> None:
        """Delete our client profiles but ``keep``'s (the stored network), if any. One for
        its SSID with another passphrase is an attempt's, unproven, and goes too (the stored
        network's is made again from the state when it is joined)."""
        for path, settings in await self._our_connections():
            conn_id = settings["connection"]["id"][1]
            if conn_id == HOTSPOT_ID:
                continue
            if keep is not None and conn_id == f"{PREFIX}client-{keep.ssid}":
                psk = await self._saved_psk(path)
                if psk is None or psk == keep.psk:
                    continue  # unreadable is kept: the stored network is never deleted
            log.info("forgetting Wi-Fi profile %r: not the hub's stored network", conn_id)
            await self._delete(path)

    async def _saved_psk(self, path: str) -> str | None:
        """The psk a profile holds; None without one (open) or if it cannot be read."""
        from sdbus_async.networkmanager import NetworkConnectionSettings

        try:
            secrets = await NetworkConnectionSettings(path, self._bus).get_secrets(
                "802-11-wireless-security")
        except Exception as exc:
            log.debug("no secrets of %s: %s", path, exc)
            return None
        psk = secrets.get("802-11-wireless-security", {}).get("psk", ("s", None))[1]
        return psk if isinstance(psk, str) else None

    async def _activate(self, conn_path: str, timeout: float, *, hotspot: bool = False
                        ) -> StepResult:
        self._waiter = asyncio.Queue(maxsize=64)
        self._switching = True
        try:
            await self._nm.activate_connection(conn_path, self._device_path, "/")
            async with asyncio.timeout(timeout):
                while True:
                    state, reason = await self._waiter.get()
                    if state == STATE_GONE:
                        return not_running()
                    if state == STATE_ACTIVATED:
                        self._activated = not hotspot
                        return StepResult(True)
                    if state == STATE_FAILED:
                        failure, text = failure_for_reason(reason)
                        return StepResult(False, failure, text)
        except TimeoutError:
            return StepResult(False, Failure.TIMEOUT,
                              f"The Wi-Fi connection did not come up within {timeout:.0f} s. "
                              "Check that the network works and try again.")
        except Exception as exc:  # the details are for the log, not for the user
            if self._absent(exc):
                return not_running()
            log.warning("NetworkManager refused the connection: %s", exc)
            return StepResult(False, Failure.WIFI_FAILED,
                              "The hub's network service refused the connection. Try again; "
                              "if it keeps failing, restart the hub.")
        finally:
            self._waiter = None
            self._switching = False
