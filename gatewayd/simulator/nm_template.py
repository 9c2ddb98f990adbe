"""NetworkManager with realistic Wi-Fi: a python-dbusmock template for tests and the simulator.

Run it with ``python -m dbusmock --system --template <this file> --parameters '<json>'``;
:class:`gatewayd.simulator.nm_mock.NetworkManagerMock` does that for you. It reuses dbusmock's
``networkmanager`` template (manager and settings skeletons, device constructors, enums) and
replaces what gatewayd relies on with behaviour modelled on NetworkManager 1.42 (Debian 12).
Where NetworkManager's exact behaviour was uncertain, the mock is deliberately *stricter*, so
client code that works here also works on a hub.

Parameters (JSON object, every key optional)
--------------------------------------------
``wifi_interface`` ("wlan0"), ``wifi_mac`` ("dc:a6:32:12:34:56"),
``ethernet`` (false): also create ``eth0`` (``ethernet_interface``, ``ethernet_mac``),
``ethernet_connected`` (false): eth0 has carrier and "Wired connection 1" is active at start,
``access_points``: list of ``{"ssid": str, "psk": str ("" for open), "security":
"wpa2"|"wpa3"|"wpa2/wpa3"|"open", "hidden": bool, "strength": 0-100, "bssid": str,
"frequency": MHz}``; several entries may share an SSID (one network, several BSSIDs),
``step_ms`` (10): delay between two device state transitions,
``scan_ms`` (30): how long a requested scan takes,
``client_ipv4`` ("192.168.1.57/24", gateway .1) and ``ethernet_ipv4`` ("192.168.1.58/24"):
the addresses DHCP "gives",
``internet`` (true): Connectivity FULL / State CONNECTED_GLOBAL when a client connection with
a default route is up; false gives LIMITED / CONNECTED_SITE,
``loopback`` (true): "lo" is a device with an externally activated "lo" connection, as in
NetworkManager >= 1.42: clients must pick devices by DeviceType, not by position.

Radio model
-----------
* Access points carry security in Flags/WpaFlags/RsnFlags like NetworkManager: open = 0/0/0;
  wpa2 = PRIVACY/0/(PAIR_CCMP|GROUP_CCMP|KEY_MGMT_PSK = 0x188); wpa3 = 0x488 (SAE);
  wpa2/wpa3 = 0x588. HwAddress and BSSIDs are upper case, as NetworkManager reports them.
* A hidden AP has ``Ssid == b""``. A scan requested with ``{"ssids": [b"Hidden Lab"]}``
  (type ``aay``) reveals it (its Ssid becomes the name; it stays revealed), and so does a successful
  connection with ``802-11-wireless.hidden = true``. ``GetAccessPoints`` leaves out APs
  without SSID; ``GetAllAccessPoints`` and the ``AccessPoints`` property list all of them.
* ``RequestScan`` returns at once; after ``scan_ms`` LastScan (CLOCK_BOOTTIME ms, strictly
  increasing) and the APs' LastSeen change and PropertiesChanged is emitted.
* While a hotspot runs, the device is in AP mode (Wireless.Mode 3): the scan list is emptied
  (AccessPointRemoved for each), and holds only the hotspot's own AP, as on real hardware.
  Scans still "complete" but find nothing. Leaving AP mode re-exports the networks under
  *new* object paths, as NetworkManager does: never cache AP paths across mode switches.

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
    64-hex-digit PSK form works too). The strongest fitting BSSID is used, or the AP passed
    as specific_object; it becomes ActiveAccessPoint and the ActiveConnection's
    SpecificObject;
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
* Manager State: CONNECTED_GLOBAL(70) (SITE 60 without internet) while a Wi-Fi client or
  Ethernet connection is up (Connectivity FULL 4 / LIMITED 3), CONNECTED_LOCAL(50) with only
  a hotspot (Connectivity NONE 1), CONNECTING(40) while activating, DISCONNECTED(20)
  otherwise ("lo" does not count). PrimaryConnection follows (Ethernet before Wi-Fi).

Settings
--------
Profiles are validated like NetworkManager does: connection.id/uuid/type are required, Wi-Fi
needs an SSID of 1-32 bytes, wpa-psk needs an 8-63 character or 64-hex-digit psk, and the
properties the mock interprets must have NetworkManager's D-Bus types (ssid ``ay``, hidden
``b``, autoconnect-priority ``i``...). Errors carry NetworkManager's names, e.g.
``org.freedesktop.NetworkManager.Settings.Connection.InvalidProperty``.
GetSettings strips secrets (psk...), exactly like NetworkManager: read them with
GetSecrets("802-11-wireless-security"). Update/UpdateUnsaved/Update2 replace all settings,
but keep the old secrets if the new settings carry none (NetworkManager does that too).
AddConnection/Update store "to disk" (Unsaved false), AddConnectionUnsaved/UpdateUnsaved in
memory (Unsaved true, Flags UNSAVED); AddConnection2/Update2 honour TO_DISK/IN_MEMORY and
BLOCK_AUTOCONNECT. Nothing survives a restart of the mock.

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

Mock control methods (interface org.freedesktop.DBus.Mock on /org/freedesktop)
------------------------------------------------------------------------------
``DropWifi(u reason)``: the link of the active Wi-Fi client connection is lost: FAILED(reason),
DISCONNECTED(0). The AP stays visible, so an autoconnect profile reconnects, as with
NetworkManager after a short outage. ``RemoveWifiNetwork(s ssid) -> u``: every AP with that
SSID disappears (AccessPointRemoved); a client connected to it fails with SSID_NOT_FOUND and
stays offline. ``AddWifiNetwork(s json) -> o``: one AP appears (same keys as in
``access_points``); autoconnect runs, so "network comes back -> hub goes online again" works
(while a hotspot runs the AP stays invisible until it stops, and "/" is returned).
``SetInternet(b)``: switch Connectivity FULL <-> LIMITED. ``SetEthernetCarrier(b)``: plug or
unplug the cable: UNAVAILABLE(20, CARRIER 40) / DISCONNECTED then autoconnect.
``DescribeState() -> s``: JSON snapshot of devices (with their active connection), radio
networks (visible or not) and profiles (with why autoconnect skips them).
"""

