"""One BLE advertisement (``org.bluez.LEAdvertisement1``) and its legacy 31-byte budget."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from sdbus import (
    DbusInterfaceCommonAsync,
    DbusPropertyEmitsChangeFlag,
    DbusUnprivilegedFlag,
    SdBus,
    dbus_method_async,
    dbus_property_async,
    get_default_bus,
)

from gatewayd.ble.gatt import (
    BASE_UUID_SUFFIX,
    DEFAULT_ADV_PATH,
    LE_ADVERTISEMENT,
    CallerGuard,
    normalize_uuid,
)

# A legacy advertising PDU carries 31 bytes of AD structures. bluetoothd builds them from the
# advertisement's properties and refuses ones that do not fit (bookworm's 5.66); newer versions
# switch to extended advertising where the controller can, which many phones do not scan for.
# 5.66 also has no ScanResponse* properties: only LocalName goes into the scan response.
LEGACY_ADV_MAX = 31


def _uuid_ad_size(value: str) -> int:
    """Bytes a UUID takes in AD data: SIG-base UUIDs shrink to 16 or 32 bits."""
    full = normalize_uuid(value)
    if full.endswith(BASE_UUID_SUFFIX):
        return 2 if full.startswith("0000") else 4
    return 16


log = logging.getLogger(__name__)


class Advertisement(DbusInterfaceCommonAsync, interface_name=LE_ADVERTISEMENT):
    """A connectable (``peripheral``) or ``broadcast`` LE advertisement.

    ``service_data`` maps UUIDs to bytes. ``local_name`` goes into the scan response on
    bluetoothd (>= 5.65 leaves it out when empty). ``update()`` changes the data while
    registered: bluetoothd re-programs the controller on PropertiesChanged; BlueZoo shows the
    change to scanners at their next scan pass.
    """

    def __init__(self, *, service_uuids: Sequence[str] = (),
                 service_data: Mapping[str, bytes] | None = None, local_name: str = "",
                 discoverable: bool = True,
                 adv_type: Literal["peripheral", "broadcast"] = "peripheral",
                 path: str = DEFAULT_ADV_PATH,
                 on_release: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.path = path
        self.adv_type = adv_type
        self.service_uuids = [normalize_uuid(u) for u in service_uuids]
        self.service_data = {normalize_uuid(k): bytes(v)
                             for k, v in (service_data or {}).items()}
        self.local_name = local_name
        self.discoverable = discoverable
        self._release_listeners: list[Callable[[], None]] = []
        if on_release is not None:
            self._release_listeners.append(on_release)
        self._guard = CallerGuard()
        self._handle: Any = None
        self._closed = False

    @property
    def exported(self) -> bool:
        return self._handle is not None

    def export(self, bus: SdBus | None = None) -> None:
        """Put the advertisement on the bus (idempotent; once per object)."""
        if self._handle is not None:
            return
        if self._closed:
            raise RuntimeError("an unexported Advertisement cannot be exported again (sdbus); "
                               "build a new one")
        self._handle = self.export_to_dbus(self.path, bus or get_default_bus())

    def unexport(self) -> None:
        """Take it off the bus for good; unregister first."""
        if self._handle is not None:
            self._handle.stop()
            self._handle = None
            self._closed = True
        self._guard.owner = None

    def legacy_length(self) -> int:
        """Bytes of the advertising PDU bluetoothd will build (flags, UUIDs, service data)."""
        size = 3  # the Flags AD structure: a discoverable peripheral always has one
        by_size: dict[int, int] = {}
        for value in self.service_uuids:
            width = _uuid_ad_size(value)
            by_size[width] = by_size.get(width, 0) + 1
        size += sum(2 + width * count for width, count in by_size.items())
        size += sum(2 + _uuid_ad_size(k) + len(v) for k, v in self.service_data.items())
        return size

    async def update(self, *, service_uuids: Sequence[str] | None = None,
                     service_data: Mapping[str, bytes] | None = None,
                     local_name: str | None = None) -> None:
        """Change what is advertised, registered or not."""
        changed: dict[str, tuple[str, Any]] = {}
        if service_uuids is not None:
            self.service_uuids = [normalize_uuid(u) for u in service_uuids]
            changed["ServiceUUIDs"] = ("as", self.service_uuids)
        if service_data is not None:
            self.service_data = {normalize_uuid(k): bytes(v) for k, v in service_data.items()}
            changed["ServiceData"] = ("a{sv}", self._service_data_variant())
        if local_name is not None:
            self.local_name = local_name
            changed["LocalName"] = ("s", local_name)
        if changed and self.exported:
            self.properties_changed.emit((LE_ADVERTISEMENT, changed, []))

    def _service_data_variant(self) -> dict[str, tuple[str, bytes]]:
        return {k: ("ay", v) for k, v in self.service_data.items()}

    @dbus_property_async("s")
    def Type(self) -> str:
        return self.adv_type

    @dbus_property_async("as", flags=DbusPropertyEmitsChangeFlag)
    def ServiceUUIDs(self) -> list[str]:
        return self.service_uuids

    @dbus_property_async("a{sv}", flags=DbusPropertyEmitsChangeFlag)
    def ServiceData(self) -> dict[str, tuple[str, bytes]]:
        return self._service_data_variant()

    @dbus_property_async("s", flags=DbusPropertyEmitsChangeFlag)
    def LocalName(self) -> str:
        return self.local_name

    # Without it bluetoothd sets the discoverable AD flag only while the adapter itself is
    # discoverable; BlueZoo does not report the advertisement at all unless the adapter is.
    @dbus_property_async("b")
    def Discoverable(self) -> bool:
        return self.discoverable

    # ManufacturerData is left out on purpose. BlueZoo: its Device1.ManufacturerData has the
    # wrong signature (a{sv} instead of a{qv}) and would break on real company IDs.

    @dbus_method_async(flags=DbusUnprivilegedFlag)
    async def Release(self) -> None:
        # bluetoothd dropped the advertisement itself (adapter gone, Timeout). BlueZoo never
        # calls this.
        self._guard.check()
        self._guard.owner = None
        log.info("bluetoothd released advertisement %s", self.path)
        for listener in list(self._release_listeners):
            listener()
