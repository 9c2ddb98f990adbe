"""A small async BLE GATT peripheral on BlueZ's D-Bus API (sdbus).

The layer the Improv Wi-Fi and secure pairing services sit on:

- ``Characteristic(uuid, flags, read=..., write=...)`` is one ``org.bluez.GattCharacteristic1``
  object. ``read`` returns the whole value (this layer serves long reads by offset), ``write``
  receives each ATT write as bluetoothd delivers it, and ``await char.notify(value)`` sends a
  notification to the subscribed centrals.
- ``Service(uuid, [characteristics])`` and ``Application([services])`` build the object tree that
  ``org.bluez.GattManager1.RegisterApplication`` reads through ``ObjectManager``.
- ``Advertisement(...)`` is one ``org.bluez.LEAdvertisement1``.
- ``register_application``/``unregister_application`` and ``register_advertisement``/
  ``unregister_advertisement`` talk to the adapter's managers; ``Peripheral`` keeps an application
  (and, while wanted, an advertisement) registered across bluetoothd restarts.

The same code runs against bluetoothd on a hub and against BlueZoo in tests and in
``gatewayd --simulate``. Places where the two behave differently are marked ``BlueZoo:``.

sdbus binds a bus to the event loop that first uses it and an object can be exported only once
(0.14): create the bus and the objects inside the loop that serves them, and build new objects
to start over rather than re-exporting old ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid as uuid_mod
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sdbus
from sdbus import (
    DbusFailedError,
    DbusInterfaceCommonAsync,
    DbusNameHasNoOwnerError,
    DbusObjectManagerInterfaceAsync,
    DbusPropertyConstFlag,
    DbusPropertyEmitsChangeFlag,
    DbusServiceUnknownError,
    DbusUnknownMethodError,
    DbusUnknownObjectError,
    DbusUnprivilegedFlag,
    SdBus,
    dbus_method_async,
    dbus_property_async,
    get_default_bus,
)
from sdbus.sd_bus_internals import SdBusMessage, SdBusSlot
from sdbus_async.dbus_daemon import FreedesktopDbus

log = logging.getLogger(__name__)

BLUEZ_SERVICE = "org.bluez"
GATT_MANAGER = "org.bluez.GattManager1"
GATT_SERVICE = "org.bluez.GattService1"
GATT_CHARACTERISTIC = "org.bluez.GattCharacteristic1"
LE_ADVERTISING_MANAGER = "org.bluez.LEAdvertisingManager1"
LE_ADVERTISEMENT = "org.bluez.LEAdvertisement1"
ADAPTER = "org.bluez.Adapter1"
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"

DEFAULT_APP_PATH = "/io/gatewayd/ble/app"
DEFAULT_ADV_PATH = "/io/gatewayd/ble/adv0"

BASE_UUID_SUFFIX = "-0000-1000-8000-00805f9b34fb"
ATT_DEFAULT_MTU = 23
# A legacy advertising PDU carries 31 bytes of AD structures. bluetoothd builds them from the
# advertisement's properties and refuses ones that do not fit (bookworm's 5.66); newer versions
# switch to extended advertising where the controller can, which many phones do not scan for.
# 5.66 also has no ScanResponse* properties: only LocalName goes into the scan response.
LEGACY_ADV_MAX = 31

Flag = Literal[
    "broadcast", "read", "write-without-response", "write", "notify", "indicate",
    "authenticated-signed-writes", "extended-properties", "reliable-write",
    "writable-auxiliaries", "encrypt-read", "encrypt-write", "encrypt-authenticated-read",
    "encrypt-authenticated-write", "secure-read", "secure-write", "authorize",
]
_READ_FLAGS = frozenset({"read", "encrypt-read", "encrypt-authenticated-read", "secure-read"})
_WRITE_FLAGS = frozenset({"write", "write-without-response", "reliable-write",
                          "authenticated-signed-writes", "encrypt-write",
                          "encrypt-authenticated-write", "secure-write"})
_NOTIFY_FLAGS = frozenset({"notify", "indicate"})
_KNOWN_FLAGS = _READ_FLAGS | _WRITE_FLAGS | _NOTIFY_FLAGS | {
    "broadcast", "extended-properties", "writable-auxiliaries", "authorize"}


# --- errors -------------------------------------------------------------------------------
# sdbus allows one class per D-Bus interface name and one exception class per error name in a
# process. This module owns org.bluez.GattManager1, LEAdvertisingManager1, GattService1,
# GattCharacteristic1, LEAdvertisement1 and the org.bluez.Error.* names below: import them from
# here; for org.freedesktop.DBus use sdbus_async.dbus_daemon.FreedesktopDbus as this module does.
# The errors are both what bluetoothd answers us with and what our handlers raise to answer an
# ATT request.

class BluezError(DbusFailedError):
    """``org.bluez.Error.Failed``; the base of the other BlueZ errors here.

    Raised from a read/write handler, bluetoothd answers the ATT request with the application
    error code in the message if it is one (``BluezError("0x80")`` .. ``"0x9f"``), else 0x80.
    """

    dbus_error_name = "org.bluez.Error.Failed"


class NotPermittedError(BluezError):
    """ATT "read/write not permitted"."""

    dbus_error_name = "org.bluez.Error.NotPermitted"


class NotAuthorizedError(BluezError):
    dbus_error_name = "org.bluez.Error.NotAuthorized"


class InvalidValueLengthError(BluezError):
    dbus_error_name = "org.bluez.Error.InvalidValueLength"


class InvalidOffsetError(BluezError):
    dbus_error_name = "org.bluez.Error.InvalidOffset"


class InProgressError(BluezError):
    dbus_error_name = "org.bluez.Error.InProgress"


class NotSupportedError(BluezError):
    dbus_error_name = "org.bluez.Error.NotSupported"


class DoesNotExistError(BluezError):
    dbus_error_name = "org.bluez.Error.DoesNotExist"


class AlreadyExistsError(BluezError):
    dbus_error_name = "org.bluez.Error.AlreadyExists"


class InvalidArgumentsError(BluezError):
    dbus_error_name = "org.bluez.Error.InvalidArguments"


class InvalidLengthError(BluezError):
    dbus_error_name = "org.bluez.Error.InvalidLength"


class NotReadyError(BluezError):
    dbus_error_name = "org.bluez.Error.NotReady"


# Unregistering when bluetoothd, the adapter or the registration is already gone has nothing
# left to undo.
_GONE = (DoesNotExistError, DbusServiceUnknownError, DbusNameHasNoOwnerError,
         DbusUnknownObjectError, DbusUnknownMethodError)


# --- helpers --------------------------------------------------------------------------------

def adapter_path(adapter: str) -> str:
    """``hci0`` or ``/org/bluez/hci0`` -> ``/org/bluez/hci0``."""
    return adapter if adapter.startswith("/") else f"/org/bluez/{adapter}"


def normalize_uuid(value: str) -> str:
    """A 16/32-bit alias (``"2a00"``, ``"0x4677"``) or 128-bit UUID as lowercase 128-bit text."""
    text = value.strip().lower().removeprefix("0x")
    if len(text) in (4, 8):
        return f"{int(text, 16):08x}{BASE_UUID_SUFFIX}"
    return str(uuid_mod.UUID(text))


def _uuid_ad_size(value: str) -> int:
    """Bytes a UUID takes in AD data: SIG-base UUIDs shrink to 16 or 32 bits."""
    full = normalize_uuid(value)
    if full.endswith(BASE_UUID_SUFFIX):
        return 2 if full.startswith("0000") else 4
    return 16


def _option(options: Mapping[str, tuple[str, Any]], key: str, default: Any) -> Any:
    # sdbus hands a{sv} over as {key: (signature, value)}.
    entry = options.get(key)
    return default if entry is None else entry[1]


@dataclass(frozen=True, slots=True)
class GattRequest:
    """What bluetoothd tells a server about one read or write."""

    device: str
    """Object path of the remote device (``/org/bluez/hci0/dev_XX_...``): one per connection."""
    mtu: int
    """The connection's ATT MTU. A notification carries at most ``mtu - 3`` bytes."""
    offset: int = 0
    link: str = ""
    prepare_authorize: bool = False

    @classmethod
    def from_options(cls, options: Mapping[str, tuple[str, Any]]) -> GattRequest:
        # bluetoothd sends "offset" only when non-zero and "mtu" since 5.62; the ATT minimum
        # is the only safe assumption without it.
        return cls(device=str(_option(options, "device", "")),
                   mtu=int(_option(options, "mtu", ATT_DEFAULT_MTU)),
                   offset=int(_option(options, "offset", 0)),
                   link=str(_option(options, "link", "")),
                   prepare_authorize=bool(_option(options, "prepare-authorize", False)))

    @property
    def max_notify_len(self) -> int:
        return self.mtu - 3