from __future__ import annotations

import ctypes
import hashlib
import ipaddress
import itertools
import json
import sys
import time
import traceback
import types
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import dbus
import dbus.service
import dbusmock
from dbusmock import MOCK_IFACE
from dbusmock.templates import networkmanager as upstream

# dbusmock exec()s a template file into a module object it never puts into sys.modules, but
# dataclasses looks a class's module up there (only to spot ClassVar/InitVar annotations).
if __name__ not in sys.modules:
    sys.modules[__name__] = types.ModuleType(__name__)

BUS_NAME = upstream.BUS_NAME
MAIN_OBJ = upstream.MAIN_OBJ
SYSTEM_BUS = True
IS_OBJECT_MANAGER = True

NM_PATH = upstream.MANAGER_OBJ
NM_IFACE = upstream.MANAGER_IFACE
SETTINGS_PATH = upstream.SETTINGS_OBJ
SETTINGS_IFACE = upstream.SETTINGS_IFACE
CONN_IFACE = upstream.CSETTINGS_IFACE
DEVICE_IFACE = upstream.DEVICE_IFACE
WIRELESS_IFACE = upstream.WIRELESS_DEVICE_IFACE
WIRED_IFACE = "org.freedesktop.NetworkManager.Device.Wired"
LOOPBACK_IFACE = "org.freedesktop.NetworkManager.Device.Loopback"
STATS_IFACE = "org.freedesktop.NetworkManager.Device.Statistics"
AP_IFACE = upstream.ACCESS_POINT_IFACE
ACTIVE_IFACE = upstream.ACTIVE_CONNECTION_IFACE
IP4_IFACE = "org.freedesktop.NetworkManager.IP4Config"

DevState = upstream.DeviceState
NMState = upstream.NMState
Conn = upstream.NMConnectivityState
AcState = upstream.NMActiveConnectionState


class Reason:
    """NMDeviceStateReason values this mock emits."""

    NONE = 0
    IP_CONFIG_UNAVAILABLE = 5
    NO_SECRETS = 7
    SUPPLICANT_DISCONNECT = 8
    SUPPLICANT_TIMEOUT = 11
    CONNECTION_REMOVED = 38
    USER_REQUESTED = 39
    CARRIER = 40
    SSID_NOT_FOUND = 53
    NEW_ACTIVATION = 60


class AcReason:
    """NMActiveConnectionStateReason values this mock emits."""

    NONE = 1
    USER_DISCONNECTED = 2
    DEVICE_DISCONNECTED = 3
    NO_SECRETS = 9
    CONNECTION_REMOVED = 11


_ERR = "org.freedesktop.NetworkManager"
E_UNKNOWN_CONNECTION = f"{_ERR}.UnknownConnection"
E_UNKNOWN_DEVICE = f"{_ERR}.UnknownDevice"
E_NOT_AVAILABLE = f"{_ERR}.ConnectionNotAvailable"
E_NOT_ACTIVE = f"{_ERR}.ConnectionNotActive"
E_INVALID_ARGUMENTS = f"{_ERR}.InvalidArguments"
E_ALREADY = f"{_ERR}.AlreadyEnabledOrDisabled"
E_DEVICE_NOT_ALLOWED = f"{_ERR}.Device.NotAllowed"
E_DEVICE_INVALID_ARGUMENT = f"{_ERR}.Device.InvalidArgument"
E_DEVICE_NOT_ACTIVE = f"{_ERR}.Device.NotActive"
E_DEVICE_NOT_SOFTWARE = f"{_ERR}.Device.NotSoftware"
E_DEVICE_INVALID_CONNECTION = f"{_ERR}.Device.InvalidConnection"
E_DEVICE_NO_SPECIFIC_OBJECT = f"{_ERR}.Device.SpecificObjectNotFound"
E_UUID_EXISTS = f"{_ERR}.Settings.UuidExists"
E_SETTINGS_INVALID_ARGUMENTS = f"{_ERR}.Settings.InvalidArguments"
E_INVALID_CONNECTION = f"{_ERR}.Settings.InvalidConnection"
E_MISSING_SETTING = f"{_ERR}.Settings.Connection.MissingSetting"
E_MISSING_PROPERTY = f"{_ERR}.Settings.Connection.MissingProperty"
E_INVALID_PROPERTY = f"{_ERR}.Settings.Connection.InvalidProperty"
E_SETTING_NOT_FOUND = f"{_ERR}.Settings.Connection.SettingNotFound"

# RSN flags: pairwise CCMP 0x8 | group CCMP 0x80 | key management PSK 0x100 / SAE 0x400.
RSN_FLAGS = {"open": 0x0, "wpa2": 0x188, "wpa3": 0x488, "wpa2/wpa3": 0x588}
# Which 802-11-wireless-security.key-mgmt can join which AP (None: no security section).
KEY_MGMT_FOR = {"open": {None}, "wpa2": {"wpa-psk"}, "wpa3": {"sae"},
                "wpa2/wpa3": {"wpa-psk", "sae"}}
_AP_FLAG_PRIVACY = 0x1
_MODE_INFRA, _MODE_AP = 2, 3
_WIFI_CAPS = 0x7FF  # ciphers, WPA/RSN, AP, ad-hoc, 2.4 and 5 GHz: what a Pi's brcmfmac offers

_SECRET_KEYS = {
    "802-11-wireless-security": ("psk", "leap-password", "wep-key0", "wep-key1", "wep-key2",
                                 "wep-key3"),
    "802-1x": ("password", "password-raw", "private-key-password",
               "phase2-private-key-password", "pin"),
}
_CONNECTION_TYPES = {"802-11-wireless", "802-3-ethernet", "loopback", "bridge", "bond", "vlan",
                     "wireguard", "vpn", "gsm", "bluetooth", "dummy", "tun"}
