"""``RadioWorld``: the APs the Wi-Fi device sees, scans, and which AP a client profile joins.

Each visible ``RadioAP`` is an AccessPoint object in the device's AccessPoints list (``show``
exports it, ``hide`` removes it); ``pick_ap`` says what joining a client profile leads to.

* A hidden AP has ``Ssid == b""``. A scan requested with ``{"ssids": [b"Hidden Lab"]}``
  (type ``aay``) reveals it (its Ssid becomes the name; it stays revealed), and so does a
  successful connection with ``802-11-wireless.hidden = true``. ``GetAccessPoints`` leaves out
  APs without SSID; ``GetAllAccessPoints`` and the ``AccessPoints`` property list all of them.
* ``RequestScan`` returns at once; after ``scan_ms`` LastScan (CLOCK_BOOTTIME ms, strictly
  increasing) and the APs' LastSeen change and PropertiesChanged is emitted.
"""

from __future__ import annotations

import time
from typing import Any

import dbus

from gatewayd.simulator.nm.bus import (
    AP_IFACE,
    E_DEVICE_INVALID_ARGUMENT,
    E_DEVICE_NOT_ALLOWED,
    NM_PATH,
    WIRELESS_IFACE,
    DevState,
    boottime_ms,
    error,
    obj,
    set_props,
    signature_of,
)
from gatewayd.simulator.nm.glib import later
from gatewayd.simulator.nm.radio import (
    KEY_MGMT_FOR,
    MODE_INFRA,
    RadioAP,
    ap_props,
    psk_matches,
)
from gatewayd.simulator.nm.settings import Profile
from gatewayd.simulator.nm.state import Device, WorldState


class RadioWorld(WorldState):
    """The scan list on the bus."""

    def visible(self) -> list[RadioAP]:
        return [ap for ap in self.radio if ap.path is not None]

    def export_ap(self, props: dict[str, Any]) -> str:
        assert self.wifi is not None
        path = f"{NM_PATH}/AccessPoint/{self.next_id('ap')}"
        self.add_object(path, AP_IFACE, props)
        self.manager_list("AccessPoints", add=path, path=self.wifi.path, iface=WIRELESS_IFACE)
        obj(self.wifi.path).EmitSignal(WIRELESS_IFACE, "AccessPointAdded", "o",
                                       [dbus.ObjectPath(path)])
        return path

    def unexport_ap(self, path: str) -> None:
        assert self.wifi is not None
        self.manager_list("AccessPoints", remove=path, path=self.wifi.path, iface=WIRELESS_IFACE)
        obj(self.wifi.path).EmitSignal(WIRELESS_IFACE, "AccessPointRemoved", "o",
                                       [dbus.ObjectPath(path)])
        self.remove_object(path)

    def show(self, ap: RadioAP) -> None:
        ap.path = self.export_ap(ap_props(ap.shown_ssid, ap.bssid, ap.security, ap.strength,
                                          ap.frequency, MODE_INFRA))

    def hide(self, ap: RadioAP) -> None:
        if ap.path is not None:
            path, ap.path = ap.path, None
            self.unexport_ap(path)

    def reveal(self, ap: RadioAP) -> None:
        if ap.hidden and not ap.revealed:
            ap.revealed = True
            if ap.path is not None:
                set_props(ap.path, AP_IFACE, {"Ssid": dbus.ByteArray(ap.ssid)})

    def request_scan(self, dev: Device, options: dict[str, Any]) -> None:
        ssids: list[bytes] = []
        if "ssids" in options:
            value = options["ssids"]
            if signature_of(value) != "aay":
                raise error(E_DEVICE_INVALID_ARGUMENT, "Invalid 'ssid' scan option")
            ssids = [bytes(s) for s in value]
            if len(ssids) > 32:
                raise error(E_DEVICE_INVALID_ARGUMENT, "too many SSIDs requested to scan")
            for i, ssid in enumerate(ssids):
                if len(ssid) > 32:
                    raise error(E_DEVICE_INVALID_ARGUMENT,
                                f"SSID at index {i} more than 32 bytes")
        if dev.state < DevState.DISCONNECTED:
            raise error(E_DEVICE_NOT_ALLOWED, "Scanning not allowed while unavailable")
        self.scan_ssids.update(ssids)
        if not self.scan_pending:  # NetworkManager folds overlapping requests into one scan
            self.scan_pending = True
            later(self.scan_ms, lambda: self.finish_scan(dev))

    def finish_scan(self, dev: Device) -> None:
        self.scan_pending = False
        now_s = dbus.Int32(int(time.clock_gettime(time.CLOCK_BOOTTIME)))
        for ap in self.visible():
            if ap.ssid in self.scan_ssids:
                self.reveal(ap)
            assert ap.path is not None
            set_props(ap.path, AP_IFACE, {"LastSeen": now_s})
        self.scan_ssids.clear()
        self.last_scan = max(self.last_scan + 1, boottime_ms())
        set_props(dev.path, WIRELESS_IFACE, {"LastScan": dbus.Int64(self.last_scan)})
        self.autoconnect_soon()

    def pick_ap(self, profile: Profile, wanted: str = "/") -> tuple[str, RadioAP | None]:
        """What joining this client profile leads to, and with which AP (``wanted`` if the
        client named one, else the strongest fitting BSSID)."""
        hidden = bool(profile.get("802-11-wireless", "hidden", False))
        bssid = profile.get("802-11-wireless", "bssid")
        locked = ":".join(f"{b:02X}" for b in bytes(bssid)) if bssid else None
        seen = [ap for ap in self.visible() if ap.ssid == profile.ssid
                and (hidden or ap.shown_ssid) and (locked is None or ap.bssid == locked)]
        if not seen:
            return "ssid-not-found", None
        fitting = [ap for ap in seen if profile.key_mgmt in KEY_MGMT_FOR[ap.security]]
        if not fitting:
            best = max(seen, key=lambda ap: ap.strength)
            return ("no-secrets" if profile.key_mgmt else "timeout"), best
        best = max(fitting, key=lambda ap: (ap.path == wanted, ap.strength))
        if best.security != "open" and not psk_matches(profile.psk or "", best,
                                                             profile.key_mgmt):
            return "no-secrets", best
        return "ok", best
