"""The BLE spike: the hub's GATT server and advertisement (gatewayd.ble.gatt over sdbus) on hci0
and a phone (bleak) on hci1 talk through BlueZoo on a private system bus.

The Improv service UUIDs stand in for the real services; nothing here is Improv logic.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sdbus
from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from gatewayd.ble import peripheral as ble_gatt
from gatewayd.ble.advertisement import LEGACY_ADV_MAX, Advertisement
from gatewayd.ble.bluez_errors import NotPermittedError
from gatewayd.ble.gatt import Application, Characteristic, GattRequest, Service
from gatewayd.ble.peripheral import Peripheral
from gatewayd.simulator.bluez_mock import BluezMock
from gatewayd.simulator.dbus_daemon import PrivateBus

pytestmark = pytest.mark.slow

IMPROV_SERVICE = "00467768-6228-2272-4663-277478268000"
IMPROV_STATE = "00467768-6228-2272-4663-277478268001"
IMPROV_RPC = "00467768-6228-2272-4663-277478268003"
IMPROV_SERVICE_DATA = "00004677-0000-1000-8000-00805f9b34fb"
SERVICE_DATA = bytes([0x02, 0x01, 0, 0, 0, 0])  # state "authorized", capabilities, reserved

STEP = 10.0  # upper bound for any single step; normal runs take milliseconds per step


@pytest.fixture(scope="module")
def bluez(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BluezMock]:
    workdir: Path = tmp_path_factory.mktemp("ble")
    bus = PrivateBus(workdir / "bus").start()
    mock = BluezMock(bus, workdir / "bluez")
    try:
        mock.start()
        yield mock
    finally:
        mock.stop()
        bus.stop()


@pytest.fixture
def system_bus(bluez: BluezMock, monkeypatch: pytest.MonkeyPatch) -> str:
    # Both sides find the bus through the environment when they connect: sdbus's
    # sd_bus_open_system() on the hub side, dbus-fast (inside bleak) on the phone side.
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bluez.bus.address)
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    return bluez.bus.address


@dataclass
class Hub:
    """One Improv-shaped service on the hub side, recording what the phone did."""

    state: bytes = b"\x02"
    written: asyncio.Queue[tuple[bytes, GattRequest]] = field(default_factory=asyncio.Queue)
    subscribed: asyncio.Queue[bool] = field(default_factory=asyncio.Queue)

    def __post_init__(self) -> None:
        self.state_char = Characteristic(IMPROV_STATE, ["read", "notify"], read=self._read,
                                         on_subscribe=self._on_subscribe)
        self.rpc_char = Characteristic(IMPROV_RPC, ["write"], write=self._write)
        self.app = Application([Service(IMPROV_SERVICE, [self.state_char, self.rpc_char])])
        self.adv = Advertisement(service_uuids=[IMPROV_SERVICE],
                                 service_data={IMPROV_SERVICE_DATA: SERVICE_DATA},
                                 local_name="gatewayd-sim")

    async def _read(self, request: GattRequest) -> bytes:
        return self.state

    async def _write(self, value: bytes, request: GattRequest) -> None:
        self.written.put_nowait((value, request))

    async def _on_subscribe(self, on: bool) -> None:
        self.subscribed.put_nowait(on)


@asynccontextmanager
async def hub_bus() -> AsyncIterator[sdbus.SdBus]:
    # A bus per event loop: sdbus ties a bus to the loop that first uses it.
    bus = sdbus.sd_bus_open_system()
    try:
        yield bus
    finally:
        bus.close()


async def scan_for_hub(
        timeout: float, wanted: Callable[[AdvertisementData], bool] = lambda _adv: True,
) -> tuple[BLEDevice, AdvertisementData] | None:
    """Scan on the phone adapter until a device advertising the service shows up."""
    found: asyncio.Future[tuple[BLEDevice, AdvertisementData]] = (
        asyncio.get_running_loop().create_future())

    def detected(device: BLEDevice, adv: AdvertisementData) -> None:
        if not found.done() and wanted(adv):
            found.set_result((device, adv))

    # The callback goes in at construction so it is listening before discovery starts;
    # find_device_by_filter() subscribes only afterwards and can miss BlueZoo's first pass.
    async with BleakScanner(detected, service_uuids=[IMPROV_SERVICE],
                            bluez={"adapter": "hci1"}):
        try:
            return await asyncio.wait_for(found, timeout)
        except TimeoutError:
            return None


def test_bleak_finds_the_private_bus_through_the_environment(
        bluez: BluezMock, system_bus: str) -> None:
    # bleak connects with dbus-fast's MessageBus(bus_type=BusType.SYSTEM), which takes
    # DBUS_SYSTEM_BUS_ADDRESS from the environment at connect time; BlueZoo's own manager
    # object proves this is the private bus, not a host's bluetoothd.
    from dbus_fast import BusType
    from dbus_fast.aio import MessageBus

    async def scenario() -> None:
        bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        try:
            node = await bus.introspect("org.bluez", "/org/bluezoo")
            assert "org.bluezoo.Manager1" in {iface.name for iface in node.interfaces}
        finally:
            bus.disconnect()

    asyncio.run(scenario())


def test_phone_scans_connects_reads_writes_and_is_notified(
        bluez: BluezMock, system_bus: str) -> None:
    async def scenario() -> None:
        hub = Hub()
        async with hub_bus() as bus:
            await ble_gatt.register_application(hub.app, bluez.hub_adapter, bus)
            await ble_gatt.register_advertisement(hub.adv, bluez.hub_adapter, bus)

            seen = await scan_for_hub(STEP)
            assert seen is not None, "the phone did not find the hub"
            device, adv = seen
            assert device.address == bluez.hub_address
            assert IMPROV_SERVICE in adv.service_uuids
            assert adv.service_data == {IMPROV_SERVICE_DATA: SERVICE_DATA}
            assert adv.local_name == "gatewayd-sim"

            async with BleakClient(device, bluez={"adapter": bluez.phone_adapter}) as phone:
                assert await phone.read_gatt_char(IMPROV_STATE) == b"\x02"

                await phone.write_gatt_char(IMPROV_RPC, b"\x01\x02\x03", response=True)
                value, request = await asyncio.wait_for(hub.written.get(), STEP)
                assert value == b"\x01\x02\x03"
                # The server learns which connection wrote, and its MTU.
                assert request.device.startswith(f"/org/bluez/{bluez.hub_adapter}/dev_")
                assert request.mtu >= 23

                notified: asyncio.Queue[bytes] = asyncio.Queue()
                await phone.start_notify(IMPROV_STATE,
                                         lambda _char, data: notified.put_nowait(bytes(data)))
                assert await asyncio.wait_for(hub.subscribed.get(), STEP) is True
                assert await hub.state_char.notify(b"\x03")
                assert await asyncio.wait_for(notified.get(), STEP) == b"\x03"

            # Disconnecting ends the subscription, as bluetoothd does for unbonded phones.
            assert await asyncio.wait_for(hub.subscribed.get(), STEP) is False
            assert not await hub.state_char.notify(b"\x04")

            # A second connection works (BlueZoo alone would fail it with "File exists").
            async with BleakClient(device, bluez={"adapter": bluez.phone_adapter}) as phone:
                assert await phone.read_gatt_char(IMPROV_STATE) == b"\x02"

            assert await ble_gatt.unregister_advertisement(hub.adv, bluez.hub_adapter, bus)
            assert await ble_gatt.unregister_application(hub.app, bluez.hub_adapter, bus)
            hub.adv.unexport()
            hub.app.unexport()

    asyncio.run(scenario())


def test_unregistered_advertisement_is_not_seen_by_new_scans(
        bluez: BluezMock, system_bus: str) -> None:
    async def scenario() -> None:
        hub = Hub()
        async with hub_bus() as bus:
            await ble_gatt.register_application(hub.app, bluez.hub_adapter, bus)
            await ble_gatt.register_advertisement(hub.adv, bluez.hub_adapter, bus)
            assert await scan_for_hub(STEP) is not None

            assert await ble_gatt.unregister_advertisement(hub.adv, bluez.hub_adapter, bus)
            # Absence can only be shown over time: several of BlueZoo's scan passes.
            assert await scan_for_hub(4 * bluez.scan_interval) is None
            # Nothing left to unregister, and saying so is not an error.
            assert not await ble_gatt.unregister_advertisement(hub.adv, bluez.hub_adapter, bus)

            # Advertising again makes it visible again.
            await ble_gatt.register_advertisement(hub.adv, bluez.hub_adapter, bus)
            assert await scan_for_hub(STEP) is not None

            assert await ble_gatt.unregister_advertisement(hub.adv, bluez.hub_adapter, bus)
            assert await ble_gatt.unregister_application(hub.app, bluez.hub_adapter, bus)
            hub.adv.unexport()
            hub.app.unexport()

    asyncio.run(scenario())


def test_advertisement_updates_reach_scanners(bluez: BluezMock, system_bus: str) -> None:
    # Improv puts its current state into the service data; it has to change while advertising.
    provisioning = bytes([0x03, 0x01, 0, 0, 0, 0])

    async def scenario() -> None:
        hub = Hub()
        async with hub_bus() as bus:
            await ble_gatt.register_advertisement(hub.adv, bluez.hub_adapter, bus)
            assert await scan_for_hub(STEP) is not None
            await hub.adv.update(service_data={IMPROV_SERVICE_DATA: provisioning})
            seen = await scan_for_hub(
                STEP, lambda adv: adv.service_data.get(IMPROV_SERVICE_DATA) == provisioning)
            assert seen is not None, "the scanner never saw the new service data"
            assert await ble_gatt.unregister_advertisement(hub.adv, bluez.hub_adapter, bus)
            hub.adv.unexport()

    asyncio.run(scenario())


def test_oversized_advertisement_is_refused_before_bluez_sees_it(
        bluez: BluezMock, system_bus: str) -> None:
    # BlueZoo accepts anything; bluetoothd on a Pi would not. One 128-bit UUID plus Improv's
    # service data already fill the 31 bytes.
    adv = Advertisement(service_uuids=[IMPROV_SERVICE, "1a0bb827-c7d4-4b45-af5a-727e88a26d00"],
                        service_data={IMPROV_SERVICE_DATA: SERVICE_DATA})
    assert adv.legacy_length() > LEGACY_ADV_MAX
    assert Hub().adv.legacy_length() == LEGACY_ADV_MAX

    async def scenario() -> None:
        async with hub_bus() as bus:
            with pytest.raises(ValueError, match="legacy advertisement"):
                await ble_gatt.register_advertisement(adv, bluez.hub_adapter, bus)
            assert not adv.exported

    asyncio.run(scenario())


def test_calls_from_anyone_but_bluetoothd_are_refused(
        bluez: BluezMock, system_bus: str) -> None:
    async def scenario() -> None:
        hub = Hub()
        async with hub_bus() as bus, hub_bus() as intruder_bus:
            await ble_gatt.register_application(hub.app, bluez.hub_adapter, bus)
            await bus.request_name_async("io.gatewayd.test.hub", 0)
            # sdbus allows one class per interface: the server class doubles as the proxy.
            proxy = Characteristic.new_proxy(
                "io.gatewayd.test.hub", f"{hub.app.path}/service0/char1", intruder_bus)
            with pytest.raises(NotPermittedError):
                await proxy.WriteValue(b"forged", {})
            assert hub.written.empty()
            assert await ble_gatt.unregister_application(hub.app, bluez.hub_adapter, bus)
            hub.app.unexport()

    asyncio.run(scenario())


def test_hub_registers_again_after_bluetoothd_restarts(
        bluez: BluezMock, system_bus: str) -> None:
    async def scenario() -> None:
        hub = Hub()
        async with hub_bus() as bus:
            peripheral = Peripheral(hub.app, bluez.hub_adapter, bus)
            await peripheral.start()
            first = await asyncio.wait_for(peripheral.wait_registered(), STEP)
            assert await peripheral.set_advertisement(hub.adv)
            assert await scan_for_hub(STEP) is not None
            count = peripheral.registrations

            # Blocking, on the loop's thread on purpose: BlueZoo dies with the thread that
            # started it (PR_SET_PDEATHSIG), and asyncio.to_thread's workers do not live long.
            bluez.restart()

            second = await asyncio.wait_for(peripheral.wait_registered(after=count), STEP)
            assert second != first  # a new bluetoothd, a new unique bus name
            assert peripheral.advertising
            seen = await scan_for_hub(STEP)
            assert seen is not None, "the hub did not advertise again after the restart"
            async with BleakClient(seen[0], bluez={"adapter": bluez.phone_adapter}) as phone:
                assert await phone.read_gatt_char(IMPROV_STATE) == b"\x02"

            await peripheral.stop()
            assert peripheral.registered_with is None
            hub.adv.unexport()
            hub.app.unexport()

    asyncio.run(scenario())


def test_hub_started_before_bluetoothd_registers_when_it_appears(
        bluez: BluezMock, system_bus: str) -> None:
    # Boot order is not guaranteed: gatewayd may come up before bluetoothd.
    async def scenario() -> None:
        hub = Hub()
        async with hub_bus() as bus:
            bluez.stop()  # on this thread: see the restart test
            peripheral = Peripheral(hub.app, bluez.hub_adapter, bus)
            await peripheral.start()
            assert peripheral.registered_with is None
            assert not await peripheral.set_advertisement(hub.adv)

            bluez.start()
            await asyncio.wait_for(peripheral.wait_registered(), STEP)
            assert peripheral.advertising
            assert await scan_for_hub(STEP) is not None

            assert not await peripheral.set_advertisement(None)
            await peripheral.stop()
            hub.adv.unexport()
            hub.app.unexport()

    try:
        asyncio.run(scenario())
    finally:
        if not bluez.alive():
            bluez.start()


def test_hub_registers_again_when_its_adapter_comes_back(
        bluez: BluezMock, system_bus: str) -> None:
    # bluetoothd keeps running but the adapter (a USB dongle, say) goes away and comes back:
    # its registrations go with it, and it reappears before anything is registered on it.
    async def scenario() -> None:
        hub = Hub()
        async with hub_bus() as bus:
            peripheral = Peripheral(hub.app, bluez.hub_adapter, bus)
            await peripheral.start()
            await peripheral.set_advertisement(hub.adv)
            owner = await asyncio.wait_for(peripheral.wait_registered(), STEP)
            count = peripheral.registrations

            await asyncio.to_thread(bluez.remove_adapter, bluez.hub_adapter)
            await asyncio.to_thread(bluez.add_adapter, bluez.hub_adapter)
            again = await asyncio.wait_for(peripheral.wait_registered(after=count), STEP)
            assert again == owner  # the same bluetoothd all along
            seen = await scan_for_hub(STEP)
            assert seen is not None
            async with BleakClient(seen[0], bluez={"adapter": bluez.phone_adapter}) as phone:
                assert await phone.read_gatt_char(IMPROV_STATE) == b"\x02"

            await peripheral.stop()
            hub.adv.unexport()
            hub.app.unexport()

    asyncio.run(scenario())


def test_mtu_seen_by_the_server_is_configurable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bus = PrivateBus(tmp_path / "bus").start()
    mock = BluezMock(bus, tmp_path / "bluez", mtu=23)
    try:
        mock.start()
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)

        async def scenario() -> None:
            hub = Hub()
            async with hub_bus() as hbus:
                await ble_gatt.register_application(hub.app, mock.hub_adapter, hbus)
                await ble_gatt.register_advertisement(hub.adv, mock.hub_adapter, hbus)
                seen = await scan_for_hub(STEP)
                assert seen is not None
                async with BleakClient(seen[0], bluez={"adapter": mock.phone_adapter}) as phone:
                    await phone.write_gatt_char(IMPROV_RPC, b"x", response=True)
                    _value, request = await asyncio.wait_for(hub.written.get(), STEP)
                    assert request.mtu == 23
                    assert request.max_notify_len == 20

        asyncio.run(scenario())
    finally:
        mock.stop()
        bus.stop()


def test_restart_leaves_a_working_bluez(bluez: BluezMock) -> None:
    before = bluez.child.pid if bluez.child else None
    bluez.restart()
    assert bluez.alive()
    assert bluez.child is not None and bluez.child.pid != before
    assert bluez.log_path.exists()