_WIFI_MODES = {"infrastructure", "ap", "adhoc", "mesh"}
_KEY_MGMTS = {"none", "ieee8021x", "wpa-psk", "wpa-eap", "wpa-eap-suite-b-192", "sae", "owe"}
# The D-Bus types NetworkManager insists on for the properties this mock interprets.
_PROPERTY_TYPES = {
    "connection": {"id": "s", "uuid": "s", "type": "s", "autoconnect": "b",
                   "autoconnect-priority": "i", "autoconnect-retries": "i",
                   "interface-name": "s", "timestamp": "t"},
    "802-11-wireless": {"ssid": "ay", "mode": "s", "hidden": "b", "band": "s", "channel": "u",
                        "bssid": "ay", "mac-address": "ay"},
    "802-11-wireless-security": {"key-mgmt": "s", "psk": "s", "auth-alg": "s",
                                 "proto": "as", "pairwise": "as", "group": "as"},
    "ipv4": {"method": "s", "address-data": "aa{sv}", "addresses": "aau", "gateway": "s",
             "dns": "au"},
    "ipv6": {"method": "s", "address-data": "aa{sv}"},
}
_DEFAULT_RETRIES = 4

# Settings.Connection flags, AddConnection2/Update2 flags.
_FLAG_UNSAVED = 0x1
_TO_DISK, _IN_MEMORY, _IN_MEMORY_DETACHED, _IN_MEMORY_ONLY = 0x1, 0x2, 0x4, 0x8
_BLOCK_AUTOCONNECT = 0x20


# ------------------------------------------------------------------------------------------
# GLib timers: dbusmock runs a GLib main loop but the process has no PyGObject, so talk to
# libglib directly. GLib must not call a ctypes thunk that Python already freed.

_glib = ctypes.CDLL("libglib-2.0.so.0")
_SourceFunc = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
_glib.g_timeout_add.argtypes = [ctypes.c_uint, _SourceFunc, ctypes.c_void_p]
_glib.g_timeout_add.restype = ctypes.c_uint
_armed: dict[int, Any] = {}  # ctypes thunks are unhashable
_spent: list[Any] = []


def later(ms: int, fn: Callable[[], None]) -> None:
    """Run ``fn`` from the main loop after ``ms`` milliseconds."""

    def fire(_data: int | None) -> int:
        _spent.clear()  # thunks of earlier timers have certainly returned by now
        _armed.pop(id(thunk), None)
        _spent.append(thunk)
        try:
            fn()
        except Exception:  # a broken step must not take the whole mock down
            traceback.print_exc()
            sys.stderr.flush()
        return 0  # G_SOURCE_REMOVE

    thunk = _SourceFunc(fire)
    _armed[id(thunk)] = thunk
    _glib.g_timeout_add(max(0, ms), thunk, None)


# ------------------------------------------------------------------------------------------
# Small helpers


def error(name: str, message: str) -> dbus.exceptions.DBusException:
    return dbus.exceptions.DBusException(message, name=name)


def paths(items: Iterable[str]) -> dbus.Array:
    return dbus.Array([dbus.ObjectPath(p) for p in items], signature="o")


def boottime_ms() -> int:
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * 1000)


def obj(path: str) -> Any:
    return dbusmock.get_object(path)


def set_props(path: str, iface: str, props: dict[str, Any]) -> None:
    """Store properties and emit one standard PropertiesChanged with those that changed."""
    current = obj(path).props.setdefault(iface, {})
    changed = {k: v for k, v in props.items()
               if k not in current or current[k] != v or type(current[k]) is not type(v)}
    if not changed:
        return
    current.update(changed)
    obj(path).EmitSignal(dbus.PROPERTIES_IFACE, "PropertiesChanged", "sa{sv}as",
                         [iface, dbus.Dictionary(changed, signature="sv"),
                          dbus.Array([], signature="s")])


def signature_of(value: Any) -> str:
    """The D-Bus signature a value arrived with (dbus-python keeps it on the object)."""
    scalar = {dbus.String: "s", dbus.Boolean: "b", dbus.Int32: "i", dbus.UInt32: "u",
              dbus.Int64: "x", dbus.UInt64: "t", dbus.Byte: "y", dbus.Double: "d",
              dbus.ObjectPath: "o", dbus.Int16: "n", dbus.UInt16: "q"}
    if type(value) in scalar:
        return scalar[type(value)]
    if isinstance(value, dbus.ByteArray):
        return "ay"
    if isinstance(value, dbus.Array):
        return "a" + str(value.signature or "")
    if isinstance(value, dbus.Dictionary):
        return "a{" + str(value.signature or "") + "}"
    return "?"


def parse_cidr(text: str) -> tuple[str, int]:
    iface = ipaddress.IPv4Interface(text)
    return str(iface.ip), iface.network.prefixlen


def psk_valid(psk: str) -> bool:
    if len(psk) == 64:
        return all(c in "0123456789abcdefABCDEF" for c in psk)
    return 8 <= len(psk) <= 63 and all(" " <= c <= "~" for c in psk)


def psk_matches(given: str, ap: RadioAP) -> bool:
    if given == ap.psk:
        return True
    # WPA2 also accepts the 256-bit key derived from passphrase and SSID, written in hex.
    derived = hashlib.pbkdf2_hmac("sha1", ap.psk.encode(), ap.ssid, 4096, 32).hex()
    return ap.security != "wpa3" and len(given) == 64 and given.lower() == derived


# ------------------------------------------------------------------------------------------
# The world: radio networks, devices, profiles, activations


@dataclass
class RadioAP:
    """One BSSID on the air. ``path`` is None while the device cannot see it."""

    ssid: bytes
    psk: str
    security: str
    hidden: bool
    strength: int
    bssid: str
    frequency: int
    path: str | None = None
    revealed: bool = False

    @classmethod
    def from_json(cls, spec: dict[str, Any], index: int) -> RadioAP:
        security = str(spec.get("security", "wpa2" if spec.get("psk") else "open"))
        if security not in RSN_FLAGS:
            raise ValueError(f"access point {spec!r}: security must be one of {list(RSN_FLAGS)}")
        psk = str(spec.get("psk", ""))
        if (security == "open") != (psk == ""):
            raise ValueError(f"access point {spec!r}: an open network has no psk, others need one")
        ssid = str(spec["ssid"]).encode()
        if not 1 <= len(ssid) <= 32:
            raise ValueError(f"access point {spec!r}: SSID must be 1-32 bytes")
        return cls(ssid=ssid, psk=psk, security=security, hidden=bool(spec.get("hidden", False)),
                   strength=max(0, min(100, int(spec.get("strength", 70)))),
                   bssid=str(spec.get("bssid", f"02:00:00:00:{index >> 8:02x}:{index & 255:02x}"))
                   .upper(),
                   frequency=int(spec.get("frequency", 2437)))

    @property
    def shown_ssid(self) -> bytes:
        return b"" if self.hidden and not self.revealed else self.ssid


