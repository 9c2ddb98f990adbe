"""``World``: the whole simulation, with the autoconnect policy and the outside events.

``World`` tops the class chain (see the package docstring); ``template.load`` makes one per
mock process. The outside events are what the mock control methods in ``nm_template.py`` do:
a network appears or disappears, an access point's signal changes, the link drops, internet
access or the Ethernet carrier changes; ``describe`` is the JSON snapshot DescribeState
returns.

Autoconnect (a small model of NetworkManager's policy)
------------------------------------------------------
When a device is DISCONNECTED and idle, a profile for it with connection.autoconnect true
(the default when absent!) is activated: highest autoconnect-priority first, then the most
recently used. Wi-Fi client profiles need a compatible visible AP; hotspot profiles are always
eligible. The check runs after an AP appears, a profile is added or updated, a scan completes,
and a device falls back to DISCONNECTED. A profile is blocked after the user deactivated it,
after NO_SECRETS, or after 4 failed attempts (connection.autoconnect-retries; 0 = forever);
explicit activation or an update unblocks it. Device.Disconnect blocks the whole device until
the next explicit activation. Set connection.autoconnect=false on profiles you activate
yourself if you do not want NetworkManager to race you.
"""

from __future__ import annotations

from typing import Any

import dbus

from gatewayd.simulator.nm.bus import (
    AP_IFACE,
    DEVICE_IFACE,
    E_DEVICE_NOT_ACTIVE,
    E_INVALID_ARGUMENTS,
    E_UNKNOWN_DEVICE,
    NM_IFACE,
    NM_PATH,
    WIRED_IFACE,
    AcReason,
    DevState,
    Reason,
    error,
    obj,
    set_props,
)
from gatewayd.simulator.nm.profiles import ProfileWorld
from gatewayd.simulator.nm.radio import RadioAP
from gatewayd.simulator.nm.settings import Profile
from gatewayd.simulator.nm.state import Device, interface_flags