ReadHandler = Callable[[GattRequest], Awaitable[bytes]]
WriteHandler = Callable[[bytes, GattRequest], Awaitable[None]]
SubscribeHandler = Callable[[bool], Awaitable[None]]


class _CallerGuard:
    """Only the bluetoothd we registered with may call into our objects.

    bluetoothd's D-Bus policy already limits who may send GattCharacteristic1 calls, but any
    process allowed to could otherwise forge a "remote" write (Wi-Fi credentials, pairing
    messages) without being anywhere near the hub's radio.
    """

    def __init__(self) -> None:
        self.owner: str | None = None

    def check(self) -> None:
        sender = sdbus.get_current_message().sender
        if self.owner is None or sender != self.owner:
            log.warning("refusing a GATT call from %s (bluetoothd is %s)", sender, self.owner)
            raise NotPermittedError("caller is not the registered bluetoothd")


async def _call_handler(what: str, coro: Awaitable[Any]) -> Any:
    try:
        return await coro
    except DbusFailedError:
        raise
    except Exception as exc:
        # Without this, sdbus would answer with its generic error and the cause would be lost.
        log.exception("%s failed", what)
        raise BluezError("0x80") from exc


# --- GATT objects ---------------------------------------------------------------------------

class Characteristic(DbusInterfaceCommonAsync, interface_name=GATT_CHARACTERISTIC):
    """One characteristic: uuid, flags, async read/write handlers, ``notify()``.

    ``read(request) -> bytes`` returns the whole value; long reads (bluetoothd asks again with
    an offset) are served from it. Without ``read``, reads return the last notified or initial
    ``value``. ``write(value, request)`` gets each write as it arrives (write requests, commands
    and the parts of a long write, each with its offset). ``on_subscribe(True/False)`` is told
    when the first central subscribes and when the last one unsubscribes.
    """

    def __init__(self, uuid: str, flags: Iterable[Flag], *, read: ReadHandler | None = None,
                 write: WriteHandler | None = None,
                 on_subscribe: SubscribeHandler | None = None, value: bytes = b"") -> None:
        super().__init__()
        self.uuid = normalize_uuid(uuid)
        self.flags: tuple[str, ...] = tuple(flags)
        unknown = set(self.flags) - _KNOWN_FLAGS
        if unknown:
            raise ValueError(f"unknown GATT characteristic flags: {sorted(unknown)}")
        if write is not None and not _WRITE_FLAGS & set(self.flags):
            raise ValueError(f"{self.uuid}: a write handler needs a write flag")
        if write is None and _WRITE_FLAGS & set(self.flags):
            raise ValueError(f"{self.uuid}: write flags need a write handler")
        self._read = read
        self._write = write
        self._on_subscribe = on_subscribe
        self._value = bytes(value)
        self._notifying = False
        self._service_path = ""
        self._exported = False
        self._guard = _CallerGuard()

    @property
    def notifying(self) -> bool:
        """Whether at least one central is subscribed."""
        return self._notifying

    async def notify(self, value: bytes) -> bool:
        """Send ``value`` as a notification/indication; False when nobody is subscribed.

        bluetoothd cuts each notification to the connection's ``mtu - 3`` bytes (the MTU
        reaches us in every ``GattRequest``): chunk longer messages yourself.
        BlueZoo: delivers any length and always uses MTU 512 unless told otherwise.
        """
        if not _NOTIFY_FLAGS & set(self.flags):
            raise RuntimeError(f"{self.uuid} has neither notify nor indicate")
        if not self._notifying or not self._exported:
            return False
        # bluetoothd sends a notification for every PropertiesChanged on Value, also when
        # the value repeats.
        await self.Value.set_async(bytes(value))
        return True

    # D-Bus interface (names are BlueZ's).

    @dbus_property_async("s", flags=DbusPropertyConstFlag)
    def UUID(self) -> str:
        return self.uuid

    @dbus_property_async("o", flags=DbusPropertyConstFlag)
    def Service(self) -> str:
        return self._service_path

    @dbus_property_async("as", flags=DbusPropertyConstFlag)
    def Flags(self) -> list[str]:
        return list(self.flags)

    @dbus_property_async("ay", flags=DbusPropertyEmitsChangeFlag)
    def Value(self) -> bytes:
        return self._value

    @Value.setter_private
    def _set_value(self, value: bytes) -> None:
        self._value = value

    # "Notifying" is optional for servers and deliberately absent. BlueZoo: its link calls our
    # StartNotify (and starts forwarding our Value changes to the new connection) only while
    # our cached Notifying is false, and it never calls StopNotify on disconnect; with the
    # property a reconnecting phone would never get notifications again.

    @dbus_method_async(input_signature="a{sv}", result_signature="ay",
                       flags=DbusUnprivilegedFlag)
    async def ReadValue(self, options: dict[str, tuple[str, Any]]) -> bytes:
        self._guard.check()
        if not _READ_FLAGS & set(self.flags):
            raise NotPermittedError("read not permitted")
        request = GattRequest.from_options(options)
        if self._read is None:
            value = self._value
        else:
            value = bytes(await _call_handler(f"read {self.uuid}", self._read(request)))
        if request.offset > len(value):
            raise InvalidOffsetError("offset past the end of the value")
        return value[request.offset:]

    @dbus_method_async(input_signature="aya{sv}", flags=DbusUnprivilegedFlag)
    async def WriteValue(self, value: bytes, options: dict[str, tuple[str, Any]]) -> None:
        self._guard.check()
        if self._write is None:
            raise NotPermittedError("write not permitted")
        request = GattRequest.from_options(options)
        await _call_handler(f"write {self.uuid}", self._write(bytes(value), request))

    @dbus_method_async(flags=DbusUnprivilegedFlag)
    async def StartNotify(self) -> None:
        self._guard.check()
        if not _NOTIFY_FLAGS & set(self.flags):
            raise NotSupportedError("notifications not supported")
        # bluetoothd calls StartNotify for every subscribing central and StopNotify only when
        # the last one leaves, so this is a level, not a count.
        if self._notifying:
            return
        self._notifying = True
        if self._on_subscribe is not None:
            await _call_handler(f"subscribe {self.uuid}", self._on_subscribe(True))

    @dbus_method_async(flags=DbusUnprivilegedFlag)
    async def StopNotify(self) -> None:
        self._guard.check()
        if not self._notifying:
            return
        self._notifying = False
        if self._on_subscribe is not None:
            await _call_handler(f"unsubscribe {self.uuid}", self._on_subscribe(False))

    @dbus_method_async(flags=DbusUnprivilegedFlag)
    async def Confirm(self) -> None:
        # bluetoothd calls this when a central confirms an indication. BlueZoo: calls it after
        # every notification it forwards, indication or not.
        self._guard.check()


