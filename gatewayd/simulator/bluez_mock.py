"""BlueZoo (a BlueZ D-Bus emulator) on the private system bus: one adapter for the hub, one
for the "phone".

BlueZoo connects every adapter it hosts to every other one: an LE advertisement registered on
hci0 shows up as a ``Device1`` on hci1 while hci1 is discovering, ``Device1.Connect`` on hci1
"connects" to hci0, and GATT calls on hci1's device objects are forwarded to the application
registered on hci0. So the hub side (gatewayd through sdbus) and the phone side (bleak) talk
to each other through ordinary BlueZ D-Bus calls, with no radio.

BlueZoo runs in a child process started from this module (``python -m
gatewayd.simulator.bluez_mock``), which first patches three gaps between BlueZoo 1.0.2 and
bluetoothd that the hub and phone code would otherwise trip over (see ``_patch_bluezoo``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from gatewayd.simulator.dbus_daemon import PrivateBus
from gatewayd.simulator.procs import Child, dbus_ping, wait_until

log = logging.getLogger(__name__)

BLUEZ_SERVICE = "org.bluez"
DEFAULT_ADAPTERS = ("00:AA:01:00:00:01", "00:AA:01:00:00:02")
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class BluezMock:
    """BlueZoo as a child process with powered adapters: hci0 (hub) and hci1 (phone).

    ``mtu`` is the ATT MTU BlueZoo reports to the GATT server in read/write options
    (BlueZoo's own default is 512); set it low to exercise a service's chunking.
    """

    def __init__(self, bus: PrivateBus, workdir: Path,
                 adapters: tuple[str, ...] = DEFAULT_ADAPTERS, *, scan_interval: float = 0.5,
                 mtu: int | None = None) -> None:
        if len(adapters) < 2:
            raise ValueError("BluezMock needs two adapters: one for the hub, one for the phone")
        self.bus = bus
        self.workdir = workdir
        self.adapters = adapters
        # BlueZoo reports advertisers once per scan interval (its default is 10 s), where a
        # radio hears them every few hundred milliseconds. The first pass runs as discovery
        # starts, often before the scanning client listens (bleak's find_device_* helpers
        # subscribe only once the scan has started), so a short interval keeps scans quick.
        self.scan_interval = scan_interval
        self.mtu = mtu
        self.child: Child | None = None
        self.log_path = workdir / "bluezoo.log"

    @property
    def hub_adapter(self) -> str:
        return "hci0"

    @property
    def phone_adapter(self) -> str:
        return "hci1"

    @property
    def hub_address(self) -> str:
        """hci0's address: the phone sees the hub as a device with this address."""
        return self.adapters[0]

    @property
    def phone_address(self) -> str:
        return self.adapters[1]

    def start(self) -> BluezMock:
        """Start BlueZoo and wait until its adapters are powered (blocking, ~0.1 s).

        The child dies with the *thread* that starts it (procs.Child sets PR_SET_PDEATHSIG):
        start and restart from a thread that outlives it, not from asyncio.to_thread.
        """
        if self.child is not None:
            raise RuntimeError("BluezMock already started")
        if threading.current_thread() is not threading.main_thread():
            log.warning("starting BlueZoo from thread %s: it will be killed when that thread "
                        "exits", threading.current_thread().name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "gatewayd.simulator.bluez_mock",
                "--scan-interval", str(self.scan_interval)]
        if self.mtu is not None:
            argv += ["--mtu", str(self.mtu)]
        for address in self.adapters:
            argv += ["--adapter", address]
        env = self.bus.env(dict(os.environ))
        # The child must run this very tree, installed or not.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        self.child = Child("bluezoo", argv, self.log_path, env=env, cwd=self.workdir)
        try:
            with _Probe(self.bus.address) as probe:
                # BlueZoo takes the name org.bluez before it creates its adapters, so the name
                # alone does not mean ready.
                wait_until(lambda: probe.powered_adapters() >= len(self.adapters), 15,
                           "BlueZoo's adapters on the private bus", self.child)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.child is None:
            return
        child, self.child = self.child, None
        child.stop()
        if not dbus_ping(self.bus.address):
            return  # the bus itself is gone (its daemon died first), BlueZoo's name with it
        # dbus-daemon drops the name a moment after the process is gone; a new BlueZoo started
        # before that could not take it.
        with _Probe(self.bus.address) as probe:
            wait_until(lambda: not probe.has_owner(BLUEZ_SERVICE), 10,
                       "org.bluez to leave the private bus")

    def restart(self) -> BluezMock:
        """Stop and start again, as when bluetoothd restarts: every registration is lost."""
        self.stop()
        return self.start()

    def alive(self) -> bool:
        return self.child is not None and self.child.alive()

    def remove_adapter(self, name: str) -> None:
        """Take an adapter away while "bluetoothd" keeps running, as unplugging a dongle does.

        Blocking D-Bus call: from async code use asyncio.to_thread, since BlueZoo may call
        back into the caller's process (StopNotify for a connected phone) meanwhile.
        """
        with _Probe(self.bus.address) as probe:
            probe.call_bluezoo("RemoveAdapter", "y", (self._adapter_id(name),))

    def add_adapter(self, name: str) -> None:
        """Bring back an adapter taken away by ``remove_adapter``, powered."""
        index = self._adapter_id(name)
        with _Probe(self.bus.address) as probe:
            probe.call_bluezoo("AddAdapter", "ys", (index, self.adapters[index]))

    def _adapter_id(self, name: str) -> int:
        index = int(name.removeprefix("hci"))
        if not name.startswith("hci") or not 0 <= index < len(self.adapters):
            raise ValueError(f"no adapter {name!r}: this BluezMock has hci0..hci"
                             f"{len(self.adapters) - 1}")
        return index


class _Probe:
    """A blocking connection to the private bus for readiness checks (dbus-python)."""

    def __init__(self, address: str) -> None:
        import dbus.bus  # sim-only dependency; keep it out of gatewayd's import graph

        self._address = address
        self._conn: Any = dbus.bus.BusConnection(address)
        self._error: type[Exception] = dbus.exceptions.DBusException

    def __enter__(self) -> _Probe:
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.close()

    def has_owner(self, name: str) -> bool:
        return bool(self._conn.name_has_owner(name))

    def call_bluezoo(self, method: str, signature: str, args: tuple[Any, ...]) -> None:
        self._conn.call_blocking(BLUEZ_SERVICE, "/org/bluezoo", "org.bluezoo.Manager1", method,
                                 signature, args, timeout=10.0)

    def powered_adapters(self) -> int:
        if not self.has_owner(BLUEZ_SERVICE) or not dbus_ping(self._address, BLUEZ_SERVICE):
            return 0
        try:
            objects = self._conn.call_blocking(
                BLUEZ_SERVICE, "/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects",
                "", (), timeout=2.0)
        except self._error:
            return 0
        return sum(1 for ifaces in objects.values()
                   if bool(ifaces.get("org.bluez.Adapter1", {}).get("Powered", False)))


# --- the child process ----------------------------------------------------------------------
# Everything below runs only in BlueZoo's process. Importing bluezoo anywhere else would
# monkey-patch sdbus's property descriptors and claim the org.bluez.Error.* names in that
# process too.

def _patch_bluezoo(mtu: int | None) -> None:
    """Close the gaps between BlueZoo 1.0.2 and bluetoothd that clients notice."""
    from bluezoo.adapter import Adapter
    from bluezoo.device import Device
    from bluezoo.gatt import GattCharacteristicClientLink
    from bluezoo.log import logger
    from pyventus.events import EventLinker, EventSubscriber

    device_iface = "org.bluez.Device1"

    # 1. Re-scans. bluetoothd drops a device's RSSI when discovery stops and reports it again
    # with the next advertisement, so every scan sees a PropertiesChanged for each advertiser
    # in range. BlueZoo emits one only when the advertised data changed, and bleak reports
    # only devices that appear or change while it scans: a second scan on the same adapter
    # would never see an unchanged hub again.
    add_device = Adapter.add_device

    async def add_device_reporting_rssi(self: Any, device: Any) -> None:
        await add_device(self, device)
        known = self.devices.get(device.get_object_path())
        if known is not None and known is not device and self.discovering:
            known.properties_changed.emit((device_iface, {"RSSI": ("n", known.rssi)}, []))

    Adapter.add_device = add_device_reporting_rssi

    # 2. Reconnects. BlueZoo exports the remote GATT objects on every Connect and never
    # removes them, so a second Connect to the same device, or a Connect while connected,
    # fails with "File exists". bluetoothd removes an unbonded device's GATT objects on
    # disconnect, and calls the server's StopNotify once the last subscribed connection is
    # gone (BlueZoo never does, so a server could not tell its subscriber left).
    connect = Device.connect
    disconnect = Device.disconnect

    def subscribed(link: Any) -> bool:
        # StartNotify stores a live EventSubscriber; StopNotify unsubscribes it but keeps it.
        subscription = link.client_props_changed_subscription
        return (isinstance(subscription, EventSubscriber)
                and EventLinker.contains_subscriber(subscription))

    async def connect_once(self: Any, uuid: str | None = None) -> None:
        if self.connected and self.services:
            return
        await connect(self, uuid)

    async def disconnect_dropping_gatt(self: Any, uuid: str | None = None) -> None:
        await disconnect(self, uuid)
        mock = self.peer_adapter.mock
        links = list(self.services.values())
        self.services.clear()
        for link in reversed(links):
            mock.remove_object(link)
        for link in links:
            if not isinstance(link, GattCharacteristicClientLink) or not subscribed(link):
                continue
            link.client_props_changed_subscription.unsubscribe()
            if not any(isinstance(other, GattCharacteristicClientLink)
                       and other.client is link.client and subscribed(other)
                       for other in mock.manager_export_handles):
                try:
                    await link.client.StopNotify()
                except Exception:
                    logger.exception("StopNotify on %s failed", link.client.get_object_path())
        for device in (self, self.peer):
            if device is not None and device.services_resolved:
                await device.ServicesResolved.set_async(False)

    Device.connect = connect_once
    Device.disconnect = disconnect_dropping_gatt

    # 3. MTU. BlueZoo tells the server MTU 512 unless the server's own characteristic has an
    # MTU property (bluetoothd ignores that one); let tests choose a phone's MTU instead.
    if mtu is not None:
        link_init = GattCharacteristicClientLink.__init__

        def link_init_with_mtu(self: Any, client: Any, service: Any) -> None:
            link_init(self, client, service)
            self.mtu = mtu

        GattCharacteristicClientLink.__init__ = link_init_with_mtu


def _main() -> None:
    parser = argparse.ArgumentParser(description="BlueZoo, patched for gatewayd's simulator")
    parser.add_argument("--adapter", action="append", required=True)
    parser.add_argument("--scan-interval", type=float, default=0.5)
    parser.add_argument("--mtu", type=int)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _patch_bluezoo(args.mtu)

    from bluezoo.bluezoo import startup
    from bluezoo.utils import BluetoothAddress

    # BlueZoo's own main() would do the same but only takes whole seconds between scans.
    loop = asyncio.new_event_loop()
    loop.run_until_complete(startup(
        bus="system", adapters=[BluetoothAddress(a) for a in args.adapter],
        auto_enable=True, scan_interval=args.scan_interval))
    loop.run_forever()


if __name__ == "__main__":
    _main()