class World(ProfileWorld):
    """Everything the template simulates; one instance per mock process."""

    # --- autoconnect -----------------------------------------------------------------------

    def autoconnect(self) -> None:
        self.autoconnect_pending = False
        busy = {d.activation.profile.path for d in self.devices.values()
                if d.activation and not d.activation.gone}
        for dev in self.devices.values():
            if dev.kind == "loopback" or dev.blocked or dev.steps or \
                    dev.state != DevState.DISCONNECTED or \
                    (dev.activation is not None and not dev.activation.gone):
                continue
            candidates = [p for p in self.profiles.values()
                          if self.fits(p, dev) and p.autoconnect and p.blocked is None
                          and p.path not in busy and self.reachable(p, dev)]
            if not candidates:
                continue
            best = max(candidates, key=lambda p: (int(p.get("connection", "autoconnect-priority",
                                                            0)), p.last_used))
            busy.add(best.path)
            self.activate(best.path, dev.path, "/", user=False)

    def reachable(self, profile: Profile, dev: Device) -> bool:
        if dev.kind != "wifi" or profile.wifi_mode == "ap":
            return True
        outcome, _ = self.pick_ap(profile)
        return outcome in ("ok", "no-secrets")  # a wrong psk is only found out by trying

    # --- external events -------------------------------------------------------------------

    def add_network(self, spec: str) -> str:
        ap = RadioAP.from_text(spec, len(self.radio) + 1)
        self.radio.append(ap)
        if self.ap_mode:
            return "/"
        self.show(ap)
        self.autoconnect_soon()
        return ap.path or "/"

    def vanish_after_listing(self, ssid: bytes) -> None:
        """The next listing of access points still names this network's APs, which are
        gone by the time a client reads them (NetworkManager re-exports AP objects)."""
        self.vanishing.add(ssid)

    def listed(self, listing: Any) -> Any:
        """A listing, then the vanishing networks (vanish_after_listing) go out of range."""
        for ssid in list(self.vanishing):
            self.vanishing.discard(ssid)
            self.remove_network(ssid)
        return listing

    def remove_network(self, ssid: bytes) -> int:
        gone = [ap for ap in self.radio if ap.ssid == ssid]
        for ap in gone:
            self.radio.remove(ap)
            self.hide(ap)
        wifi = self.wifi
        act = wifi.activation if wifi else None
        if wifi and act and not act.gone and not act.hotspot and act.ap in gone:
            act.ap = None
            self.link_lost(wifi, Reason.SSID_NOT_FOUND)
        return len(gone)

    def set_strength(self, bssid: str, strength: int) -> None:
        """One BSSID's signal changes, as the supplicant reports it to NetworkManager: its
        Strength (PropertiesChanged on the AccessPoint; out of range, the next time it
        shows). Nothing roams: a client stays on its access point, however weak."""
        if not 0 <= strength <= 100:
            raise error(E_INVALID_ARGUMENTS, "access point: strength: must be a whole number "
                                             "from 0 to 100")
        found = [ap for ap in self.radio if ap.bssid == bssid.upper()]
        if not found:
            known = ", ".join(ap.bssid for ap in self.radio) or "none"
            raise error(E_INVALID_ARGUMENTS,
                        f"access point: bssid: no access point {bssid!r} (known: {known})")
        for ap in found:
            ap.strength = strength
            if ap.path is not None:
                set_props(ap.path, AP_IFACE, {"Strength": dbus.Byte(strength)})

    def drop_wifi(self, reason: int) -> None:
        act = self.wifi.activation if self.wifi else None
        if self.wifi is None or act is None or act.gone or act.hotspot:
            raise error(E_DEVICE_NOT_ACTIVE, "no Wi-Fi client connection to drop")
        self.link_lost(self.wifi, reason)

    def set_internet(self, online: bool) -> None:
        self.internet = online
        self.refresh_manager()

    def set_carrier(self, plugged: bool) -> None:
        dev = next((d for d in self.devices.values() if d.kind == "ethernet"), None)
        if dev is None:
            raise error(E_UNKNOWN_DEVICE, "the mock has no Ethernet device (parameter ethernet)")
        if dev.carrier == plugged:
            return
        dev.carrier = plugged
        set_props(dev.path, WIRED_IFACE, {"Carrier": dbus.Boolean(plugged),
                                          "Speed": dbus.UInt32(1000 if plugged else 0)})
        set_props(dev.path, DEVICE_IFACE, {"InterfaceFlags": interface_flags(dev)})
        dev.steps.clear()
        if plugged:
            self.run(dev, [lambda: self.device_state(dev, DevState.DISCONNECTED, Reason.CARRIER)])
            return
        act = dev.activation

        def unplugged() -> None:
            if act is not None:
                self.retire(act, AcReason.DEVICE_DISCONNECTED)
            self.device_state(dev, DevState.UNAVAILABLE, Reason.CARRIER)

        self.run(dev, [unplugged])

    def describe(self) -> dict[str, Any]:
        def ssid(raw: bytes) -> str:
            return raw.decode(errors="replace")

        return {
            "state": int(obj(NM_PATH).props[NM_IFACE]["State"]),
            "connectivity": int(obj(NM_PATH).props[NM_IFACE]["Connectivity"]),
            "devices": [{
                "path": d.path, "interface": d.iface, "kind": d.kind, "state": d.state,
                "reason": int(obj(d.path).props[DEVICE_IFACE]["StateReason"][1]),
                "active_connection": d.activation.ac if d.activation and not d.activation.gone
                else None,
            } for d in self.devices.values()],
            "access_points": [{"ssid": ssid(ap.ssid), "bssid": ap.bssid, "path": ap.path,
                               "security": ap.security, "hidden": ap.hidden,
                               "revealed": ap.revealed, "strength": ap.strength}
                              for ap in self.radio],
            "profiles": [{"path": p.path, "id": p.id, "uuid": p.uuid, "type": p.type,
                          "unsaved": p.unsaved, "autoconnect": p.autoconnect,
                          "blocked": p.blocked} for p in self.profiles.values()],
        }
