"""The device objects lo, eth0 (parameter ``ethernet``) and wlan0, as NetworkManager shows them.

``add_loopback``, ``add_ethernet`` and ``add_wifi`` complete the devices that dbusmock's
upstream template creates (or create lo) with NetworkManager's properties and methods, register
them with the ``World``, and give Ethernet its generated "Wired connection 1" profile.
Connections that are up when the mock starts ("lo", a plugged eth0) come up at once, without
transitions (``activated_at_start``).
"""

from __future__ import annotations

import ipaddress
import time
import uuid
from typing import Any

import dbus
from dbusmock.templates import networkmanager as upstream

from gatewayd.simulator.nm.bus import (
    ACTIVE_IFACE,
    AP_IFACE,
    DEVICE_IFACE,
    E_DEVICE_NOT_ACTIVE,
    E_DEVICE_NOT_SOFTWARE,
    LOOPBACK_IFACE,
    NM_PATH,
    STATS_IFACE,
    WIRED_IFACE,
    WIRELESS_IFACE,
    AcReason,
    AcState,
    DevState,
    Reason,
    error,
    obj,
    paths,
    set_props,
)
from gatewayd.simulator.nm.settings import Profile, public_settings
from gatewayd.simulator.nm.state import Activation, Device, interface_flags
from gatewayd.simulator.nm.world import World

_WIFI_CAPS = 0x7FF  # ciphers, WPA/RSN, AP, ad-hoc, 2.4 and 5 GHz: what a Pi's brcmfmac offers


def device_common(dev: Device, state: int, dtype: int, capabilities: int) -> dict[str, Any]:
    return {
        "Udi": dbus.String(f"/sys/devices/virtual/net/{dev.iface}"),
        "Path": dbus.String(""),
        "DriverVersion": dbus.String(""),
        "FirmwareVersion": dbus.String(""),
        "Capabilities": dbus.UInt32(capabilities),
        "State": dbus.UInt32(state),
        "StateReason": dbus.Struct((dbus.UInt32(state), dbus.UInt32(0)), signature="uu"),
        "ActiveConnection": dbus.ObjectPath("/"),
        "Ip4Config": dbus.ObjectPath("/"),
        "Dhcp4Config": dbus.ObjectPath("/"),
        "Ip6Config": dbus.ObjectPath("/"),
        "Dhcp6Config": dbus.ObjectPath("/"),
        "Managed": dbus.Boolean(True),
        "Autoconnect": dbus.Boolean(True),
        "FirmwareMissing": dbus.Boolean(False),
        "NmPluginMissing": dbus.Boolean(False),
        "DeviceType": dbus.UInt32(dtype),
        "AvailableConnections": paths([]),
        "PhysicalPortId": dbus.String(""),
        "Mtu": dbus.UInt32(65536 if dev.kind == "loopback" else 1500),
        "Metered": dbus.UInt32(0),
        "LldpNeighbors": dbus.Array([], signature="a{sv}"),
        "Real": dbus.Boolean(True),
        "Ip4Connectivity": dbus.UInt32(0),
        "Ip6Connectivity": dbus.UInt32(0),
        "InterfaceFlags": interface_flags(dev),
        "HwAddress": dbus.String(dev.mac),
        "Ports": paths([]),
        "Interface": dbus.String(dev.iface),
        "IpInterface": dbus.String(""),
        "Driver": dbus.String({"wifi": "brcmfmac", "ethernet": "bcmgenet"}.get(dev.kind, "")),
    }


def device_methods(w: World, dev: Device) -> list[tuple[str, str, str, Any]]:
    def applied(_o: Any, _flags: int) -> tuple[dbus.Dictionary, dbus.UInt64]:
        act = dev.activation
        if act is None or act.gone:
            raise error(E_DEVICE_NOT_ACTIVE, "Device is not activated")
        return public_settings(act.profile.settings), dbus.UInt64(1)

    def disconnect(_o: Any) -> None:
        act = dev.activation
        if act is None or act.gone:
            raise error(E_DEVICE_NOT_ACTIVE, "This device is not active")
        dev.blocked = True
        w.deactivate(act, Reason.USER_REQUESTED, AcReason.USER_DISCONNECTED)

    def delete(_o: Any) -> None:
        raise error(E_DEVICE_NOT_SOFTWARE, "This device is not a software device")

    return [("Disconnect", "", "", disconnect), ("Delete", "", "", delete),
            ("GetAppliedConnection", "u", "a{sa{sv}}t", applied),
            ("Reapply", "a{sa{sv}}tu", "", lambda o, s, v, f: None)]


def register_device(w: World, dev: Device) -> None:
    w.devices[dev.path] = dev
    o = obj(dev.path)
    o.props[DEVICE_IFACE].pop("AutoConnect", None)  # upstream misspells NM's "Autoconnect"
    o.AddMethods(DEVICE_IFACE, device_methods(w, dev))
    o.props.setdefault(STATS_IFACE, {}).update({"RefreshRateMs": dbus.UInt32(0),
                                                "TxBytes": dbus.UInt64(0),
                                                "RxBytes": dbus.UInt64(0)})


