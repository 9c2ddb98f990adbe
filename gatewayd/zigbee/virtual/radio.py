"""A zigpy radio library of our own: a coordinator with simulated devices, no hardware.

* :class:`VirtualNetwork` is "the air": the radio stick's NVRAM, the simulated
  devices (:class:`~gatewayd.zigbee.virtual.device.SimDevice`, built from
  :mod:`gatewayd.zigbee.virtual.catalog`) and whether the stick is plugged in. Its owner
  (the bridge) keeps one for the world file (``<state_dir>/zigbee-virtual.json``) and
  hands it to every application it starts (:data:`CONF_NETWORK`), so restarting the
  radio finds the same devices in the same state, as a real network would; a new
  process loads them from the world file. No registry: nothing is shared by accident.
* :class:`ControllerApplication` is the zigpy ``ControllerApplication`` subclass
  that ``zigbee.radio = "virtual"`` selects. zigpy drives it exactly like bellows:
  forming, interviewing, binding and commands all go through the real zigpy code.

The injection interface (for the simulator's control socket) is plain methods of
:class:`VirtualNetwork` with JSON-able arguments and results: ``join``, ``leave``,
``silence``, ``report``, ``command``, ``set_link``, ``unplug``, ``replug``,
``list``, ``state``, the one-entry ``inject``, and the load generator ``stream``,
``stream_status`` and ``stream_stop``. They must be called on the event
loop that runs the application. See docs/zigbee.md.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import json
import logging
import os
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zigpy.application
import zigpy.config
import zigpy.device
import zigpy.endpoint
import zigpy.exceptions
import zigpy.profiles.zha
import zigpy.state
import zigpy.types as t
import zigpy.zdo.types as zdo_t

from gatewayd.runtime import jsonbody
from gatewayd.runtime.atomicfile import atomic_write
from gatewayd.zigbee.virtual import zcl
from gatewayd.zigbee.virtual.catalog import KINDS, MANUFACTURER, MANUFACTURER_CODE
from gatewayd.zigbee.virtual.device import SimDevice
from gatewayd.zigbee.virtual.report_stream import ReportStream
from gatewayd.zigbee.virtual.zcl import VirtualRadioError, check_attribute, parse_eui64

__all__ = ["CONF_NETWORK", "ControllerApplication", "SimDevice", "VirtualNetwork",
           "VirtualRadioError"]

log = logging.getLogger(__name__)

WORLD_VERSION = 1
# Attribute changes reach the world file within this many seconds. Saving the whole world
# every second, serialised with indents and fsynced on the loop, cost a busy simulator ~4 %
# of its CPU and stalled its loop 50 ms each time (the benchmarks' p99 latency).
SAVE_DELAY = 10.0
MAX_DEVICES = 500  # a real coordinator's child/address tables are bounded too
_UNKNOWN_IEEE = t.EUI64.convert("ff:ff:ff:ff:ff:ff:ff:ff")  # zigpy's EUI64.UNKNOWN, typed


class VirtualNetwork:
    """The radio stick's NVRAM, the simulated devices, and the air between them."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.devices: dict[t.EUI64, SimDevice] = {}
        self.radio_ieee = t.EUI64(os.urandom(8))
        self.nvram: dict[str, Any] | None = None
        self.plugged = True
        self.app: ControllerApplication | None = None
        self.link_keys: dict[t.EUI64, t.KeyData] = {}
        self._permit_until = 0.0
        self._tsn = random.randint(0, 255)  # noqa: S311 - not security relevant
        self._loop: asyncio.AbstractEventLoop | None = None
        self._save_handle: asyncio.TimerHandle | None = None
        self._stream: ReportStream | None = None
        self._write_lock = threading.Lock()
        self.save_delay = SAVE_DELAY
        self._snapshots = self._written = 0
        if path is not None and path.exists():
            try:
                self._load(jsonbody.loads(path.read_bytes(), "it"))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise zcl.world_file_error(path, exc) from None

    # -- persistence --------------------------------------------------------------------
    def _load(self, data: dict[str, Any]) -> None:
        self.radio_ieee = parse_eui64(data["radio_ieee"])
        self.nvram = data.get("nvram")
        for item in data.get("devices", []):
            dev = SimDevice(self, parse_eui64(item["ieee"]), item["nwk"], item["kind"], item)
            self.devices[dev.ieee] = dev

    def to_json(self) -> dict[str, Any]:
        return {"version": WORLD_VERSION, "radio_ieee": str(self.radio_ieee),
                "nvram": self.nvram, "devices": [d.to_json() for d in self.devices.values()]}

    def save(self) -> None:
        """Write the world file now (joins, leaves, detaching)."""
        if self._save_handle is not None:
            self._save_handle.cancel()
            self._save_handle = None
        if self.path is not None:
            self._write(self._snapshot())

    def _snapshot(self) -> tuple[int, bytes]:
        self._snapshots += 1
        return self._snapshots, json.dumps(self.to_json()).encode()

    def _write(self, snapshot: tuple[int, bytes]) -> None:
        """Any thread. The lock serialises writers; a snapshot older than the one on disk
        is dropped, so a slow background write never overwrites a newer save."""
        number, data = snapshot
        assert self.path is not None
        with self._write_lock:
            if number <= self._written:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, data, 0o600)
            self._written = number

    def _save_in_background(self) -> None:
        # Serialised here, where the state cannot change underneath; written (fsync and
        # all) by a worker thread: on an SD card the fsync alone can stall a loop.
        self._save_handle = None
        future = self.loop().run_in_executor(None, self._write, self._snapshot())
        future.add_done_callback(_log_failure)

    def changed(self) -> None:
        """Attribute state changed: save soon, coalescing bursts into one write."""
        if self.path is None or self._save_handle is not None:
            return
        try:
            self._save_handle = self.loop().call_later(self.save_delay,
                                                       self._save_in_background)
        except VirtualRadioError:
            self.save()

    # -- radio side (used by ControllerApplication) --------------------------------------
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None or self._loop.is_closed():
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                raise VirtualRadioError("the virtual radio is not running") from None
        return self._loop

    def attach(self, app: ControllerApplication) -> None:
        if not self.plugged:
            raise FileNotFoundError(errno.ENOENT, "virtual radio is unplugged", str(self.path))
        if self.app is not None and self.app is not app:
            raise zcl.NetworkInUse("The serial port is locked by another application")
        self.app = app
        self._loop = asyncio.get_running_loop()

    def detach(self, app: ControllerApplication) -> None:
        if self.app is app:
            self.app = None
            if self._stream is not None:
                self._stream.cancel()  # a fast stream would keep a stopping loop busy
            self.save()

    def permit(self, seconds: int) -> None:
        self._permit_until = self.loop().time() + seconds if seconds > 0 else 0.0

    def next_tsn(self) -> int:
        self._tsn = (self._tsn + 1) % 256
        return self._tsn

    def downlink(self, packet: t.ZigbeePacket) -> None:
        """The coordinator transmits a frame."""
        if not self.plugged:
            raise zigpy.exceptions.DeliveryError("virtual radio is unplugged")
        dst = packet.dst
        if dst is None or dst.addr_mode not in (t.AddrMode.NWK, t.AddrMode.IEEE):
            return  # broadcasts and groupcasts: nobody in our catalog acts on them
        if isinstance(dst.address, t.EUI64):
            dev = self.devices.get(dst.address)
        else:
            dev = next((d for d in self.devices.values() if d.nwk == dst.address), None)
        if dev is None:
            raise zigpy.exceptions.DeliveryError(f"no route to {dst.address!r}",
                                                 status=t.MACStatus.MAC_NO_ACK)
        if dev.silenced:
            return  # the frame leaves the radio and is never answered
        self.loop().call_soon(dev.receive, packet)

    def uplink(self, dev: SimDevice, packet: t.ZigbeePacket) -> None:
        """A device transmits a frame: the coordinator hears it if it is listening."""
        app = self.app
        if dev.silenced or not self.plugged or app is None:
            return
        self.loop().call_soon(app.packet_received, packet)

    def device_left(self, dev: SimDevice) -> None:
        self.devices.pop(dev.ieee, None)
        self.save()
        if self.app is not None and self.plugged:
            self.app.handle_leave(dev.nwk, dev.ieee)

    def _device(self, ieee: str | t.EUI64) -> SimDevice:
        key = parse_eui64(ieee)
        try:
            return self.devices[key]
        except KeyError:
            raise VirtualRadioError(f"no simulated device {key}") from None

    # -- injection interface (JSON-able arguments and results) ---------------------------
    @property
    def permit_open(self) -> bool:
        return self._permit_until > 0 and self.loop().time() < self._permit_until

    def kinds(self) -> list[str]:
        return sorted(KINDS)

    def join(self, kind: str, ieee: str | None = None, install_code: str | None = None) -> str:
        """A new device of ``kind`` joins (permit join must be open); returns its IEEE."""
        if kind not in KINDS:
            raise VirtualRadioError(f"unknown device kind {kind!r} (known: {self.kinds()})")
        if not self.plugged or self.app is None:
            raise VirtualRadioError("the virtual radio is not running")
        if not self.permit_open:
            raise VirtualRadioError("permit join is closed")
        if len(self.devices) >= MAX_DEVICES:
            raise VirtualRadioError(f"network is full ({MAX_DEVICES} devices)")
        addr = parse_eui64(ieee) if ieee else t.EUI64(os.urandom(8))
        if addr in self.devices:
            raise VirtualRadioError(f"{addr} is already joined")
        if install_code is not None:
            if self.link_keys.get(addr) != zcl.install_code_key(install_code):
                raise VirtualRadioError(f"{addr} needs an install code the coordinator "
                                        "does not have")
        used = {d.nwk for d in self.devices.values()}
        nwk = next(n for n in iter(lambda: random.randint(1, 0xFFF7), None)  # noqa: S311
                   if n not in used)
        dev = SimDevice(self, addr, nwk, kind)
        self.devices[addr] = dev
        self.save()
        app = self.app
        self.loop().call_soon(app.handle_join, dev.nwk, dev.ieee, t.NWK(0x0000))
        return str(addr)

    def leave(self, ieee: str) -> None:
        """The device leaves the network on its own (factory reset, for instance)."""
        self.device_left(self._device(ieee))

    def silence(self, ieee: str, silent: bool = True) -> None:
        """Stop (or resume) all radio traffic of one device, as if out of range."""
        self._device(ieee).silenced = silent
        self.changed()

    def report(self, ieee: str, cluster: str, attributes: dict[str, Any],
               endpoint: int | None = None) -> None:
        """Set raw ZCL attribute values on a server cluster and send them in a report."""
        self._device(ieee).update(cluster, attributes, endpoint)

    def command(self, ieee: str, cluster: str, command: str,
                args: dict[str, Any] | None = None, endpoint: int | None = None) -> None:
        """The device sends a cluster command to the coordinator (button press)."""
        self._device(ieee).send_command(cluster, command, args or {}, endpoint)

    def set_link(self, ieee: str, lqi: int) -> None:
        self._device(ieee).lqi = max(0, min(255, int(lqi)))

    def inject(self, ieee: str, event: str, **kwargs: Any) -> Any:
        """One entry point for the control socket: ``event`` names a method above."""
        handlers: dict[str, Callable[..., Any]] = {
            "report": self.report, "command": self.command, "leave": self.leave,
            "silence": self.silence, "link": self.set_link, "state": self.state}
        if event not in handlers:
            raise VirtualRadioError(f"unknown event {event!r} (known: {sorted(handlers)})")
        signature = inspect.signature(handlers[event])
        try:  # bound first: a TypeError from inside the handler is a bug, not bad arguments
            signature.bind(ieee, **kwargs)
        except TypeError:
            raise VirtualRadioError(f"{event} takes {', '.join(signature.parameters)}; got "
                                    f"{', '.join(['ieee', *kwargs])}") from None
        return handlers[event](ieee, **kwargs)

    def unplug(self) -> None:
        """Pull the radio stick out: the application loses its serial connection."""
        self.plugged = False
        app = self.app
        if app is not None:
            self.app = None
            self.loop().call_soon(app.connection_lost,
                                  ConnectionResetError("virtual radio unplugged"))

    def replug(self) -> None:
        self.plugged = True

    def state(self, ieee: str) -> dict[str, Any]:
        return self._device(ieee).to_json()

    def stream(self, count: int, rate: float = 0, cluster: str = "electrical_measurement",
               attribute: str = "active_power", start_at: float | None = None,
               modulo: int = 30000, offset: int = 0) -> dict[str, Any]:
        """Start a numbered stream of attribute reports (see :mod:`.report_stream`)."""
        if self._stream is not None and self._stream.running:
            raise VirtualRadioError("a report stream is already running (stream_stop ends it)")
        if self.app is None or not self.plugged:
            raise VirtualRadioError("the virtual radio is not running")
        check_attribute(cluster, attribute, integer=True)
        devices = []
        for dev in sorted(self.devices.values(), key=lambda d: str(d.ieee)):
            try:
                dev.value(cluster, attribute)
            except VirtualRadioError:
                continue
            devices.append(dev)
        self._stream = ReportStream(devices, cluster=cluster, attribute=attribute,
                                    count=count, rate=rate, start_at=start_at, modulo=modulo,
                                    offset=offset)
        self._stream.start()
        return self._stream.plan()

    def stream_status(self) -> dict[str, Any] | None:
        return self._stream.status() if self._stream is not None else None

    def stream_stop(self) -> dict[str, Any] | None:
        if self._stream is not None:
            self._stream.cancel()
        return self.stream_status()

    def list(self) -> list[dict[str, Any]]:  # nwk in hex, as the NCP emulator lists it
        return [{**d.to_json(), "nwk": f"0x{int(d.nwk):04X}"} for d in self.devices.values()]