@dataclass
class Profile:
    """A Settings.Connection: the settings as a client sent them (secrets included)."""

    path: str
    settings: dict[str, dict[str, Any]]
    unsaved: bool
    blocked: str | None = None  # why autoconnect skips it: user / no-secrets / retries / flag
    retries: int | None = None
    last_used: float = 0.0

    def get(self, setting: str, key: str, default: Any = None) -> Any:
        return self.settings.get(setting, {}).get(key, default)

    @property
    def id(self) -> str:
        return str(self.get("connection", "id", ""))

    @property
    def uuid(self) -> str:
        return str(self.get("connection", "uuid", ""))

    @property
    def type(self) -> str:
        return str(self.get("connection", "type", ""))

    @property
    def autoconnect(self) -> bool:
        return bool(self.get("connection", "autoconnect", True))

    @property
    def wifi_mode(self) -> str:
        return str(self.get("802-11-wireless", "mode", "infrastructure"))

    @property
    def ssid(self) -> bytes:
        return bytes(self.get("802-11-wireless", "ssid", b""))

    @property
    def key_mgmt(self) -> str | None:
        sec = self.settings.get("802-11-wireless-security")
        return None if sec is None else str(sec.get("key-mgmt", ""))

    @property
    def psk(self) -> str | None:
        value = self.get("802-11-wireless-security", "psk")
        return None if value is None else str(value)

    def max_retries(self) -> int:
        value = int(self.get("connection", "autoconnect-retries", -1))
        return _DEFAULT_RETRIES if value < 0 else value


@dataclass
class Activation:
    ac: str
    profile: Profile
    device: Device
    hotspot: bool = False
    ap: RadioAP | None = None
    own_ap: str | None = None
    ip4: str = "/"
    specific: str = "/"  # the AP the client asked for, if any
    activated: bool = False
    gone: bool = False


@dataclass
class Device:
    path: str
    kind: str  # wifi / ethernet / loopback
    iface: str
    mac: str
    carrier: bool = True
    steps: deque[Callable[[], None]] = field(default_factory=deque)
    ticking: bool = False
    activation: Activation | None = None
    blocked: bool = False  # Device.Disconnect blocks autoconnect on the device

    @property
    def state(self) -> int:
        return int(obj(self.path).props[DEVICE_IFACE]["State"])


