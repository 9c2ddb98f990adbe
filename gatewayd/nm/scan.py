"""The scan cache: what the Wi-Fi device saw at its last scan, one entry per network.

NetworkManager cannot scan while the radio is a hotspot, so the list is taken before the
hotspot goes up and shown from here while it is up (the portal, BLE). Each SSID appears
once, with its strongest BSSID's signal and security; hidden networks are not listed (the
user types their name); at most :data:`~gatewayd.nm.profiles.SCAN_CACHE_LIMIT` entries.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sdbus import DbusFailedError

from gatewayd.nm.presence import NM
from gatewayd.nm.profiles import SCAN_CACHE_LIMIT, ScannedNetwork, security_of

log = logging.getLogger("gatewayd.ap")  # the control's lines, under one name
WIRELESS_IFACE = "org.freedesktop.NetworkManager.Device.Wireless"


class ScanCache:
    """The last scan's networks, strongest first."""

    def __init__(self) -> None:
        self._seen: list[ScannedNetwork] = []

    async def scan(self, bus: Any, device_path: str, device: Any, ssid: str | None,
                   timeout: float) -> None:
        """Ask the device for a scan (for ``ssid`` by name: a hidden network) and take its
        result; past ``timeout``, take what NetworkManager has."""
        scanned = asyncio.Event()

        def on_props(message: Any) -> None:
            interface, changed, _ = message.get_contents()
            if interface == WIRELESS_IFACE and "LastScan" in changed:
                scanned.set()

        # Subscribe first: the scan may finish before RequestScan even returns.
        slot = await bus.match_signal_async(
            NM, device_path, "org.freedesktop.DBus.Properties", "PropertiesChanged",
            on_props)
        try:
            options: dict[str, tuple[str, Any]] = {}
            if ssid is not None:
                options["ssids"] = ("aay", [ssid.encode("utf-8")])
            try:
                await device.request_scan(options)
            except Exception as exc:  # NM refuses while a scan runs; its result still comes
                log.debug("RequestScan: %s", exc)
            try:
                async with asyncio.timeout(timeout):
                    await scanned.wait()
            except TimeoutError:
                log.warning("Wi-Fi scan did not finish within %.0fs; using what NM has", timeout)
        finally:
            slot.close()
        await self.refresh(bus, device)

    async def refresh(self, bus: Any, device: Any) -> None:
        from sdbus_async.networkmanager import AccessPoint

        best: dict[str, ScannedNetwork] = {}
        for path in await device.get_all_access_points():
            ap = AccessPoint(path, bus)
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
        self._seen = ordered[:SCAN_CACHE_LIMIT]

    def networks(self) -> list[dict[str, Any]]:
        return [n.to_json() for n in self._seen]

    def visible(self, ssid: str) -> bool:
        return any(n.ssid == ssid for n in self._seen)

    def security(self, ssid: str) -> str | None:
        for n in self._seen:
            if n.ssid == ssid:
                return n.security
        return None
