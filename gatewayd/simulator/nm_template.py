"""NetworkManager with realistic Wi-Fi: a python-dbusmock template for tests and the simulator.

Run it with ``python -m dbusmock --system --template <this file> --parameters '<json>'``;
:class:`gatewayd.simulator.nm_mock.NetworkManagerMock` does that for you. The simulation of
NetworkManager 1.42 lives in the package :mod:`gatewayd.simulator.nm`, whose docstring maps its
modules and where each part of the mock's specification is documented.

This file holds only what dbusmock looks up on a template module: ``BUS_NAME``, ``MAIN_OBJ``,
``SYSTEM_BUS``, ``IS_OBJECT_MANAGER``, ``load(mock, parameters)``, and the mock control methods
below. dbusmock exec()s this file into a fresh module object that is never put into
``sys.modules`` (once to read the bus name, again for each AddTemplate and Reset), and exports
every ``dbus.service.method`` it finds on that module under the attribute's name; so the
control methods are defined here, and the state they act on lives in the package, imported once
per process (``template.world()``). There is deliberately no ``MAIN_IFACE``: without one,
dbusmock gives the main object (an object manager) the ObjectManager interface.

Parameters (JSON object, every key optional)
--------------------------------------------
``wifi_interface`` ("wlan0"), ``wifi_mac`` ("dc:a6:32:12:34:56"),
``ethernet`` (false): also create ``eth0`` (``ethernet_interface``, ``ethernet_mac``),
``ethernet_connected`` (false): eth0 has carrier and "Wired connection 1" is active at start,
``access_points``: list of ``{"ssid": str, "psk": str ("" for open, else 8-63 printable
ASCII or 64 hex digits), "security": "wpa2"|"wpa3"|"wpa2/wpa3"|"open", "hidden": bool,
"strength": 0-100, "bssid": "xx:xx:xx:xx:xx:xx", "frequency": 2412-7115 MHz}``; several entries
may share an SSID (one network, several BSSIDs),
``step_ms`` (10): delay between two device state transitions,
``scan_ms`` (30): how long a requested scan takes,
``client_ipv4`` ("192.168.1.57/24", gateway .1) and ``ethernet_ipv4`` ("192.168.1.58/24"):
the addresses DHCP "gives",
``internet`` (true): Connectivity FULL / State CONNECTED_GLOBAL when a client connection with
a default route is up; false gives LIMITED / CONNECTED_SITE,
``loopback`` (true): "lo" is a device with an externally activated "lo" connection, as in
NetworkManager >= 1.42: clients must pick devices by DeviceType, not by position,
``profiles_file`` (none): a JSON file standing for /etc/NetworkManager/system-connections:
saved ("to disk") profiles are written there and come back, and autoconnect, when the mock
starts again; in-memory ones (the hotspot) never do (``gatewayd.simulator.nm.store``),
``uplink_socket`` (none): a unix datagram socket to which the mock sends ``up``, ``limited``
or ``down`` whenever whether the hub reaches the internet changes: ``gatewayd --simulate``
carries the hub's broker connections through a relay it opens and closes
(``gatewayd.simulator.nm.uplink``, ``gatewayd.simulator.uplink``).

Mock control methods (interface org.freedesktop.DBus.Mock on /org/freedesktop)
------------------------------------------------------------------------------
``DropWifi(u reason)``: the link of the active Wi-Fi client connection is lost: FAILED(reason),
DISCONNECTED(0). The AP stays visible, so an autoconnect profile reconnects, as with
NetworkManager after a short outage. ``RemoveWifiNetwork(s ssid) -> u``: every AP with that
SSID disappears (AccessPointRemoved); a client connected to it fails with SSID_NOT_FOUND and
stays offline. ``AddWifiNetwork(s json) -> o``: one AP appears (same keys as in
``access_points``); autoconnect runs, so "network comes back -> hub goes online again" works
(while a hotspot runs the AP stays invisible until it stops, and "/" is returned). A bad spec
fails with ``org.freedesktop.NetworkManager.InvalidArguments`` naming the key.
``SetWifiStrength(s bssid, u strength)``: one AP's signal changes (0-100): its Strength, with
PropertiesChanged, as NetworkManager shows what the supplicant reports; a client stays on
it (nothing roams). An unknown BSSID or a strength over 100 fails with InvalidArguments.
``VanishAfterListing(s ssid)``: the next GetAccessPoints/GetAllAccessPoints still lists that
network's APs, which are gone (AccessPointRemoved) by the time the client reads them, as
NetworkManager re-exporting its AP objects does (a scan race clients must survive).
``SetInternet(b)``: switch Connectivity FULL <-> LIMITED. ``SetEthernetCarrier(b)``: plug or
unplug the cable: UNAVAILABLE(20, CARRIER 40) / DISCONNECTED then autoconnect.
``DescribeState() -> s``: JSON snapshot of devices (with their active connection), radio
networks (visible or not) and profiles (with why autoconnect skips them).
"""

