"""NetworkManager control: hotspot <-> client, the scan cache, device state by signals.

Profiles we create carry ids starting with ``gatewayd-``; only those are ever
replaced or deleted. The hotspot is an in-memory profile (AddConnectionUnsaved);
client profiles are saved so NetworkManager's autoconnect brings the hub back
after a reboot or an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from ipaddress import IPv4Interface
from typing import Any

from sdbus import DbusFailedError

from gatewayd.config import Config
from gatewayd.credentials import RAW_KEY_WPA3, WifiCredentials, raw_wpa_key
from gatewayd.identity import SSID_BYTES, Identity
from gatewayd.onboarding.steps import Failure, StepResult

log = logging.getLogger(__name__)

NM = "org.freedesktop.NetworkManager"
DEVICE_IFACE = "org.freedesktop.NetworkManager.Device"
WIRELESS_IFACE = "org.freedesktop.NetworkManager.Device.Wireless"
PREFIX = "gatewayd-"
HOTSPOT_ID = f"{PREFIX}hotspot"

# NetworkManager enums (NMDeviceState, NMDeviceStateReason, NMDeviceType, 802.11 flags)
STATE_DISCONNECTED, STATE_ACTIVATED, STATE_FAILED = 30, 100, 120
STATE_UNAVAILABLE = 20
TYPE_ETHERNET, TYPE_WIFI = 1, 2
AP_FLAGS_PRIVACY = 0x1
SEC_KEY_MGMT_PSK, SEC_KEY_MGMT_SAE = 0x100, 0x400
SCAN_CACHE_LIMIT = 64  # a city block can show hundreds of BSSIDs; the portal needs a few

_BAD_KEY_TEXT = "The Wi-Fi network rejected the password. Check it and try again."
_NOT_FOUND = ("The hub cannot see this network. Check the name (for a hidden network, tick "
              "'hidden'), and that the hub is in range of a 2.4 GHz access point.")
_DHCP = ("The hub joined the network but got no IP address (DHCP failed). Check the router "
         "or try again.")
_REASONS: dict[int, tuple[Failure, str]] = {
    7: (Failure.WRONG_PASSWORD, _BAD_KEY_TEXT),  # NO_SECRETS
    8: (Failure.WRONG_PASSWORD, _BAD_KEY_TEXT),  # SUPPLICANT_DISCONNECT
    9: (Failure.WRONG_PASSWORD, _BAD_KEY_TEXT),  # SUPPLICANT_CONFIG_FAILED
    10: (Failure.WIFI_FAILED, "The hub's Wi-Fi supplicant failed. Try again."),
    11: (Failure.WRONG_PASSWORD, "Wi-Fi authentication timed out: most often a wrong "
                                 "password. Check it and try again."),
    5: (Failure.DHCP_FAILED, _DHCP),
    15: (Failure.DHCP_FAILED, _DHCP),
    16: (Failure.DHCP_FAILED, _DHCP),
    17: (Failure.DHCP_FAILED, _DHCP),
    53: (Failure.NETWORK_NOT_FOUND, _NOT_FOUND),  # SSID_NOT_FOUND
    70: (Failure.NETWORK_NOT_FOUND, _NOT_FOUND),  # PEER_NOT_FOUND
}

_LINK_TEXT = {36: "the Wi-Fi device was removed", 38: "the Wi-Fi link went away",
              39: "disconnected on request", 60: "switching networks"}


def failure_for_reason(reason: int) -> tuple[Failure, str]:
    if reason in _LINK_TEXT:
        return Failure.WIFI_FAILED, _LINK_TEXT[reason]
    return _REASONS.get(reason, (Failure.WIFI_FAILED, f"Wi-Fi connection failed (reason {reason})"))


def security_of(flags: int, wpa_flags: int, rsn_flags: int) -> str:
    sae = bool(rsn_flags & SEC_KEY_MGMT_SAE)
    psk = bool((rsn_flags | wpa_flags) & SEC_KEY_MGMT_PSK)
    if sae and psk:
        return "wpa2/wpa3"
    if sae:
        return "wpa3"
    if psk:
        return "wpa2"
    if flags & AP_FLAGS_PRIVACY or wpa_flags or rsn_flags:
        return "unsupported"  # WEP or enterprise: not something a hub is paired to
    return "open"


@dataclass(frozen=True)
class ScannedNetwork:
    ssid: str
    signal: int
    security: str

    def to_json(self) -> dict[str, Any]:
        return {"ssid": self.ssid, "signal": self.signal, "security": self.security}


def hotspot_profile(config: Config, identity: Identity, interface: str) -> dict[str, Any]:
    """The equivalent of ``nmcli device wifi hotspot``, pinned to our address."""
    hs = config.hotspot
    iface = IPv4Interface(hs.address)
    ssid = identity.render(hs.ssid_template, SSID_BYTES).encode("utf-8")
    wireless: dict[str, Any] = {"ssid": ("ay", ssid), "mode": ("s", "ap"),
                                "band": ("s", hs.band)}
    if hs.channel:
        wireless["channel"] = ("u", hs.channel)
    profile: dict[str, Any] = {
        "connection": {"id": ("s", HOTSPOT_ID), "uuid": ("s", str(uuid.uuid4())),
                       "type": ("s", "802-11-wireless"), "autoconnect": ("b", False),
                       "interface-name": ("s", interface)},
        "802-11-wireless": wireless,
        "ipv4": {"method": ("s", "shared"),
                 "address-data": ("aa{sv}", [{"address": ("s", str(iface.ip)),
                                              "prefix": ("u", iface.network.prefixlen)}])},
        "ipv6": {"method": ("s", "ignore")},
    }
    if hs.password:
        wireless["security"] = ("s", "802-11-wireless-security")
        profile["802-11-wireless-security"] = {
            "key-mgmt": ("s", "wpa-psk"), "psk": ("s", hs.password),
            "proto": ("as", ["rsn"]), "pairwise": ("as", ["ccmp"]),
            "group": ("as", ["ccmp"]),
            "pmf": ("i", 1),  # disable: brcmfmac (Pi) clients fail to associate with PMF
        }
    return profile


def client_profile(wifi: WifiCredentials, interface: str, security: str | None
                   ) -> dict[str, Any]:
    """A saved, autoconnecting client profile; key-mgmt follows what the AP offers."""
    wireless: dict[str, Any] = {"ssid": ("ay", wifi.ssid.encode("utf-8")),
                                "mode": ("s", "infrastructure")}
    if wifi.hidden:
        wireless["hidden"] = ("b", True)
    profile: dict[str, Any] = {
        "connection": {"id": ("s", f"{PREFIX}client-{wifi.ssid}"),
                       "uuid": ("s", str(uuid.uuid4())), "type": ("s", "802-11-wireless"),
                       "autoconnect": ("b", True), "interface-name": ("s", interface)},
        "802-11-wireless": wireless,
        "ipv4": {"method": ("s", "auto")},
        "ipv6": {"method": ("s", "auto")},
    }
    if wifi.psk:
        # SAE takes a passphrase only (NetworkManager hands any psk to wpa_supplicant as a
        # literal SAE password): a 64-hex-digit key joins a transition network by WPA2.
        # A WPA3-only network with such a key is refused before this (connect).
        sae = security == "wpa3" or (security == "wpa2/wpa3" and not raw_wpa_key(wifi.psk))
        key_mgmt = "sae" if sae else "wpa-psk"
        wireless["security"] = ("s", "802-11-wireless-security")
        profile["802-11-wireless-security"] = {"key-mgmt": ("s", key_mgmt),
                                               "psk": ("s", wifi.psk)}
    return profile


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
        self._cache: list[ScannedNetwork] = []
        self._hotspot_conn: str | None = None
        self._hotspot_active = False
        self._waiter: asyncio.Queue[tuple[int, int]] | None = None
        self._on_link: Callable[[bool, str], None] = lambda up, reason: None
        self._on_hotspot_down: Callable[[], None] = lambda: None
        self._activated = False
        self._switching = False

    # ---- set-up ---------------------------------------------------------------------------

    async def start(self, on_link: Callable[[bool, str], None],
                    on_hotspot_down: Callable[[], None] | None = None) -> None:
        from sdbus import sd_bus_open_system
        from sdbus_async.networkmanager import (
            NetworkDeviceGeneric,
            NetworkDeviceWireless,
            NetworkManager,
            NetworkManagerSettings,
        )

        self._on_link = on_link
        self._on_hotspot_down = on_hotspot_down or self._on_hotspot_down
        if self._bus is None:
            self._bus = sd_bus_open_system()
        self._nm = NetworkManager(self._bus)
        self._settings = NetworkManagerSettings(self._bus)
        for path in await self._nm.get_devices():
            dev = NetworkDeviceGeneric(path, self._bus)
            if await dev.device_type == TYPE_WIFI and await dev.interface == self.interface:
                self._device_path = path
        if not self._device_path:
            raise RuntimeError(f"NetworkManager has no Wi-Fi device {self.interface!r} "
                               "([hotspot] interface)")
        self._device = NetworkDeviceWireless(self._device_path, self._bus)
        # Subscribe before acting, so no state change between our calls is missed.
        self._slot = await self._bus.match_signal_async(
            NM, self._device_path, DEVICE_IFACE, "StateChanged", self._on_state_message)
        self._activated = await self._device.state == STATE_ACTIVATED
        await self._drop_stale_hotspots()

    async def stop(self) -> None:
        if self._slot is not None:
            self._slot.close()
            self._slot = None

    def _on_state_message(self, message: Any) -> None:
        new, old, reason = message.get_contents()
        log.debug("wifi device %s: %s -> %s (reason %s)", self.interface, old, new, reason)
        if self._waiter is not None:
            with contextlib.suppress(asyncio.QueueFull):
                self._waiter.put_nowait((new, reason))
        if self._switching:
            return  # our own activation: its outcome is the waiter's business
        if self._hotspot_active:
            if new in (STATE_DISCONNECTED, STATE_FAILED, STATE_UNAVAILABLE):
                log.warning("hotspot went down (reason %s)", reason)
                self._hotspot_active = False
                self._on_hotspot_down()
            return
        if new == STATE_ACTIVATED and not self._activated:
            self._activated = True
            self._on_link(True, "connected")
        elif new in (STATE_DISCONNECTED, STATE_FAILED, STATE_UNAVAILABLE) and self._activated:
            self._activated = False
            self._on_link(False, failure_for_reason(reason)[1] if reason else "disconnected")

    async def _drop_stale_hotspots(self) -> None:
        """A crash could leave our in-memory hotspot behind; never anybody else's profile."""
        for path, settings in await self._our_connections():
            if settings["connection"]["id"][1] == HOTSPOT_ID:
                await self._delete(path)

    async def _our_connections(self) -> list[tuple[str, dict[str, Any]]]:
        from sdbus_async.networkmanager import NetworkConnectionSettings

        found = []
        for path in await self._settings.list_connections():
            settings = await NetworkConnectionSettings(path, self._bus).get_settings()
            conn_id = settings.get("connection", {}).get("id", ("s", ""))[1]
            if conn_id.startswith(PREFIX):
                found.append((path, settings))
        return found

    async def _delete(self, path: str) -> None:
        from sdbus_async.networkmanager import NetworkConnectionSettings

        with contextlib.suppress(Exception):
            await NetworkConnectionSettings(path, self._bus).delete()

    # ---- scanning -------------------------------------------------------------------------

    async def scan(self, ssid: str | None = None, timeout: float = 10.0) -> None:
        """Scan and refresh the cache; skipped while the hotspot is up (NM can't scan then)."""
        if self._hotspot_active:
            return
        scanned = asyncio.Event()

        def on_props(message: Any) -> None:
            interface, changed, _ = message.get_contents()
            if interface == WIRELESS_IFACE and "LastScan" in changed:
                scanned.set()

        # Subscribe first: the scan may finish before RequestScan even returns.
        slot = await self._bus.match_signal_async(
            NM, self._device_path, "org.freedesktop.DBus.Properties", "PropertiesChanged",
            on_props)
        try:
            options: dict[str, tuple[str, Any]] = {}
            if ssid is not None:
                options["ssids"] = ("aay", [ssid.encode("utf-8")])
            try:
                await self._device.request_scan(options)
            except Exception as exc:  # NM refuses while a scan runs; its result still comes
                log.debug("RequestScan: %s", exc)
            try:
                async with asyncio.timeout(timeout):
                    await scanned.wait()
            except TimeoutError:
                log.warning("Wi-Fi scan did not finish within %.0fs; using what NM has", timeout)
        finally:
            slot.close()
        await self._refresh_cache()

    async def _refresh_cache(self) -> None:
        from sdbus_async.networkmanager import AccessPoint

        best: dict[str, ScannedNetwork] = {}
        for path in await self._device.get_all_access_points():
            ap = AccessPoint(path, self._bus)
            try:
                raw = await ap.ssid
                if not raw:
                    continue  # hidden: not listed; the user types its name
                net = ScannedNetwork(raw.decode("utf-8", "replace"), int(await ap.strength),
                                     security_of(await ap.flags, await ap.wpa_flags,
                                                 await ap.rsn_flags))
            except DbusFailedError:
                # Gone between the listing and the read (NetworkManager re-exports its AP
                # objects, e.g. when a scan ends): it is not there, so it is not listed.
                log.debug("access point %s vanished while being read", path)
                continue
            if net.ssid not in best or net.signal > best[net.ssid].signal:
                best[net.ssid] = net
        ordered = sorted(best.values(), key=lambda n: (-n.signal, n.ssid))
        self._cache = ordered[:SCAN_CACHE_LIMIT]

    def networks(self) -> list[dict[str, Any]]:
        return [n.to_json() for n in self._cache]

    def visible(self, ssid: str) -> bool:
        return any(n.ssid == ssid for n in self._cache)

    def _security(self, ssid: str) -> str | None:
        for n in self._cache:
            if n.ssid == ssid:
                return n.security
        return None

    async def ethernet_connected(self) -> bool:
        from sdbus_async.networkmanager import NetworkDeviceGeneric

        for path in await self._nm.get_devices():
            dev = NetworkDeviceGeneric(path, self._bus)
            if await dev.device_type == TYPE_ETHERNET and await dev.state == STATE_ACTIVATED:
                return True
        return False

    # ---- hotspot --------------------------------------------------------------------------

    @property
    def hotspot_active(self) -> bool:
        return self._hotspot_active

    @property
    def hotspot_ssid(self) -> str:
        return self.identity.render(self.config.hotspot.ssid_template, SSID_BYTES)

    async def start_hotspot(self) -> None:
        if self._hotspot_active:
            return
        profile = hotspot_profile(self.config, self.identity, self.interface)
        if self._hotspot_conn is None:
            self._hotspot_conn = await self._settings.add_connection_unsaved(profile)
        self._activated = False
        result = await self._activate(self._hotspot_conn, 15.0, hotspot=True)
        if not result.ok:
            log.error("hotspot %r could not start: %s", self.hotspot_ssid, result.reason)
            return
        self._hotspot_active = True
        log.info("hotspot %r up on %s", self.hotspot_ssid, self.interface)

    async def stop_hotspot(self) -> None:
        if not self._hotspot_active:
            return
        self._hotspot_active = False
        active = await self._device.active_connection
        if active and active != "/":
            with contextlib.suppress(Exception):
                await self._nm.deactivate_connection(active)
        log.info("hotspot down")

    # ---- client ---------------------------------------------------------------------------

    async def connect(self, wifi: WifiCredentials, timeout: float) -> StepResult:
        """Join ``wifi`` with a new saved profile; the result's ``joined`` is the network as
        joined (hidden if only a directed scan found it)."""
        if wifi.hidden or not self.visible(wifi.ssid):
            await self.scan(ssid=wifi.ssid)  # a directed scan finds hidden networks
            if not wifi.hidden and self.visible(wifi.ssid):
                # Found by its name only: hidden, or NetworkManager would not find it again
                # after a restart (nor the offline retries, which scan by name only for a
                # hidden network). A network that merely came into range since the last
                # scan is taken as hidden too: that costs a probe naming it, no more.
                log.info("%r was found only by a directed scan: saved as hidden", wifi.ssid)
                wifi = replace(wifi, hidden=True)
        security = self._security(wifi.ssid)
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

    async def reconnect_saved(self, wifi: WifiCredentials, timeout: float) -> StepResult:
        for path, settings in await self._our_connections():
            if settings["connection"]["id"][1] == f"{PREFIX}client-{wifi.ssid}":
                return await self._activate(path, timeout)
        return await self.connect(wifi, timeout)

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
            log.warning("NetworkManager refused the connection: %s", exc)
            return StepResult(False, Failure.WIFI_FAILED,
                              "The hub's network service refused the connection. Try again; "
                              "if it keeps failing, restart the hub.")
        finally:
            self._waiter = None
            self._switching = False
