"""NetworkManager's D-Bus vocabulary, and the helpers that touch dbusmock's objects.

Bus, object paths and interface names (mostly those of dbusmock's ``networkmanager``
template), the state enums, the NMDeviceStateReason and NMActiveConnectionStateReason values
and the error names this mock uses; and what every other module needs to reach the bus:
``obj`` (a mock object by path), ``set_props`` (store properties, emit PropertiesChanged with
those that changed), ``signature_of`` (the D-Bus type a value arrived with), ``error``,
``paths``, ``boottime_ms``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import dbus
import dbusmock
from dbusmock.templates import networkmanager as upstream

BUS_NAME = upstream.BUS_NAME
MAIN_OBJ = upstream.MAIN_OBJ

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
