"""Registration with bluetoothd: application and advertisement, kept across bluetoothd restarts.

The ``register_*``/``unregister_*`` functions talk to the adapter's managers once;
:class:`Peripheral` keeps an application (and, while wanted, an advertisement) registered,
re-registering when bluetoothd restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sdbus import (
    DbusInterfaceCommonAsync,
    DbusNameHasNoOwnerError,
    DbusUnknownMethodError,
    DbusUnknownObjectError,
    SdBus,
    dbus_method_async,
    get_default_bus,
)
from sdbus.sd_bus_internals import SdBusMessage, SdBusSlot
from sdbus_async.dbus_daemon import FreedesktopDbus

from gatewayd.ble.advertisement import LEGACY_ADV_MAX, Advertisement
from gatewayd.ble.bluez_errors import (
    GONE,
    AlreadyExistsError,
)
from gatewayd.ble.gatt import (
    ADAPTER,
    BLUEZ_SERVICE,
    GATT_MANAGER,
    LE_ADVERTISING_MANAGER,
    OBJECT_MANAGER,
    Application,
    adapter_path,
)
from gatewayd.runtime.sysbus import bus_lost, ended_with_bus

log = logging.getLogger(__name__)


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
    except GONE:
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
    except GONE:
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
            try:
                if self._advertisement is not None and self._adv_owner is not None:
                    await unregister_advertisement(self._advertisement, self.adapter, self.bus)
                if self._app_owner is not None:
                    await unregister_application(self.app, self.adapter, self.bus)
            except Exception as exc:
                # bluetoothd forgets what an ended connection registered: nothing to undo.
                if not (bus_lost(self.bus) or ended_with_bus(exc)):
                    raise
            await self._set_owners(None, None)

    def _on_name_owner_changed(self, message: SdBusMessage) -> None:
        name, _old, _new = message.get_contents()
        if name == BLUEZ_SERVICE:
            self._wake.set()

    def _on_interfaces_added(self, message: SdBusMessage) -> None:
        contents: Any = message.get_contents()  # D-Bus "oa{sa{sv}}"
        path, interfaces = contents
        if path == adapter_path(self.adapter) and ADAPTER in interfaces:
            self._wake.set()

    def _on_interfaces_removed(self, message: SdBusMessage) -> None:
        # An adapter that goes away (USB dongle, btmgmt) takes its registrations with it,
        # although bluetoothd itself keeps running.
        contents: Any = message.get_contents()  # D-Bus "oas"
        path, interfaces = contents
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
            except Exception as exc:
                if bus_lost(self.bus) or ended_with_bus(exc):
                    return  # the D-Bus daemon went away: the hub stops, and says so once
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
