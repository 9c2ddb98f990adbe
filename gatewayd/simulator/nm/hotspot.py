"""``HotspotWorld``: the Wi-Fi device in AP mode while a hotspot connection is up.

* While a hotspot runs, the device is in AP mode (Wireless.Mode 3): the scan list is emptied
  (AccessPointRemoved for each), and holds only the hotspot's own AP, as on real hardware.
  Scans still "complete" but find nothing. Leaving AP mode re-exports the networks under
  *new* object paths, as NetworkManager does: never cache AP paths across mode switches.

How a hotspot activates (IPv4 method, security) is in ``activation``.
"""

from __future__ import annotations

import dbus

from gatewayd.simulator.nm.bus import ACTIVE_IFACE, WIRELESS_IFACE, set_props
from gatewayd.simulator.nm.radio import MODE_AP, MODE_INFRA, ap_props
from gatewayd.simulator.nm.scan import RadioWorld
from gatewayd.simulator.nm.state import Activation, Device


class HotspotWorld(RadioWorld):
    """AP mode: the radio serves the hotspot instead of scanning."""

    def enter_ap_mode(self, dev: Device, act: Activation) -> None:
        # The supplicant forgets its scan results when the radio turns into an access point.
        self.ap_mode = True
        for ap in self.radio:
            self.hide(ap)
        security = {"wpa-psk": "wpa2", "sae": "wpa3"}.get(act.profile.key_mgmt or "", "open")
        channel = int(act.profile.get("802-11-wireless", "channel", 0))
        band = str(act.profile.get("802-11-wireless", "band", "bg"))
        frequency = (5000 + 5 * channel if channel else 5180) if band == "a" else \
            (2407 + 5 * channel if channel else 2412)
        act.own_ap = self.export_ap(ap_props(act.profile.ssid, dev.mac, security, 100,
                                             frequency, MODE_AP))
        set_props(dev.path, WIRELESS_IFACE, {"Mode": dbus.UInt32(MODE_AP),
                                             "ActiveAccessPoint": dbus.ObjectPath(act.own_ap)})
        set_props(act.ac, ACTIVE_IFACE, {"SpecificObject": dbus.ObjectPath(act.own_ap)})

    def leave_ap_mode(self, dev: Device, act: Activation) -> None:
        set_props(dev.path, WIRELESS_IFACE, {"Mode": dbus.UInt32(MODE_INFRA),
                                             "ActiveAccessPoint": dbus.ObjectPath("/")})
        if act.own_ap is not None:
            self.unexport_ap(act.own_ap)
            act.own_ap = None
        self.ap_mode = False
        # NetworkManager rescans after leaving AP mode; the mock finds everything at once.
        for ap in self.radio:
            self.show(ap)