class Service(DbusInterfaceCommonAsync, interface_name=GATT_SERVICE):
    """A primary (by default) service holding characteristics."""

    def __init__(self, uuid: str, characteristics: Sequence[Characteristic],
                 primary: bool = True) -> None:
        super().__init__()
        self.uuid = normalize_uuid(uuid)
        self.primary = primary
        self.characteristics = tuple(characteristics)

    @dbus_property_async("s", flags=DbusPropertyConstFlag)
    def UUID(self) -> str:
        return self.uuid

    @dbus_property_async("b", flags=DbusPropertyConstFlag)
    def Primary(self) -> bool:
        return self.primary


class Application(DbusObjectManagerInterfaceAsync):
    """The object tree handed to ``RegisterApplication``: ``<path>/serviceN/charM``.

    The tree is fixed once exported: bluetoothd reads it at registration (and drops a service
    whose objects disappear; BlueZoo drops the whole application).
    """

    def __init__(self, services: Sequence[Service], path: str = DEFAULT_APP_PATH) -> None:
        super().__init__()
        self.path = path
        self.services = tuple(services)
        self._guard = _CallerGuard()
        self._handles: list[Any] = []
        self._exported = False
        self._closed = False
        for service in self.services:
            for char in service.characteristics:
                char._guard = self._guard

    @property
    def exported(self) -> bool:
        return self._exported

    def export(self, bus: SdBus | None = None) -> None:
        """Put the tree on the bus (idempotent; once per object, see the module docstring)."""
        if self._exported:
            return
        if self._closed:
            raise RuntimeError("an unexported Application cannot be exported again (sdbus); "
                               "build a new one")
        bus = bus or get_default_bus()
        self._handles.append(self.export_to_dbus(self.path, bus))
        for i, service in enumerate(self.services):
            service_path = f"{self.path}/service{i}"
            self._handles.append(self.export_with_manager(service_path, service, bus))
            for j, char in enumerate(service.characteristics):
                char._service_path = service_path
                self._handles.append(
                    self.export_with_manager(f"{service_path}/char{j}", char, bus))
                char._exported = True
        self._exported = True

    def unexport(self) -> None:
        """Take the tree off the bus for good; unregister first."""
        for service in self.services:
            for char in service.characteristics:
                char._exported = False
        for handle in reversed(self._handles):
            handle.stop()
        self._handles.clear()
        self._guard.owner = None
        self._closed = self._closed or self._exported
        self._exported = False


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
        self._guard = _CallerGuard()
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


