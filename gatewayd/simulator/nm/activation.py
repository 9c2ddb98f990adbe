"""``ActivationWorld``: the device activation state machine.

``activate`` checks a request and queues the device's steps; ``prepare``, ``configure`` and
``ip_config`` decide on the way which outcome (``finish_steps``, ``fail_steps``) follows;
``deactivate``, ``link_lost`` and ``retire`` end an active connection. Manager state follows
in ``state``; the autoconnect policy that calls ``activate`` by itself is in ``world``.

Activation (Manager.ActivateConnection, Settings.Connection.* , Device.Disconnect)
-------------------------------------------------------------------------------
All transitions run from GLib timeouts ``step_ms`` apart, after the D-Bus call returned, and
each emits Device.StateChanged(new, old, reason) plus PropertiesChanged (State, StateReason).
* Wi-Fi client: [DEACTIVATING(110) and] DISCONNECTED(30, NEW_ACTIVATION 60) if something
  else was active, PREPARE(40), CONFIG(50), then
  - IP_CONFIG(70), IP_CHECK(80), SECONDARIES(90), ACTIVATED(100) with an IP4Config and the
    ActiveConnection ACTIVATED(2), when a visible AP has the SSID (a hidden one only for a
    profile with hidden=true, or once revealed), key-mgmt fits (wpa-psk: wpa2 or wpa2/wpa3,
    sae: wpa3 or wpa2/wpa3, no security section: open) and the psk matches (the
    64-hex-digit PSK form works with wpa-psk only: SAE takes it as a literal password).
    The strongest fitting BSSID is used, or the AP passed as specific_object; it becomes
    ActiveAccessPoint and the ActiveConnection's SpecificObject;
  - NEED_AUTH(60, SUPPLICANT_DISCONNECT 8), FAILED(120, NO_SECRETS 7), DISCONNECTED(30, 0)
    for a wrong or missing psk or a key-mgmt the AP does not offer; NetworkManager reports a
    bad PSK this way. Read the reason from the StateChanged *signal*: once DISCONNECTED the
    StateReason property says (30, 0). The ActiveConnection goes DEACTIVATED(4) with reason
    NO_SECRETS(9) and disappears; the profile is blocked from autoconnect until updated;
  - FAILED(120, SSID_NOT_FOUND 53), DISCONNECTED(30, 0) when no AP has that SSID;
  - FAILED(120, SUPPLICANT_TIMEOUT 11), DISCONNECTED for an open profile on a secured AP.
* Hotspot (802-11-wireless.mode "ap"): PREPARE, CONFIG, IP_CONFIG, IP_CHECK, SECONDARIES,
  ACTIVATED without authentication. ipv4.method "shared" or "manual" take the first
  ipv4.address-data (or legacy addresses) entry, e.g. 192.168.4.1/24; "shared" without one
  gives 10.42.0.1/24. Strict on purpose: method "auto" (or none) fails with
  IP_CONFIG_UNAVAILABLE(5); a secured hotspot without psk fails like a wrong psk.
* Ethernet: like the hotspot, needs carrier; IPv4 from ``ethernet_ipv4``.
* AddAndActivateConnection(2) fills in id/uuid/type, the SSID and key-mgmt from the AP passed
  as specific_object, stores the profile (to disk, or as options["persist"] says), activates.
* Manager.DeactivateConnection / Device.Disconnect: DEACTIVATING(110, USER_REQUESTED 39),
  DISCONNECTED(30, USER_REQUESTED); the ActiveConnection goes DEACTIVATING(3) then
  DEACTIVATED(4) with reason USER_DISCONNECTED(2) and is removed. Deleting an active
  profile does the same with reason CONNECTION_REMOVED(38; ActiveConnection 11).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable

import dbus

from gatewayd.simulator.nm.bus import (
    ACTIVE_IFACE,
    DEVICE_IFACE,
    E_NOT_AVAILABLE,
    E_UNKNOWN_CONNECTION,
    E_UNKNOWN_DEVICE,
    IP4_IFACE,
    NM_PATH,
    WIRELESS_IFACE,
    AcReason,
    AcState,
    DevState,
    Reason,
    error,
    paths,
    set_props,
)
from gatewayd.simulator.nm.hotspot import HotspotWorld
from gatewayd.simulator.nm.settings import Profile, configured_ipv4
from gatewayd.simulator.nm.state import Activation, Device


class ActivationWorld(HotspotWorld):
    """Activating and deactivating connections on devices."""

    def activate(self, conn_path: str, dev_path: str, specific: str, *, user: bool) -> str:
        profile = self.profiles.get(conn_path)
        if profile is None:
            raise error(E_UNKNOWN_CONNECTION, f"Connection '{conn_path}' is not available")
        dev = self.device_for(profile, dev_path)
        hotspot = dev.kind == "wifi" and profile.wifi_mode == "ap"
        if dev.kind == "wifi" and not hotspot and specific not in ("", "/") and \
                specific not in {ap.path for ap in self.visible()}:
            raise error(E_NOT_AVAILABLE, "requested access point not found")
        if user:
            dev.blocked = False
            profile.blocked, profile.retries = None, None
        old = dev.activation
        dev.steps.clear()
        if old and not old.gone:
            self.retire(old, AcReason.DEVICE_DISCONNECTED)
        act = Activation(self.new_active(profile, dev, specific), profile, dev, hotspot=hotspot,
                         specific=specific or "/")
        dev.activation = act
        steps: list[Callable[[], None]] = []
        state = dev.state
        if state == DevState.ACTIVATED:
            steps.append(lambda: self.device_state(dev, DevState.DEACTIVATING,
                                                   Reason.NEW_ACTIVATION))
        if state != DevState.DISCONNECTED:
            steps.append(lambda: self.device_state(
                dev, DevState.DISCONNECTED,
                Reason.NONE if state == DevState.FAILED else Reason.NEW_ACTIVATION))
        steps.append(lambda: self.prepare(act))
        steps.append(lambda: self.configure(act))
        self.run(dev, steps)
        self.refresh_manager()
        return act.ac

    def device_for(self, profile: Profile, dev_path: str) -> Device:
        if dev_path not in ("", "/"):
            dev = self.devices.get(dev_path)
            if dev is None:
                raise error(E_UNKNOWN_DEVICE, f"Device '{dev_path}' not found")
            if not self.fits(profile, dev):
                raise error(E_NOT_AVAILABLE, f"Connection '{profile.id}' is not available "
                                             f"on device {dev.iface}")
        else:
            dev = next((d for d in self.devices.values() if self.fits(profile, d)), None)
            if dev is None:
                raise error(E_UNKNOWN_DEVICE, "No suitable device found for this connection")
        if dev.kind == "ethernet" and not dev.carrier:
            raise error(E_NOT_AVAILABLE, f"No suitable device found for this connection "
                                         f"(device {dev.iface} not available because device "
                                         f"has no carrier).")
        if dev.kind == "loopback":
            raise error(E_NOT_AVAILABLE, "lo is managed externally")
        return dev

    def new_active(self, profile: Profile, dev: Device, specific: str) -> str:
        path = f"{NM_PATH}/ActiveConnection/{self.next_id('ac')}"
        self.add_object(path, ACTIVE_IFACE, {
            "Connection": dbus.ObjectPath(profile.path),
            "SpecificObject": dbus.ObjectPath(specific or "/"),
            "Id": dbus.String(profile.id),
            "Uuid": dbus.String(profile.uuid),
            "Type": dbus.String(profile.type),
            "Devices": paths([dev.path]),
            "State": dbus.UInt32(AcState.NM_ACTIVE_CONNECTION_STATE_ACTIVATING),
            "StateFlags": dbus.UInt32(0),
            "Default": dbus.Boolean(False),
            "Ip4Config": dbus.ObjectPath("/"),
            "Dhcp4Config": dbus.ObjectPath("/"),
            "Default6": dbus.Boolean(False),
            "Ip6Config": dbus.ObjectPath("/"),
            "Dhcp6Config": dbus.ObjectPath("/"),
            "Vpn": dbus.Boolean(False),
            "Master": dbus.ObjectPath("/"),
            "Controller": dbus.ObjectPath("/"),
        })
        self.manager_list("ActiveConnections", add=path)
        return path

    def prepare(self, act: Activation) -> None:
        dev = act.device
        set_props(dev.path, DEVICE_IFACE, {"ActiveConnection": dbus.ObjectPath(act.ac)})
        self.device_state(dev, DevState.PREPARE, Reason.NONE)
        if act.hotspot:
            self.enter_ap_mode(dev, act)

    def configure(self, act: Activation) -> None:
        dev = act.device
        outcome = "ok"
        if dev.kind == "wifi" and not act.hotspot:
            outcome, act.ap = self.pick_ap(act.profile, act.specific)
            if act.ap is not None and act.ap.path is not None:
                set_props(dev.path, WIRELESS_IFACE,
                          {"ActiveAccessPoint": dbus.ObjectPath(act.ap.path)})
                set_props(act.ac, ACTIVE_IFACE, {"SpecificObject": dbus.ObjectPath(act.ap.path)})
        elif act.hotspot and act.profile.key_mgmt not in (None, "none") and not act.profile.psk:
            outcome = "no-secrets"
        self.device_state(dev, DevState.CONFIG, Reason.NONE)
        if outcome == "ok":
            self.run(dev, [lambda: self.ip_config(act), *self.finish_steps(act)])
        elif outcome == "no-secrets":
            self.run(dev, [
                lambda: self.device_state(dev, DevState.NEED_AUTH, Reason.SUPPLICANT_DISCONNECT),
                *self.fail_steps(act, Reason.NO_SECRETS, AcReason.NO_SECRETS),
            ])
        else:
            reason = Reason.SSID_NOT_FOUND if outcome == "ssid-not-found" else \
                Reason.SUPPLICANT_TIMEOUT
            self.run(dev, self.fail_steps(act, reason, AcReason.DEVICE_DISCONNECTED))

    def ip_config(self, act: Activation) -> None:
        dev = act.device
        method = str(act.profile.get("ipv4", "method", "auto"))
        if act.hotspot and method not in ("shared", "manual", "disabled"):
            self.device_state(dev, DevState.IP_CONFIG, Reason.NONE)
            dev.steps.clear()  # no DHCP server answers an access point
            self.run(dev, self.fail_steps(act, Reason.IP_CONFIG_UNAVAILABLE,
                                          AcReason.DEVICE_DISCONNECTED))
            return
        if method != "disabled":
            address, prefix, gateway = self.ipv4_for(act, method)
            act.ip4 = self.new_ip4config(address, prefix, gateway)
            set_props(dev.path, DEVICE_IFACE, {"Ip4Config": dbus.ObjectPath(act.ip4)})
            set_props(act.ac, ACTIVE_IFACE, {"Ip4Config": dbus.ObjectPath(act.ip4)})
        self.device_state(dev, DevState.IP_CONFIG, Reason.NONE)

    def ipv4_for(self, act: Activation, method: str) -> tuple[str, int, str]:
        if method in ("shared", "manual"):
            configured = configured_ipv4(act.profile)
            if configured:
                return *configured, str(act.profile.get("ipv4", "gateway", "") or "")
            return "10.42.0.1", 24, ""
        if method == "link-local":
            return "169.254.23.42", 16, ""
        address, prefix = self.ethernet_ipv4 if act.device.kind == "ethernet" else \
            self.client_ipv4
        gateway = str(ipaddress.IPv4Interface(f"{address}/{prefix}").network.network_address + 1)
        return address, prefix, gateway

    def finish_steps(self, act: Activation) -> list[Callable[[], None]]:
        dev = act.device

        def activated() -> None:
            act.activated = True
            act.profile.last_used = time.time()
            act.profile.retries = None
            act.profile.settings["connection"]["timestamp"] = dbus.UInt64(int(time.time()),
                                                                          variant_level=1)
            if act.ap is not None:
                self.reveal(act.ap)
            set_props(dev.path, DEVICE_IFACE, {"IpInterface": dbus.String(dev.iface)})
            if dev.kind == "wifi":
                set_props(dev.path, WIRELESS_IFACE, {"Bitrate": dbus.UInt32(144400)})
            set_props(act.ac, ACTIVE_IFACE, {"StateFlags": dbus.UInt32(0xC)})  # L2 + IPv4 ready
            self.device_state(dev, DevState.ACTIVATED, Reason.NONE)
            self.ac_state(act, AcState.NM_ACTIVE_CONNECTION_STATE_ACTIVATED, AcReason.NONE)
            self.refresh_manager()

        return [lambda: self.device_state(dev, DevState.IP_CHECK, Reason.NONE),
                lambda: self.device_state(dev, DevState.SECONDARIES, Reason.NONE),
                activated]

    def fail_steps(self, act: Activation, reason: int, ac_reason: int
                   ) -> list[Callable[[], None]]:
        dev = act.device

        def failed() -> None:
            profile = act.profile
            if reason == Reason.NO_SECRETS:
                profile.blocked = "no-secrets"
            elif not act.activated:
                profile.retries = (profile.max_retries() if profile.retries is None
                                   else profile.retries) - 1
                if profile.max_retries() and profile.retries <= 0:
                    profile.blocked = "retries"
            self.retire(act, ac_reason)
            self.device_state(dev, DevState.FAILED, reason)

        return [failed, lambda: self.device_state(dev, DevState.DISCONNECTED, Reason.NONE)]

    def link_lost(self, dev: Device, reason: int) -> None:
        act = dev.activation
        if act is None or act.gone or act.hotspot:
            return
        dev.steps.clear()
        self.run(dev, self.fail_steps(act, reason, AcReason.DEVICE_DISCONNECTED))

    def deactivate(self, act: Activation, reason: int, ac_reason: int) -> None:
        dev = act.device
        dev.steps.clear()

        def deactivating() -> None:
            self.ac_state(act, AcState.NM_ACTIVE_CONNECTION_STATE_DEACTIVATING, ac_reason)
            self.device_state(dev, DevState.DEACTIVATING, reason)

        def disconnected() -> None:
            self.retire(act, ac_reason)
            self.device_state(dev, DevState.DISCONNECTED, reason)

        self.run(dev, [deactivating, disconnected])

    def retire(self, act: Activation, ac_reason: int) -> None:
        """The active connection ends: undo what it configured and drop its object."""
        if act.gone:
            return
        dev = act.device
        self.ac_state(act, AcState.NM_ACTIVE_CONNECTION_STATE_DEACTIVATED, ac_reason)
        act.gone = True
        if act.own_ap is not None:
            self.leave_ap_mode(dev, act)
        if dev.kind == "wifi":
            set_props(dev.path, WIRELESS_IFACE, {"ActiveAccessPoint": dbus.ObjectPath("/"),
                                                 "Bitrate": dbus.UInt32(0)})
        set_props(dev.path, DEVICE_IFACE, {
            "ActiveConnection": dbus.ObjectPath("/"), "Ip4Config": dbus.ObjectPath("/"),
            "IpInterface": dbus.String(""), "Ip4Connectivity": dbus.UInt32(0)})
        if act.ip4 != "/":
            self.remove_object(act.ip4)
        self.manager_list("ActiveConnections", remove=act.ac)
        self.remove_object(act.ac)
        self.refresh_manager()

    def new_ip4config(self, address: str, prefix: int, gateway: str) -> str:
        path = f"{NM_PATH}/IP4Config/{self.next_id('ip4')}"
        network = ipaddress.IPv4Interface(f"{address}/{prefix}").network
        routes = [dbus.Dictionary({"dest": dbus.String(str(network.network_address)),
                                   "prefix": dbus.UInt32(prefix)}, signature="sv")]
        if gateway:
            routes.append(dbus.Dictionary({"dest": dbus.String("0.0.0.0"),
                                           "prefix": dbus.UInt32(0),
                                           "next-hop": dbus.String(gateway)}, signature="sv"))
        self.add_object(path, IP4_IFACE, {
            "AddressData": dbus.Array([dbus.Dictionary({"address": dbus.String(address),
                                                        "prefix": dbus.UInt32(prefix)},
                                                       signature="sv")], signature="a{sv}"),
            "Gateway": dbus.String(gateway),
            "RouteData": dbus.Array(routes, signature="a{sv}"),
            "NameserverData": dbus.Array(
                [dbus.Dictionary({"address": dbus.String(gateway)}, signature="sv")]
                if gateway else [], signature="a{sv}"),
            "Domains": dbus.Array([], signature="s"),
            "Searches": dbus.Array([], signature="s"),
            "DnsOptions": dbus.Array([], signature="s"),
            "DnsPriority": dbus.Int32(100),
            "WinsServerData": dbus.Array([], signature="s"),
        })
        return path