class World:
    """Everything the template simulates; one instance per mock process."""

    def __init__(self, mock: Any, params: dict[str, Any]) -> None:
        self.mock = mock
        self.step_ms = int(params.get("step_ms", 10))
        self.scan_ms = int(params.get("scan_ms", 30))
        self.internet = bool(params.get("internet", True))
        self.client_ipv4 = parse_cidr(str(params.get("client_ipv4", "192.168.1.57/24")))
        self.ethernet_ipv4 = parse_cidr(str(params.get("ethernet_ipv4", "192.168.1.58/24")))
        self.ids: dict[str, itertools.count[int]] = {}
        self.devices: dict[str, Device] = {}
        self.radio: list[RadioAP] = [RadioAP.from_json(spec, i + 1) for i, spec in
                                     enumerate(params.get("access_points", []))]
        self.profiles: dict[str, Profile] = {}
        self.ap_mode = False
        self.scan_pending = False
        self.scan_ssids: set[bytes] = set()
        self.last_scan = boottime_ms()
        self.autoconnect_pending = False
        self.wifi: Device | None = None

    def next_id(self, kind: str) -> int:
        return next(self.ids.setdefault(kind, itertools.count(1)))

    # --- object plumbing -------------------------------------------------------------------

    def add_object(self, path: str, iface: str, props: dict[str, Any],
                   methods: Iterable[tuple[str, str, str, Any]] = ()) -> Any:
        self.mock.AddObject(path, iface, props, list(methods))
        self.mock.object_manager_emit_added(path)
        return obj(path)

    def remove_object(self, path: str) -> None:
        self.mock.object_manager_emit_removed(path)
        self.mock.RemoveObject(path)

    def manager_list(self, prop: str, add: str | None = None, remove: str | None = None,
                     path: str = NM_PATH, iface: str = NM_IFACE) -> None:
        items = [str(p) for p in obj(path).props[iface][prop] if str(p) != remove]
        if add is not None:
            items.append(add)
        set_props(path, iface, {prop: paths(items)})

    # --- device state machine --------------------------------------------------------------

    def run(self, dev: Device, steps: Iterable[Callable[[], None]]) -> None:
        dev.steps.extend(steps)
        if not dev.ticking:
            dev.ticking = True
            later(self.step_ms, lambda: self.tick(dev))

    def tick(self, dev: Device) -> None:
        if dev.steps:
            dev.steps.popleft()()
        if dev.steps:
            later(self.step_ms, lambda: self.tick(dev))
        else:
            dev.ticking = False

    def device_state(self, dev: Device, state: int, reason: int) -> None:
        old = dev.state
        if state == old:
            return
        set_props(dev.path, DEVICE_IFACE, {
            "State": dbus.UInt32(state),
            "StateReason": dbus.Struct((dbus.UInt32(state), dbus.UInt32(reason)), signature="uu"),
        })
        obj(dev.path).EmitSignal(DEVICE_IFACE, "StateChanged", "uuu",
                                 [dbus.UInt32(state), dbus.UInt32(old), dbus.UInt32(reason)])
        self.refresh_manager()
        if state == DevState.DISCONNECTED:
            self.autoconnect_soon()

    def ac_state(self, act: Activation, state: int, reason: int) -> None:
        if act.gone:
            return
        set_props(act.ac, ACTIVE_IFACE, {"State": dbus.UInt32(state)})
        obj(act.ac).EmitSignal(ACTIVE_IFACE, "StateChanged", "uu",
                               [dbus.UInt32(state), dbus.UInt32(reason)])

    def refresh_manager(self) -> None:
        acts = [d.activation for d in self.devices.values()
                if d.kind != "loopback" and d.activation and not d.activation.gone]
        up = [a for a in acts if a.activated]
        routed = sorted((a for a in up if not a.hotspot),
                        key=lambda a: a.device.kind != "ethernet")  # ethernet's metric wins
        if routed:
            state = NMState.NM_STATE_CONNECTED_GLOBAL if self.internet else \
                NMState.NM_STATE_CONNECTED_SITE
            connectivity = Conn.NM_CONNECTIVITY_FULL if self.internet else \
                Conn.NM_CONNECTIVITY_LIMITED
        elif up:
            state, connectivity = NMState.NM_STATE_CONNECTED_LOCAL, Conn.NM_CONNECTIVITY_NONE
        elif acts:
            state, connectivity = NMState.NM_STATE_CONNECTING, Conn.NM_CONNECTIVITY_NONE
        else:
            state, connectivity = NMState.NM_STATE_DISCONNECTED, Conn.NM_CONNECTIVITY_NONE
        primary = routed[0] if routed else None
        activating = next((a for a in acts if not a.activated), None)
        old_state = int(obj(NM_PATH).props[NM_IFACE]["State"])
        set_props(NM_PATH, NM_IFACE, {
            "State": dbus.UInt32(state),
            "Connectivity": dbus.UInt32(connectivity),
            "PrimaryConnection": dbus.ObjectPath(primary.ac if primary else "/"),
            "PrimaryConnectionType": dbus.String(primary.profile.type if primary else ""),
            "ActivatingConnection": dbus.ObjectPath(activating.ac if activating else "/"),
        })
        for act in up:
            set_props(act.ac, ACTIVE_IFACE, {"Default": dbus.Boolean(act is primary)})
            level = connectivity if act in routed else Conn.NM_CONNECTIVITY_NONE
            set_props(act.device.path, DEVICE_IFACE, {"Ip4Connectivity": dbus.UInt32(level)})
        if state != old_state:
            obj(NM_PATH).EmitSignal(NM_IFACE, "StateChanged", "u", [dbus.UInt32(state)])

    # --- access points ---------------------------------------------------------------------

    def visible(self) -> list[RadioAP]:
        return [ap for ap in self.radio if ap.path is not None]

    def ap_props(self, ssid: bytes, bssid: str, security: str, strength: int, frequency: int,
                 mode: int) -> dict[str, Any]:
        return {
            "Flags": dbus.UInt32(0 if security == "open" else _AP_FLAG_PRIVACY),
            "WpaFlags": dbus.UInt32(0),
            "RsnFlags": dbus.UInt32(RSN_FLAGS[security]),
            "Ssid": dbus.ByteArray(ssid),
            "Frequency": dbus.UInt32(frequency),
            "HwAddress": dbus.String(bssid),
            "Mode": dbus.UInt32(mode),
            "MaxBitrate": dbus.UInt32(270000 if frequency > 4000 else 130000),
            "Strength": dbus.Byte(strength),
            "LastSeen": dbus.Int32(int(time.clock_gettime(time.CLOCK_BOOTTIME))),
        }

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
        ap.path = self.export_ap(self.ap_props(ap.shown_ssid, ap.bssid, ap.security, ap.strength,
                                               ap.frequency, _MODE_INFRA))

    def hide(self, ap: RadioAP) -> None:
        if ap.path is not None:
            path, ap.path = ap.path, None
            self.unexport_ap(path)

    def reveal(self, ap: RadioAP) -> None:
        if ap.hidden and not ap.revealed:
            ap.revealed = True
            if ap.path is not None:
                set_props(ap.path, AP_IFACE, {"Ssid": dbus.ByteArray(ap.ssid)})

    def add_network(self, spec: dict[str, Any]) -> str:
        ap = RadioAP.from_json(spec, len(self.radio) + 1)
        self.radio.append(ap)
        if self.ap_mode:
            return "/"
        self.show(ap)
        self.autoconnect_soon()
        return ap.path or "/"

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
        act.own_ap = self.export_ap(self.ap_props(act.profile.ssid, dev.mac, security, 100,
                                                  frequency, _MODE_AP))
        set_props(dev.path, WIRELESS_IFACE, {"Mode": dbus.UInt32(_MODE_AP),
                                             "ActiveAccessPoint": dbus.ObjectPath(act.own_ap)})
        set_props(act.ac, ACTIVE_IFACE, {"SpecificObject": dbus.ObjectPath(act.own_ap)})

    def leave_ap_mode(self, dev: Device, act: Activation) -> None:
        set_props(dev.path, WIRELESS_IFACE, {"Mode": dbus.UInt32(_MODE_INFRA),
                                             "ActiveAccessPoint": dbus.ObjectPath("/")})
        if act.own_ap is not None:
            self.unexport_ap(act.own_ap)
            act.own_ap = None
        self.ap_mode = False
        # NetworkManager rescans after leaving AP mode; the mock finds everything at once.
        for ap in self.radio:
            self.show(ap)

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
        if best.security != "open" and not psk_matches(profile.psk or "", best):
            return "no-secrets", best
        return "ok", best

    # --- profiles --------------------------------------------------------------------------

    def add_profile(self, settings: dict[str, Any], unsaved: bool, *, emit: bool = True,
                    flags: int = 0) -> Profile:
        settings = normalize(settings)
        validate(settings)
        if any(p.uuid == str(settings["connection"]["uuid"]) for p in self.profiles.values()):
            raise error(E_UUID_EXISTS, "A connection with this UUID already exists")
        path = f"{SETTINGS_PATH}/{self.next_id('conn')}"
        profile = Profile(path, settings, unsaved)
        self.profiles[path] = profile
        self.add_object(path, CONN_IFACE, self.profile_props(profile, flags), [
            ("Update", "a{sa{sv}}", "", lambda o, s: self.update(profile, s, unsaved=False)),
            ("UpdateUnsaved", "a{sa{sv}}", "",
             lambda o, s: self.update(profile, s, unsaved=True)),
            ("Update2", "a{sa{sv}}ua{sv}", "a{sv}",
             lambda o, s, f, a: self.update2(profile, s, int(f))),
            ("Delete", "", "", lambda o: self.delete_profile(profile)),
            ("GetSettings", "", "a{sa{sv}}", lambda o: public_settings(profile.settings)),
            ("GetSecrets", "s", "a{sa{sv}}", lambda o, name: secrets_of(profile, str(name))),
            ("ClearSecrets", "", "", lambda o: self.clear_secrets(profile)),
            ("Save", "", "", lambda o: self.set_unsaved(profile, False)),
        ])
        self.manager_list("Connections", add=path, path=SETTINGS_PATH, iface=SETTINGS_IFACE)
        if emit:
            obj(SETTINGS_PATH).EmitSignal(SETTINGS_IFACE, "NewConnection", "o",
                                          [dbus.ObjectPath(path)])
        self.refresh_available()
        self.autoconnect_soon()
        return profile

    def profile_props(self, profile: Profile, flags: int = 0) -> dict[str, Any]:
        where = "/run" if profile.unsaved else "/etc"
        name = profile.id.replace("/", "_")
        return {
            "Unsaved": dbus.Boolean(profile.unsaved),
            "Flags": dbus.UInt32(flags | (_FLAG_UNSAVED if profile.unsaved else 0)),
            "Filename": dbus.String(f"{where}/NetworkManager/system-connections/"
                                    f"{name}.nmconnection" if not flags else ""),
        }

    def set_unsaved(self, profile: Profile, unsaved: bool) -> None:
        profile.unsaved = unsaved
        set_props(profile.path, CONN_IFACE, self.profile_props(profile))

    def update(self, profile: Profile, settings: dict[str, Any], unsaved: bool) -> None:
        if profile.path not in self.profiles:
            raise error(E_UNKNOWN_CONNECTION, "Connection was deleted")
        new = normalize(settings)
        validate(new)
        if not has_secrets(new):  # keep the stored secrets, as NetworkManager does
            for setting, keys in _SECRET_KEYS.items():
                for key in keys:
                    if key in profile.settings.get(setting, {}) and setting in new:
                        new[setting][key] = profile.settings[setting][key]
        profile.settings = new
        profile.blocked, profile.retries = None, None
        self.set_unsaved(profile, unsaved)
        obj(profile.path).EmitSignal(CONN_IFACE, "Updated", "", [])
        self.refresh_available()
        self.autoconnect_soon()

    def update2(self, profile: Profile, settings: dict[str, Any], flags: int) -> dict[str, Any]:
        unsaved = not flags & _TO_DISK and bool(
            flags & (_IN_MEMORY | _IN_MEMORY_DETACHED | _IN_MEMORY_ONLY))
        if settings:
            self.update(profile, settings, unsaved)
        else:
            self.set_unsaved(profile, unsaved)
        if flags & _BLOCK_AUTOCONNECT:
            profile.blocked = "flag"
        return dbus.Dictionary({}, signature="sv")

    def clear_secrets(self, profile: Profile) -> None:
        for setting, keys in _SECRET_KEYS.items():
            for key in keys:
                profile.settings.get(setting, {}).pop(key, None)
        obj(profile.path).EmitSignal(CONN_IFACE, "Updated", "", [])

    def delete_profile(self, profile: Profile) -> None:
        for dev in self.devices.values():
            act = dev.activation
            if act and not act.gone and act.profile is profile:
                self.deactivate(act, Reason.CONNECTION_REMOVED, AcReason.CONNECTION_REMOVED)
        del self.profiles[profile.path]
        self.manager_list("Connections", remove=profile.path, path=SETTINGS_PATH,
                          iface=SETTINGS_IFACE)
        obj(profile.path).EmitSignal(CONN_IFACE, "Removed", "", [])
        obj(SETTINGS_PATH).EmitSignal(SETTINGS_IFACE, "ConnectionRemoved", "o",
                                      [dbus.ObjectPath(profile.path)])
        self.remove_object(profile.path)
        self.refresh_available()

    def refresh_available(self) -> None:
        for dev in self.devices.values():
            usable = [p.path for p in self.profiles.values() if self.fits(p, dev)]
            set_props(dev.path, DEVICE_IFACE, {"AvailableConnections": paths(usable)})

    def fits(self, profile: Profile, dev: Device) -> bool:
        kind = {"802-11-wireless": "wifi", "802-3-ethernet": "ethernet",
                "loopback": "loopback"}.get(profile.type)
        name = str(profile.get("connection", "interface-name", "") or "")
        return kind == dev.kind and name in ("", dev.iface)

    # --- activation ------------------------------------------------------------------------

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

    # --- autoconnect -----------------------------------------------------------------------

    def autoconnect_soon(self) -> None:
        if not self.autoconnect_pending:
            self.autoconnect_pending = True
            later(self.step_ms, self.autoconnect)

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