# --- registration ---------------------------------------------------------------------------

class _GattManagerProxy(DbusInterfaceCommonAsync, interface_name=GATT_MANAGER):
    @dbus_method_async(input_signature="oa{sv}")
    async def RegisterApplication(self, application: str,
                                  options: dict[str, tuple[str, Any]]) -> None:
        raise NotImplementedError

    @dbus_method_async(input_signature="o")
    async def UnregisterApplication(self, application: str) -> None:
        raise NotImplementedError


class _LEAdvertisingManagerProxy(DbusInterfaceCommonAsync, interface_name=LE_ADVERTISING_MANAGER):
    @dbus_method_async(input_signature="oa{sv}")
    async def RegisterAdvertisement(self, advertisement: str,
                                    options: dict[str, tuple[str, Any]]) -> None:
        raise NotImplementedError

    @dbus_method_async(input_signature="o")
    async def UnregisterAdvertisement(self, advertisement: str) -> None:
        raise NotImplementedError


async def bluez_owner(bus: SdBus | None = None) -> str | None:
    """The unique bus name of the running bluetoothd, or None."""
    try:
        return await FreedesktopDbus(bus or get_default_bus()).get_name_owner(BLUEZ_SERVICE)
    except DbusNameHasNoOwnerError:
        return None


async def register_application(app: Application, adapter: str = "hci0",
                               bus: SdBus | None = None) -> None:
    """Export ``app`` if needed and register it with the adapter's GattManager1.

    BlueZoo: registering the same path twice replaces the first registration (bluetoothd
    answers AlreadyExists), and a failure inside its handler is logged to its log but answered
    as success.
    """
    bus = bus or get_default_bus()
    app.export(bus)
    app._guard.owner = await bluez_owner(bus)
    manager = _GattManagerProxy.new_proxy(BLUEZ_SERVICE, adapter_path(adapter), bus)
    await manager.RegisterApplication(app.path, {})


