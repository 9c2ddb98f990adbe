"""NetworkManager's D-Bus interfaces: only the members the hub calls (ap.py, ble_commission).

python-sdbus-networkmanager declares all of NetworkManager's API, and importing any of it
runs its package's ``__init__``: 64 modules (every device type, every settings dataclass),
2.3 MB of a minimal hub's RSS of which the hub uses a dozen methods and properties. These
are the same declarations (names and signatures from NetworkManager's D-Bus API, as that
library has them), on sdbus directly. Values stay raw D-Bus values: settings are
``{group: {key: (signature, value)}}``.
"""

from __future__ import annotations

from typing import Any

from sdbus import DbusInterfaceCommonAsync, SdBus, dbus_method_async, dbus_property_async

SERVICE = "org.freedesktop.NetworkManager"
Settings = dict[str, dict[str, tuple[str, Any]]]


class _Manager(DbusInterfaceCommonAsync, interface_name="org.freedesktop.NetworkManager"):
    @dbus_method_async(result_signature="ao")
    async def get_devices(self) -> list[str]:
        raise NotImplementedError

    @dbus_method_async(input_signature="ooo", result_signature="o")
    async def activate_connection(self, connection: str, device: str,
                                  specific_object: str) -> str:
        raise NotImplementedError

    @dbus_method_async("o")
    async def deactivate_connection(self, active_connection: str) -> None:
        raise NotImplementedError

    @dbus_property_async("o")
    def primary_connection(self) -> str:
        raise NotImplementedError


class NetworkManager(_Manager):
    def __init__(self, bus: SdBus) -> None:
        super().__init__()
        self._connect(SERVICE, "/org/freedesktop/NetworkManager", bus)


class _Settings(DbusInterfaceCommonAsync,
                interface_name="org.freedesktop.NetworkManager.Settings"):
    @dbus_method_async(result_signature="ao")
    async def list_connections(self) -> list[str]:
        raise NotImplementedError

    @dbus_method_async(input_signature="a{sa{sv}}", result_signature="o")
    async def add_connection(self, connection: Settings) -> str:
        raise NotImplementedError

    @dbus_method_async(input_signature="a{sa{sv}}", result_signature="o")
    async def add_connection_unsaved(self, connection: Settings) -> str:
        raise NotImplementedError


class NetworkManagerSettings(_Settings):
    def __init__(self, bus: SdBus) -> None:
        super().__init__()
        self._connect(SERVICE, "/org/freedesktop/NetworkManager/Settings", bus)


class _Connection(DbusInterfaceCommonAsync,
                  interface_name="org.freedesktop.NetworkManager.Settings.Connection"):
    @dbus_method_async(result_signature="a{sa{sv}}")
    async def get_settings(self) -> Settings:
        raise NotImplementedError

    @dbus_method_async()
    async def delete(self) -> None:
        raise NotImplementedError


class NetworkConnectionSettings(_Connection):
    def __init__(self, path: str, bus: SdBus) -> None:
        super().__init__()
        self._connect(SERVICE, path, bus)


class _Device(DbusInterfaceCommonAsync, interface_name="org.freedesktop.NetworkManager.Device"):
    @dbus_property_async("u")
    def device_type(self) -> int:
        raise NotImplementedError

    @dbus_property_async("s")
    def interface(self) -> str:
        raise NotImplementedError

    @dbus_property_async("u")
    def state(self) -> int:
        raise NotImplementedError

    @dbus_property_async("o")
    def active_connection(self) -> str:
        raise NotImplementedError


class NetworkDeviceGeneric(_Device):
    def __init__(self, path: str, bus: SdBus) -> None:
        super().__init__()
        self._connect(SERVICE, path, bus)


class _Wireless(DbusInterfaceCommonAsync,
                interface_name="org.freedesktop.NetworkManager.Device.Wireless"):
    @dbus_method_async("a{sv}")
    async def request_scan(self, options: dict[str, tuple[str, Any]]) -> None:
        raise NotImplementedError

    @dbus_method_async(result_signature="ao")
    async def get_all_access_points(self) -> list[str]:
        raise NotImplementedError


class NetworkDeviceWireless(_Device, _Wireless):
    def __init__(self, path: str, bus: SdBus) -> None:
        super().__init__()
        self._connect(SERVICE, path, bus)


class _AccessPoint(DbusInterfaceCommonAsync,
                   interface_name="org.freedesktop.NetworkManager.AccessPoint"):
    @dbus_property_async("ay")
    def ssid(self) -> bytes:
        raise NotImplementedError

    @dbus_property_async("y")
    def strength(self) -> int:
        raise NotImplementedError

    @dbus_property_async("u")
    def flags(self) -> int:
        raise NotImplementedError

    @dbus_property_async("u")
    def wpa_flags(self) -> int:
        raise NotImplementedError

    @dbus_property_async("u")
    def rsn_flags(self) -> int:
        raise NotImplementedError


class AccessPoint(_AccessPoint):
    def __init__(self, path: str, bus: SdBus) -> None:
        super().__init__()
        self._connect(SERVICE, path, bus)


class _Active(DbusInterfaceCommonAsync,
              interface_name="org.freedesktop.NetworkManager.Connection.Active"):
    @dbus_property_async("o")
    def ip4_config(self) -> str:
        raise NotImplementedError


class ActiveConnection(_Active):
    def __init__(self, path: str, bus: SdBus) -> None:
        super().__init__()
        self._connect(SERVICE, path, bus)


class _IPv4Config(DbusInterfaceCommonAsync,
                  interface_name="org.freedesktop.NetworkManager.IP4Config"):
    @dbus_property_async("aa{sv}")
    def address_data(self) -> list[dict[str, tuple[str, Any]]]:
        raise NotImplementedError


class IPv4Config(_IPv4Config):
    def __init__(self, path: str, bus: SdBus) -> None:
        super().__init__()
        self._connect(SERVICE, path, bus)