# ------------------------------------------------------------------------------------------
# Settings dictionaries


def normalize(settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Copy what the client sent; add the ipv4/ipv6 sections NetworkManager always adds."""
    out = {str(name): dict(values.items()) for name, values in settings.items()}
    ctype = str(out.get("connection", {}).get("type", ""))
    if ctype in ("802-11-wireless", "802-3-ethernet"):
        for family in ("ipv4", "ipv6"):
            out.setdefault(family, {}).setdefault("method", dbus.String("auto", variant_level=1))
    return out


def validate(settings: dict[str, dict[str, Any]]) -> None:
    if "connection" not in settings:
        raise error(E_MISSING_SETTING, "connection: setting is required")
    for setting, expected_types in _PROPERTY_TYPES.items():
        for key, expected in expected_types.items():
            if key in settings.get(setting, {}):
                actual = signature_of(settings[setting][key])
                if actual != expected:
                    raise error(E_INVALID_PROPERTY,
                                f"{setting}.{key}: can't set property of type '{expected}' "
                                f"from value of type '{actual}'")
    conn = settings["connection"]
    for key in ("id", "uuid", "type"):
        if not str(conn.get(key, "")):
            raise error(E_MISSING_PROPERTY, f"connection.{key}: property is missing")
    try:
        uuid.UUID(str(conn["uuid"]))
    except ValueError:
        raise error(E_INVALID_PROPERTY, "connection.uuid: property is invalid") from None
    ctype = str(conn["type"])
    if ctype not in _CONNECTION_TYPES:
        raise error(E_INVALID_PROPERTY, f"connection.type: connection type '{ctype}' is not "
                                        "valid")
    if ctype == "802-11-wireless":
        validate_wifi(settings)


def validate_wifi(settings: dict[str, dict[str, Any]]) -> None:
    wifi = settings.get("802-11-wireless")
    if wifi is None:
        raise error(E_MISSING_SETTING, "802-11-wireless: setting is required")
    ssid = bytes(wifi.get("ssid", b""))
    if not ssid:
        raise error(E_MISSING_PROPERTY, "802-11-wireless.ssid: property is missing")
    if len(ssid) > 32:
        raise error(E_INVALID_PROPERTY, "802-11-wireless.ssid: SSID length is out of range "
                                        "<1-32> bytes")
    mode = str(wifi.get("mode", "infrastructure"))
    if mode not in _WIFI_MODES:
        raise error(E_INVALID_PROPERTY, f"802-11-wireless.mode: '{mode}' is not a valid value")
    security = settings.get("802-11-wireless-security")
    if security is None:
        return
    key_mgmt = str(security.get("key-mgmt", ""))
    if not key_mgmt:
        raise error(E_MISSING_PROPERTY, "802-11-wireless-security.key-mgmt: property is missing")
    if key_mgmt not in _KEY_MGMTS:
        raise error(E_INVALID_PROPERTY, f"802-11-wireless-security.key-mgmt: '{key_mgmt}' is "
                                        "not a valid value for the property")
    psk = security.get("psk")
    if psk is not None and key_mgmt == "wpa-psk" and not psk_valid(str(psk)):
        raise error(E_INVALID_PROPERTY, "802-11-wireless-security.psk: property is invalid")
    if psk is not None and key_mgmt == "sae" and not str(psk):
        raise error(E_INVALID_PROPERTY, "802-11-wireless-security.psk: property is empty")


def has_secrets(settings: dict[str, dict[str, Any]]) -> bool:
    return any(key in settings.get(setting, {})
               for setting, keys in _SECRET_KEYS.items() for key in keys)


def public_settings(settings: dict[str, dict[str, Any]]) -> dbus.Dictionary:
    """GetSettings: everything but secrets."""
    out = dbus.Dictionary({}, signature="sa{sv}")
    for name, values in settings.items():
        hidden = _SECRET_KEYS.get(name, ())
        out[name] = dbus.Dictionary({k: v for k, v in values.items() if k not in hidden},
                                    signature="sv")
    return out


def secrets_of(profile: Profile, setting: str) -> dbus.Dictionary:
    if setting not in profile.settings:
        raise error(E_SETTING_NOT_FOUND, f"Connection didn't have requested setting "
                                         f"'{setting}'.")
    values = {k: v for k, v in profile.settings[setting].items()
              if k in _SECRET_KEYS.get(setting, ())}
    return dbus.Dictionary({setting: dbus.Dictionary(values, signature="sv")},
                           signature="sa{sv}")


def configured_ipv4(profile: Profile) -> tuple[str, int] | None:
    data = profile.get("ipv4", "address-data")
    if data:
        return str(data[0]["address"]), int(data[0]["prefix"])
    legacy = profile.get("ipv4", "addresses")
    if legacy:
        # Legacy 'aau' entries hold the address in network byte order.
        raw = int(legacy[0][0]).to_bytes(4, sys.byteorder)
        return str(ipaddress.IPv4Address(raw)), int(legacy[0][1])
    return None


def complete_profile(world: World, settings: dict[str, Any], specific: str) -> dict[str, Any]:
    """AddAndActivateConnection fills in what NetworkManager would derive itself."""
    out = {str(name): dict(values.items()) for name, values in settings.items()}
    wifi = out.setdefault("802-11-wireless", {}) if (
        "802-11-wireless" in out or specific not in ("", "/")) else None
    ap = next((a for a in world.visible() if a.path == specific), None)
    if specific not in ("", "/") and ap is None:
        raise error(E_DEVICE_NO_SPECIFIC_OBJECT,
                    f"The access point {specific} was not in the scan list.")
    if wifi is not None and "ssid" not in wifi:
        if ap is None or not ap.shown_ssid:
            raise error(E_DEVICE_INVALID_CONNECTION,
                        "A 'wireless' setting with a valid SSID is required for hidden access "
                        "points.")
        wifi["ssid"] = dbus.ByteArray(ap.shown_ssid, variant_level=1)
    conn = out.setdefault("connection", {})
    if wifi is not None:
        conn.setdefault("type", dbus.String("802-11-wireless", variant_level=1))
        name = bytes(wifi["ssid"]).decode(errors="replace")
        conn.setdefault("id", dbus.String(name, variant_level=1))
        if ap is not None and ap.security != "open" and "802-11-wireless-security" not in out:
            key_mgmt = "sae" if ap.security == "wpa3" else "wpa-psk"
            out["802-11-wireless-security"] = {"key-mgmt": dbus.String(key_mgmt,
                                                                       variant_level=1)}
    conn.setdefault("uuid", dbus.String(str(uuid.uuid4()), variant_level=1))
    return out


# ------------------------------------------------------------------------------------------
# Building the objects

_world: World | None = None


def world() -> World:
    assert _world is not None, "template not loaded"
    return _world


def load(mock: Any, parameters: dict[str, Any]) -> None:
    global _world
    w = _world = World(mock, parameters or {})
    upstream.load(mock, {"Version": str(parameters.get("Version", "1.42.4"))})
    nm = obj(NM_PATH)
    nm.props[NM_IFACE].update({
        "State": dbus.UInt32(NMState.NM_STATE_DISCONNECTED),
        "Connectivity": dbus.UInt32(Conn.NM_CONNECTIVITY_NONE),
        "AllDevices": paths([]),
        "Checkpoints": paths([]),
        "PrimaryConnection": dbus.ObjectPath("/"),
        "PrimaryConnectionType": dbus.String(""),
        "ActivatingConnection": dbus.ObjectPath("/"),
        "Metered": dbus.UInt32(0),
        "Capabilities": dbus.Array([], signature="u"),
        "ConnectivityCheckAvailable": dbus.Boolean(True),
        "ConnectivityCheckEnabled": dbus.Boolean(True),
        "ConnectivityCheckUri": dbus.String("http://nmcheck.gnome.org/check_network_status.txt"),
        "GlobalDnsConfiguration": dbus.Dictionary({}, signature="sv"),
        "RadioFlags": dbus.UInt32(0x1),
        "WimaxEnabled": dbus.Boolean(False),
        "WimaxHardwareEnabled": dbus.Boolean(False),
    })
    nm.AddMethods(NM_IFACE, [
        ("ActivateConnection", "ooo", "o",
         lambda o, c, d, s: dbus.ObjectPath(w.activate(str(c), str(d), str(s), user=True))),
        ("DeactivateConnection", "o", "", lambda o, ac: deactivate_connection(w, str(ac))),
        ("AddAndActivateConnection", "a{sa{sv}}oo", "oo",
         lambda o, s, d, sp: add_and_activate(w, s, str(d), str(sp), "disk")[:2]),
        ("AddAndActivateConnection2", "a{sa{sv}}ooa{sv}", "ooa{sv}",
         lambda o, s, d, sp, opts: add_and_activate(w, s, str(d), str(sp),
                                                    str(opts.get("persist", "disk")))),
        ("GetDevices", "", "ao", lambda o: paths(d.path for d in w.devices.values())),
        ("GetAllDevices", "", "ao", lambda o: paths(d.path for d in w.devices.values())),
        ("GetDeviceByIpIface", "s", "o", lambda o, name: device_by_iface(w, str(name))),
        ("CheckConnectivity", "", "u", lambda o: o.props[NM_IFACE]["Connectivity"]),
        ("Enable", "b", "", lambda o, on: enable_networking(bool(on))),
    ])
    settings = obj(SETTINGS_PATH)
    settings.AddMethods(SETTINGS_IFACE, [
        ("AddConnection", "a{sa{sv}}", "o",
         lambda o, s: dbus.ObjectPath(w.add_profile(s, unsaved=False).path)),
        ("AddConnectionUnsaved", "a{sa{sv}}", "o",
         lambda o, s: dbus.ObjectPath(w.add_profile(s, unsaved=True).path)),
        ("AddConnection2", "a{sa{sv}}ua{sv}", "oa{sv}",
         lambda o, s, f, a: add_connection2(w, s, int(f))),
        ("GetConnectionByUuid", "s", "o", lambda o, u: connection_by_uuid(w, str(u))),
        ("ReloadConnections", "", "b", lambda o: dbus.Boolean(True)),
    ])
    if parameters.get("loopback", True):
        add_loopback(w)
    if parameters.get("ethernet", False):
        add_ethernet(w, parameters)
    add_wifi(w, parameters)
    for ap in w.radio:
        w.show(ap)
    set_props(NM_PATH, NM_IFACE, {"AllDevices": paths(w.devices)})
    w.refresh_manager()


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


def interface_flags(dev: Device) -> dbus.UInt32:
    return dbus.UInt32(0x10003 if dev.carrier else 0x1)  # UP | LOWER_UP | CARRIER, or just UP


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


# ------------------------------------------------------------------------------------------
# Manager and settings methods that need more than one line


def deactivate_connection(w: World, ac: str) -> None:
    for dev in w.devices.values():
        act = dev.activation
        if act is not None and not act.gone and act.ac == ac:
            act.profile.blocked = "user"  # NetworkManager does not bring it back by itself
            w.deactivate(act, Reason.USER_REQUESTED, AcReason.USER_DISCONNECTED)
            return
    raise error(E_NOT_ACTIVE, "The connection was not active.")


def add_and_activate(w: World, settings: dict[str, Any], dev: str, specific: str,
                     persist: str) -> tuple[dbus.ObjectPath, dbus.ObjectPath, dbus.Dictionary]:
    if persist not in ("disk", "memory", "volatile"):
        raise error(E_INVALID_ARGUMENTS, f"invalid persist option '{persist}'")
    profile = w.add_profile(complete_profile(w, settings, specific), unsaved=persist != "disk")
    try:
        ac = w.activate(profile.path, dev, specific, user=True)
    except dbus.exceptions.DBusException:
        w.delete_profile(profile)
        raise
    return dbus.ObjectPath(profile.path), dbus.ObjectPath(ac), dbus.Dictionary({}, signature="sv")


def add_connection2(w: World, settings: dict[str, Any], flags: int
                    ) -> tuple[dbus.ObjectPath, dbus.Dictionary]:
    if bool(flags & _TO_DISK) == bool(flags & _IN_MEMORY):
        raise error(E_SETTINGS_INVALID_ARGUMENTS, "Requires either to-disk (0x1) or in-memory "
                                                  "(0x2) flags")
    profile = w.add_profile(settings, unsaved=not flags & _TO_DISK)
    if flags & _BLOCK_AUTOCONNECT:
        profile.blocked = "flag"
    return dbus.ObjectPath(profile.path), dbus.Dictionary({}, signature="sv")


def device_by_iface(w: World, name: str) -> dbus.ObjectPath:
    for dev in w.devices.values():
        if dev.iface == name:
            return dbus.ObjectPath(dev.path)
    raise error(E_UNKNOWN_DEVICE, f"No device found for the requested iface '{name}'.")


def connection_by_uuid(w: World, conn_uuid: str) -> dbus.ObjectPath:
    for profile in w.profiles.values():
        if profile.uuid == conn_uuid:
            return dbus.ObjectPath(profile.path)
    raise error(E_INVALID_CONNECTION, "No connection with the UUID was found.")


def enable_networking(on: bool) -> None:
    if bool(obj(NM_PATH).props[NM_IFACE]["NetworkingEnabled"]) == on:
        raise error(E_ALREADY, "Already enabled" if on else "Already disabled")
    set_props(NM_PATH, NM_IFACE, {"NetworkingEnabled": dbus.Boolean(on)})


# ------------------------------------------------------------------------------------------
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
    return dbus.ObjectPath(world().add_network(json.loads(spec)))


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