async def unregister_application(app: Application, adapter: str = "hci0",
                                 bus: SdBus | None = None) -> bool:
    """Unregister ``app``; False if there was nothing registered (or no bluetoothd) to undo.

    BlueZoo: answers success for an application it does not know.
    """
    manager = _GattManagerProxy.new_proxy(BLUEZ_SERVICE, adapter_path(adapter),
                                          bus or get_default_bus())
    try:
        await manager.UnregisterApplication(app.path)
        return True
    except _GONE:
        return False
    finally:
        app._guard.owner = None


async def register_advertisement(adv: Advertisement, adapter: str = "hci0",
                                 bus: SdBus | None = None, *,
                                 allow_extended: bool = False) -> None:
    """Export ``adv`` if needed and register it with the adapter's LEAdvertisingManager1.

    Refuses advertisements that do not fit a legacy PDU unless ``allow_extended``: bluetoothd
    would fail or silently switch to extended advertising, and BlueZoo would accept either.
    """
    if not allow_extended and adv.legacy_length() > LEGACY_ADV_MAX:
        raise ValueError(f"advertisement needs {adv.legacy_length()} bytes, a legacy "
                         f"advertisement holds {LEGACY_ADV_MAX}")
    bus = bus or get_default_bus()
    adv.export(bus)
    adv._guard.owner = await bluez_owner(bus)
    manager = _LEAdvertisingManagerProxy.new_proxy(BLUEZ_SERVICE, adapter_path(adapter), bus)
    await manager.RegisterAdvertisement(adv.path, {})