def _log_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("virtual radio: saving the world file failed: %s", future.exception())


# zigpy builds an application from its configuration alone: the network it drives comes
# in this key (zigpy's schema keeps extra keys, by reference), put there by its owner.
CONF_NETWORK = "gatewayd_virtual_network"


class ControllerApplication(zigpy.application.ControllerApplication):
    """zigpy's view of the virtual radio; ``device.path`` is the world file."""

    DISPLAY_NAME = "gatewayd virtual radio"
    DESCRIPTION = "Simulated coordinator and devices, for tests and the simulator"

    _watchdog_period = 5

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self._net: VirtualNetwork | None = None
        self._endpoints: list[zdo_t.SimpleDescriptor] = []

    @property
    def virtual_network(self) -> VirtualNetwork:
        net = self.config.get(CONF_NETWORK)
        if not isinstance(net, VirtualNetwork):
            raise zigpy.exceptions.ControllerException(
                f"the virtual radio needs its VirtualNetwork in the {CONF_NETWORK!r} key")
        return net

    def _require(self) -> VirtualNetwork:
        if self._net is None or not self._net.plugged:
            raise zigpy.exceptions.ControllerException("virtual radio is not connected")
        return self._net

    async def connect(self) -> None:
        net = self.virtual_network
        net.attach(self)
        self._net = net
        self._endpoints.clear()
        await self.register_endpoints()

    async def disconnect(self) -> None:
        if self._net is not None:
            self._net.detach(self)
            self._net = None

    async def _watchdog_feed(self) -> None:
        self._require()

    async def add_endpoint(self, descriptor: zdo_t.SimpleDescriptor) -> None:
        self._endpoints.append(descriptor)

    async def load_network_info(self, *, load_devices: bool = False) -> None:
        nvram = self._require().nvram
        if not nvram:
            raise zigpy.exceptions.NetworkNotFormed("virtual radio has no network")
        self.state.network_info = zigpy.state.NetworkInfo.from_dict(nvram["network_info"])
        self.state.node_info = zigpy.state.NodeInfo.from_dict(nvram["node_info"])

    async def write_network_info(self, *, network_info: zigpy.state.NetworkInfo,
                                 node_info: zigpy.state.NodeInfo) -> None:
        net = self._require()
        if node_info.ieee == _UNKNOWN_IEEE:
            node_info = node_info.replace(ieee=net.radio_ieee)
        # zigpy hands plain ints here; as_dict() needs the NWK type to print "0000".
        node_info = node_info.replace(nwk=t.NWK(node_info.nwk))
        network_info = network_info.replace(source="gatewayd-virtual@1",
                                             metadata={"virtual": {}})
        old = net.nvram["network_info"]["extended_pan_id"] if net.nvram else None
        if old is not None and old != str(network_info.extended_pan_id):
            # A new network: the devices stay behind on the old one, as real ones would.
            net.devices.clear()
        net.nvram = {"network_info": network_info.as_dict(), "node_info": node_info.as_dict()}
        net.save()

    async def reset_network_info(self) -> None:
        net = self._require()
        net.nvram = None
        net.devices.clear()  # leaving the network orphans every device on it
        net.save()

    async def start_network(self) -> None:
        await self.load_network_info()
        info = self.state.node_info
        coordinator = zigpy.device.Device(self, info.ieee, info.nwk)
        coordinator.node_desc = zdo_t.NodeDescriptor(
            logical_type=zdo_t.LogicalType.Coordinator, complex_descriptor_available=0,
            user_descriptor_available=0, reserved=0, aps_flags=0,
            frequency_band=zdo_t.NodeDescriptor.FrequencyBand.Freq2400MHz,
            mac_capability_flags=(zdo_t.MACCapabilityFlags.AlternatePanCoordinator
                                  | zdo_t.MACCapabilityFlags.FullFunctionDevice
                                  | zdo_t.MACCapabilityFlags.MainsPowered
                                  | zdo_t.MACCapabilityFlags.RxOnWhenIdle
                                  | zdo_t.MACCapabilityFlags.AllocateAddress),
            manufacturer_code=MANUFACTURER_CODE, maximum_buffer_size=82,
            maximum_incoming_transfer_size=128, server_mask=0x2C00,
            maximum_outgoing_transfer_size=128,
            descriptor_capability_field=zdo_t.NodeDescriptor.DescriptorCapability.NONE)
        for desc in self._endpoints:
            ep = coordinator.add_endpoint(desc.endpoint)
            ep.status = zigpy.endpoint.Status.ZDO_INIT
            ep.profile_id = desc.profile
            ep.device_type = zigpy.profiles.zha.DeviceType(desc.device_type)
            for cid in desc.input_clusters:
                ep.add_input_cluster(cid)
            for cid in desc.output_clusters:
                ep.add_output_cluster(cid)
        coordinator.manufacturer = MANUFACTURER
        coordinator.model = "Virtual Radio"
        self.devices[info.ieee] = coordinator

    async def force_remove(self, dev: zigpy.device.Device) -> None:
        net = self._require()
        net.devices.pop(dev.ieee, None)
        net.save()

    async def permit_ncp(self, time_s: int = 60) -> None:
        self._require().permit(time_s)

    async def permit_with_link_key(self, node: t.EUI64, link_key: t.KeyData,
                                   time_s: int = 60) -> None:
        net = self._require()
        net.link_keys[node] = link_key
        net.permit(time_s)

    async def send_packet(self, packet: t.ZigbeePacket) -> None:
        net = self._net
        if net is None:
            raise zigpy.exceptions.DeliveryError("virtual radio is not connected")
        async with self._limit_concurrency(priority=packet.priority):
            net.downlink(packet)