def add_wifi(w: World, parameters: dict[str, Any]) -> None:
    iface = str(parameters.get("wifi_interface", "wlan0"))
    mac = str(parameters.get("wifi_mac", "dc:a6:32:12:34:56")).upper()
    path = upstream.AddWiFiDevice(w.mock, "3", iface, DevState.DISCONNECTED)
    dev = Device(path, "wifi", iface, mac)
    w.wifi = dev
    o = obj(path)
    o.props[DEVICE_IFACE].update(device_common(dev, DevState.DISCONNECTED, 2, 0x1))
    o.props[WIRELESS_IFACE].update({
        "HwAddress": dbus.String(mac),
        "PermHwAddress": dbus.String(mac),
        "Bitrate": dbus.UInt32(0),
        "WirelessCapabilities": dbus.UInt32(_WIFI_CAPS),
        "ActiveAccessPoint": dbus.ObjectPath("/"),
        "LastScan": dbus.Int64(w.last_scan),
    })
    o.AddMethods(WIRELESS_IFACE, [
        ("RequestScan", "a{sv}", "", lambda _o, opts: w.request_scan(dev, opts)),
        ("GetAccessPoints", "", "ao",
         lambda _o: paths(p for p in o.props[WIRELESS_IFACE]["AccessPoints"]
                          if bytes(obj(p).props[AP_IFACE]["Ssid"]))),
        ("GetAllAccessPoints", "", "ao", lambda _o: o.props[WIRELESS_IFACE]["AccessPoints"]),
    ])
    register_device(w, dev)


def add_ethernet(w: World, parameters: dict[str, Any]) -> None:
    iface = str(parameters.get("ethernet_interface", "eth0"))
    mac = str(parameters.get("ethernet_mac", "dc:a6:32:12:34:57")).upper()
    plugged = bool(parameters.get("ethernet_connected", False))
    state = DevState.DISCONNECTED if plugged else DevState.UNAVAILABLE
    path = upstream.AddEthernetDevice(w.mock, "2", iface, state)
    dev = Device(path, "ethernet", iface, mac, carrier=plugged)
    o = obj(path)
    o.props[DEVICE_IFACE].update(device_common(dev, state, 1, 0x3))
    o.props[WIRED_IFACE].update({"HwAddress": dbus.String(mac), "PermHwAddress": dbus.String(mac),
                                 "Carrier": dbus.Boolean(plugged),
                                 "Speed": dbus.UInt32(1000 if plugged else 0),
                                 "S390Subchannels": dbus.Array([], signature="s")})
    register_device(w, dev)
    wired = {
        "connection": {"id": dbus.String("Wired connection 1", variant_level=1),
                       "uuid": dbus.String(str(uuid.uuid4()), variant_level=1),
                       "type": dbus.String("802-3-ethernet", variant_level=1),
                       "interface-name": dbus.String(iface, variant_level=1),
                       "autoconnect-priority": dbus.Int32(-999, variant_level=1)},
        "802-3-ethernet": {},
    }
    # NetworkManager generates this default profile in memory for every Ethernet device.
    profile = w.add_profile(wired, unsaved=True, emit=False, flags=0x2)
    if plugged:
        address, prefix = w.ethernet_ipv4
        gateway = str(ipaddress.IPv4Interface(f"{address}/{prefix}").network.network_address + 1)
        activated_at_start(w, profile, dev, (address, prefix, gateway), flags=0xC)


def add_loopback(w: World) -> None:
    path = f"{NM_PATH}/Devices/1"
    dev = Device(path, "loopback", "lo", "00:00:00:00:00:00")
    w.add_object(path, DEVICE_IFACE, device_common(dev, DevState.UNMANAGED, 32, 0x1))
    obj(path).props.setdefault(LOOPBACK_IFACE, {})
    register_device(w, dev)
    w.manager_list("Devices", add=path)
    profile = w.add_profile({
        "connection": {"id": dbus.String("lo", variant_level=1),
                       "uuid": dbus.String(str(uuid.uuid4()), variant_level=1),
                       "type": dbus.String("loopback", variant_level=1),
                       "interface-name": dbus.String("lo", variant_level=1)},
        "ipv4": {"method": dbus.String("manual", variant_level=1)},
    }, unsaved=True, emit=False, flags=0x2 | 0x4 | 0x8)  # generated, volatile, external
    activated_at_start(w, profile, dev, ("127.0.0.1", 8, ""), flags=0x8C)  # + external


def activated_at_start(w: World, profile: Profile, dev: Device, ipv4: tuple[str, int, str],
                       flags: int) -> None:
    """A connection NetworkManager already had up when the mock "booted": no transitions."""
    act = Activation(w.new_active(profile, dev, "/"), profile, dev, activated=True)
    act.ip4 = w.new_ip4config(*ipv4)
    dev.activation = act
    profile.last_used = time.time()
    set_props(act.ac, ACTIVE_IFACE, {
        "State": dbus.UInt32(AcState.NM_ACTIVE_CONNECTION_STATE_ACTIVATED),
        "StateFlags": dbus.UInt32(flags), "Ip4Config": dbus.ObjectPath(act.ip4)})
    set_props(dev.path, DEVICE_IFACE, {
        "ActiveConnection": dbus.ObjectPath(act.ac), "Ip4Config": dbus.ObjectPath(act.ip4),
        "IpInterface": dbus.String(dev.iface), "State": dbus.UInt32(DevState.ACTIVATED),
        "StateReason": dbus.Struct((dbus.UInt32(DevState.ACTIVATED), dbus.UInt32(0)),
                                   signature="uu")})