async def unregister_advertisement(adv: Advertisement, adapter: str = "hci0",
                                   bus: SdBus | None = None) -> bool:
    """Stop advertising ``adv``; False if it was not registered (or no bluetoothd)."""
    manager = _LEAdvertisingManagerProxy.new_proxy(BLUEZ_SERVICE, adapter_path(adapter),
                                                   bus or get_default_bus())
    try:
        await manager.UnregisterAdvertisement(adv.path)
        return True
    except _GONE:
        return False
    finally:
        adv._guard.owner = None


class Peripheral:
    """Keeps ``app`` registered on ``adapter``, and an advertisement while one is set.

    bluetoothd forgets every registration when it restarts, and an adapter that goes away takes
    its registrations along; Peripheral watches org.bluez's owner and the adapter object and
    registers again when they come back. Typical use: ``start()`` at daemon start (no
    bluetoothd yet is fine), ``set_advertisement(adv)`` when a commissioning window opens,
    ``set_advertisement(None)`` when it closes, ``stop()`` at shutdown (also after a failed
    ``start()``).
    """

    def __init__(self, app: Application, adapter: str = "hci0",
                 bus: SdBus | None = None) -> None:
        self.app = app
        self.adapter = adapter
        self.bus = bus
        self._advertisement: Advertisement | None = None
        self._app_owner: str | None = None
        self._adv_owner: str | None = None
        self._registrations = 0
        self._lock = asyncio.Lock()
        self._changed = asyncio.Condition()
        self._wake = asyncio.Event()
        self._adapter_removed = False
        self._slots: list[SdBusSlot] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def registered_with(self) -> str | None:
        """bluetoothd's unique bus name the application is registered with, if it is."""
        return self._app_owner

    @property
    def advertising(self) -> bool:
        return self._adv_owner is not None

    @property
    def registrations(self) -> int:
        """How many times the application has been registered (1 + re-registrations)."""
        return self._registrations

    async def start(self) -> None:
        bus = self.bus = self.bus or get_default_bus()
        self.app.export(bus)
        # Matches first, then the first attempt: a restart in between is not missed.
        self._slots.append(await bus.match_signal_async(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
            "NameOwnerChanged", self._on_name_owner_changed))
        # No sender in these matches: the adapter path and interface identify what we need,
        # whichever process owns org.bluez at the time.
        self._slots.append(await bus.match_signal_async(
            None, "/", OBJECT_MANAGER, "InterfacesAdded", self._on_interfaces_added))
        self._slots.append(await bus.match_signal_async(
            None, "/", OBJECT_MANAGER, "InterfacesRemoved", self._on_interfaces_removed))
        self._task = asyncio.create_task(self._run(), name=f"ble-peripheral-{self.adapter}")
        await self._sync()

    async def wait_registered(self, *, after: int = 0) -> str:
        """Wait until the application, and the advertisement if one is set, are registered,
        by a registration later than the ``after``-th; returns bluetoothd's bus name."""

        def done() -> bool:
            owner = self._app_owner
            return (owner is not None and self._registrations > after
                    and (self._advertisement is None or self._adv_owner == owner))

        async with self._changed:
            await self._changed.wait_for(done)
            assert self._app_owner is not None
            return self._app_owner

    async def set_advertisement(self, adv: Advertisement | None) -> bool:
        """Advertise ``adv`` (replacing the current one) or stop advertising (None).

        Returns whether it is advertising now; without bluetoothd it starts when one appears.
        """
        async with self._lock:
            old = self._advertisement
            if old is not None and old is not adv and self._adv_owner is not None:
                await unregister_advertisement(old, self.adapter, self.bus)
                self._adv_owner = None
            self._advertisement = adv
            if adv is not None and self._on_released not in adv._release_listeners:
                adv._release_listeners.append(self._on_released)
        await self._sync()
        return self.advertising

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for slot in self._slots:
            slot.close()
        self._slots.clear()
        async with self._lock:
            if self._advertisement is not None and self._adv_owner is not None:
                await unregister_advertisement(self._advertisement, self.adapter, self.bus)
            if self._app_owner is not None:
                await unregister_application(self.app, self.adapter, self.bus)
            await self._set_owners(None, None)

    def _on_name_owner_changed(self, message: SdBusMessage) -> None:
        name, _old, _new = message.get_contents()
        if name == BLUEZ_SERVICE:
            self._wake.set()

    def _on_interfaces_added(self, message: SdBusMessage) -> None:
        path, interfaces = message.get_contents()
        if path == adapter_path(self.adapter) and ADAPTER in interfaces:
            self._wake.set()

    def _on_interfaces_removed(self, message: SdBusMessage) -> None:
        # An adapter that goes away (USB dongle, btmgmt) takes its registrations with it,
        # although bluetoothd itself keeps running.
        path, interfaces = message.get_contents()
        if path == adapter_path(self.adapter) and ADAPTER in interfaces:
            self._adapter_removed = True
            self._wake.set()

    def _on_released(self) -> None:
        self._adv_owner = None
        self._wake.set()

    async def _set_owners(self, app_owner: str | None, adv_owner: str | None) -> None:
        self._app_owner, self._adv_owner = app_owner, adv_owner
        async with self._changed:
            self._changed.notify_all()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._sync()
            except Exception:
                log.exception("registering with bluetoothd failed; waiting for it to change")

    async def _sync(self) -> None:
        async with self._lock:
            owner = await bluez_owner(self.bus)
            if self._adapter_removed:
                self._adapter_removed = False
                await self._set_owners(None, None)
            if owner is None:
                if self._app_owner is not None:
                    log.warning("bluetoothd left the bus; waiting for it to come back")
                await self._set_owners(None, None)
                return
            if self._app_owner != owner:
                await self._set_owners(None, None)
                try:
                    await register_application(self.app, self.adapter, self.bus)
                except AlreadyExistsError:
                    pass  # registered with this bluetoothd before we saw it go and come back
                except (DbusUnknownObjectError, DbusUnknownMethodError):
                    # bluetoothd takes its name before its adapters exist; the adapter's
                    # InterfacesAdded wakes us again.
                    log.info("%s not there yet; registering when it appears", self.adapter)
                    return
                self._registrations += 1
                await self._set_owners(owner, None)
                log.info("GATT application %s registered on %s", self.app.path, self.adapter)
            adv = self._advertisement
            if adv is not None and self._adv_owner != owner:
                await register_advertisement(adv, self.adapter, self.bus)
                await self._set_owners(owner, owner)
                log.info("advertising %s on %s", adv.path, self.adapter)
