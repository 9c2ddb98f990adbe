"""A small async BLE GATT peripheral on BlueZ's D-Bus API (sdbus).

The layer the Improv Wi-Fi and secure pairing services sit on:

- ``Characteristic(uuid, flags, read=..., write=...)`` is one ``org.bluez.GattCharacteristic1``
  object. ``read`` returns the whole value (this layer serves long reads by offset), ``write``
  receives each ATT write as bluetoothd delivers it, and ``await char.notify(value)`` sends a
  notification to the subscribed centrals.
- ``Service(uuid, [characteristics])`` and ``Application([services])`` build the object tree that
  ``org.bluez.GattManager1.RegisterApplication`` reads through ``ObjectManager``.
- ``Advertisement(...)`` (:mod:`gatewayd.ble.advertisement`) is one
  ``org.bluez.LEAdvertisement1``.
- :mod:`gatewayd.ble.peripheral` registers them with the adapter's managers; its
  ``Peripheral`` keeps an application (and, while wanted, an advertisement) registered
  across bluetoothd restarts. BlueZ's errors are :mod:`gatewayd.ble.bluez_errors`.

The same code runs against bluetoothd on a hub and against BlueZoo in tests and in
``gatewayd --simulate``. Places where the two behave differently are marked ``BlueZoo:``.

sdbus binds a bus to the event loop that first uses it and an object can be exported only once
(0.14): create the bus and the objects inside the loop that serves them, and build new objects
to start over rather than re-exporting old ones.
"""

from __future__ import annotations

import logging
import uuid as uuid_mod
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sdbus
from sdbus import (
    DbusFailedError,
    DbusInterfaceCommonAsync,
    DbusObjectManagerInterfaceAsync,
    DbusPropertyConstFlag,
    DbusPropertyEmitsChangeFlag,
    DbusUnprivilegedFlag,
    SdBus,
    dbus_method_async,
    dbus_property_async,
    get_default_bus,
)

from gatewayd.ble.bluez_errors import (
    BluezError,
    InvalidOffsetError,
    NotPermittedError,
    NotSupportedError,
)

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


def adapter_path(adapter: str) -> str:
    """``hci0`` or ``/org/bluez/hci0`` -> ``/org/bluez/hci0``."""
    return adapter if adapter.startswith("/") else f"/org/bluez/{adapter}"


def normalize_uuid(value: str) -> str:
    """A 16/32-bit alias (``"2a00"``, ``"0x4677"``) or 128-bit UUID as lowercase 128-bit text."""
    text = value.strip().lower().removeprefix("0x")
    if len(text) in (4, 8):
        return f"{int(text, 16):08x}{BASE_UUID_SUFFIX}"
    return str(uuid_mod.UUID(text))


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


MAX_MTUS = 16  # connections whose MTU a service remembers (a missed disconnect leaves one)


def remember_mtu(mtus: dict[str, int], request: GattRequest) -> None:
    """Record the MTU of ``request``'s connection in ``mtus``, newest last, keeping the
    newest :data:`MAX_MTUS`: a phone whose disconnect was missed (bluetoothd restarted,
    a random address each time) must not stay forever, nor hold notifications of an
    Improv service, which sends at the smallest MTU it knows, to its size."""
    mtus.pop(request.device, None)
    mtus[request.device] = request.mtu
    while len(mtus) > MAX_MTUS:
        del mtus[next(iter(mtus))]


ReadHandler = Callable[[GattRequest], Awaitable[bytes]]
WriteHandler = Callable[[bytes, GattRequest], Awaitable[None]]
SubscribeHandler = Callable[[bool], Awaitable[None]]


class CallerGuard:
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
        self._guard = CallerGuard()

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
        self._guard = CallerGuard()
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