from __future__ import annotations

import json
from typing import Any

import dbus
import dbus.service
from dbusmock import MOCK_IFACE

from gatewayd.simulator.nm.bus import BUS_NAME, MAIN_OBJ
from gatewayd.simulator.nm.template import load, world

__all__ = ["BUS_NAME", "IS_OBJECT_MANAGER", "MAIN_OBJ", "SYSTEM_BUS", "AddWifiNetwork",
           "DescribeState", "DropWifi", "RemoveWifiNetwork", "SetEthernetCarrier",
           "SetInternet", "SetWifiStrength", "VanishAfterListing", "load"]

SYSTEM_BUS = True
IS_OBJECT_MANAGER = True


# Mock control methods (org.freedesktop.DBus.Mock on /org/freedesktop). dbusmock exports every
# dbus.service.method of a template module, so these names must not clash with upstream's.


@dbus.service.method(MOCK_IFACE, in_signature="u", out_signature="")
def DropWifi(_self: Any, reason: int) -> None:
    """The Wi-Fi client link is lost: FAILED(reason) then DISCONNECTED(0)."""
    world().drop_wifi(int(reason))


@dbus.service.method(MOCK_IFACE, in_signature="s", out_signature="u")
def RemoveWifiNetwork(_self: Any, ssid: str) -> int:
    """Every AP with this SSID disappears; returns how many did."""
    return world().remove_network(str(ssid).encode())


@dbus.service.method(MOCK_IFACE, in_signature="s", out_signature="o")
def AddWifiNetwork(_self: Any, spec: str) -> str:
    """One AP appears; spec is JSON like an ``access_points`` entry. Returns its path."""
    path: str = dbus.ObjectPath(world().add_network(str(spec)))
    return path


@dbus.service.method(MOCK_IFACE, in_signature="su", out_signature="")
def SetWifiStrength(_self: Any, bssid: str, strength: int) -> None:
    """One AP's Strength changes (0-100), as NetworkManager reports the supplicant's signal."""
    world().set_strength(str(bssid), int(strength))


@dbus.service.method(MOCK_IFACE, in_signature="s", out_signature="")
def VanishAfterListing(_self: Any, ssid: str) -> None:
    """The network's APs vanish right after the next listing of access points."""
    world().vanish_after_listing(str(ssid).encode())


@dbus.service.method(MOCK_IFACE, in_signature="b", out_signature="")
def SetInternet(_self: Any, online: bool) -> None:
    """Whether connected clients reach the internet (Connectivity FULL vs LIMITED)."""
    world().set_internet(bool(online))


@dbus.service.method(MOCK_IFACE, in_signature="b", out_signature="")
def SetEthernetCarrier(_self: Any, plugged: bool) -> None:
    """Plug or unplug the Ethernet cable."""
    world().set_carrier(bool(plugged))


@dbus.service.method(MOCK_IFACE, in_signature="", out_signature="s")
def DescribeState(_self: Any) -> str:
    """JSON snapshot of devices, APs and profiles, for tests and debugging."""
    return json.dumps(world().describe())
