"""The air between the emulated NCP and the simulated devices.

The devices are gatewayd's simulated device model (:class:`SimDevice`, built from the
catalog), which works at zigpy ``ZigbeePacket`` level and calls back its
:class:`~gatewayd.zigbee.virtual.device.Network`: ``uplink``, ``device_left``,
``next_tsn``, ``changed``, ``loop``.
:class:`Air` is that network for the emulator: it turns ``sendUnicast`` payloads into
packets for ``device.receive`` and device uplinks into ``incomingMessageHandler``
callbacks, and plays the trust centre's part of joins and leaves (child table,
``trustCenterJoinHandler``, ``childJoinHandler``).

This is the only module of the package that imports from gatewayd, so that where the
device model lives is written in one place.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from typing import TYPE_CHECKING, Any

import zigpy.types as t

from gatewayd.simulator.ncp import status as st
from gatewayd.simulator.ncp.alarm import timerfd_alarm
from gatewayd.simulator.ncp.state import Child
from gatewayd.zigbee.simargs import WAIT_HINT
from gatewayd.zigbee.virtual.catalog import KINDS
from gatewayd.zigbee.virtual.device import SimDevice
from gatewayd.zigbee.virtual.report_stream import ReportStream
from gatewayd.zigbee.virtual.zcl import (
    VirtualRadioError,
    check_attribute,
    install_code_key,
    parse_eui64,
)

if TYPE_CHECKING:
    from gatewayd.simulator.ncp.ncp import Ncp

__all__ = ["KINDS", "Air", "AirError", "SimDevice"]

log = logging.getLogger(__name__)

AirError = VirtualRadioError  # what the injection methods raise, with a message to show
COORDINATOR = 0x0000
MAX_DEVICES = 500
MAX_BEHIND = 4  # networks the NCP left whose devices are remembered (Air.forget_all)


def _raw(ieee: t.EUI64) -> bytes:
    return bytes(ieee.serialize())


class Air:
    """The simulated devices and the radio link to them; see the module docstring."""

    def __init__(self, ncp: Ncp) -> None:
        self.ncp = ncp
        self.devices: dict[t.EUI64, SimDevice] = {}
        # Waiting in pairing mode: ieee -> kind and the link key of its install code.
        self.pairing: dict[t.EUI64, tuple[str, bytes | None]] = {}
        self._aps: dict[t.EUI64, int] = {}
        self._tsn = random.randrange(256)  # noqa: S311 - not security relevant
        self._stream: ReportStream | None = None
        # Open while the NCP can take frames from the air (NcpServer.room): the report
        # stream waits on it, as devices' MAC retries wait for a coordinator out of buffers.
        self.room: asyncio.Event | None = None
        for item in ncp.nvram.devices:
            dev = SimDevice(self, parse_eui64(item["ieee"]), item["nwk"], item["kind"], item)
            self.devices[dev.ieee] = dev
        ncp.air = self

    # -- what SimDevice calls -------------------------------------------------------------
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def next_tsn(self) -> int:
        self._tsn = (self._tsn + 1) & 0xFF
        return self._tsn

    def changed(self) -> None:
        self.ncp.save_soon()

    def uplink(self, dev: SimDevice, packet: t.ZigbeePacket) -> None:
        """A device transmits: the NCP hears it if its network is up."""
        if dev.silenced or not self.ncp.network_up or dev.ieee not in self.devices:
            return
        self._aps[dev.ieee] = seq = (self._aps.get(dev.ieee, 0) + 1) & 0xFF
        self.ncp.count(st.COUNTER_MAC_RX_UNICAST)
        self.ncp.count(st.COUNTER_APS_DATA_RX_UNICAST)
        self.ncp.emit(
            "incomingMessageHandler", type=st.INCOMING_UNICAST,
            apsFrame={"profileId": packet.profile_id, "clusterId": packet.cluster_id,
                      "sourceEndpoint": packet.src_ep, "destinationEndpoint": packet.dst_ep,
                      "options": st.APS_OPTION_ENABLE_ROUTE_DISCOVERY, "groupId": 0,
                      "sequence": seq},
            senderShortId=int(dev.nwk), senderLongId=_raw(dev.ieee), bindingIndex=0xFF,
            addressIndex=0xFF, lastHopLqi=dev.lqi, lastHopRssi=dev.rssi,
            lastHopTimestamp=int(time.monotonic() * 1000) & 0xFFFFFFFF,
            messageContents=bytes(packet.data.serialize()))

    def device_left(self, dev: SimDevice) -> None:
        """The device leaves the network (asked to, or on its own)."""
        if self.devices.pop(dev.ieee, None) is None:
            return
        raw = _raw(dev.ieee)
        children = self.ncp.nvram.children
        index = next((i for i, c in enumerate(children) if c.eui64 == raw.hex()), None)
        if index is not None:
            child = children.pop(index)
            self.ncp.count(st.COUNTER_CHILD_REMOVED)
            if self.ncp.network_up:
                self.ncp.emit("childJoinHandler", index=index, joining=False,
                              childId=child.node_id, childEui64=raw,
                              childType=child.node_type)
        if self.ncp.network_up:
            self.ncp.emit("trustCenterJoinHandler", newNodeId=int(dev.nwk), newNodeEui64=raw,
                          status=st.DEVICE_LEFT, policyDecision=st.NO_ACTION,
                          parentOfNewNodeId=COORDINATOR)
        self.ncp.save()

    # -- what the NCP calls ---------------------------------------------------------------
    def network_changed(self) -> None:
        if not self.ncp.network_up and self._stream is not None:
            self._stream.cancel()

    def permit_changed(self) -> None:
        if self.pairing and self.ncp.permit_open:
            self.loop().call_soon(self._join_pairing)

    def deliver(self, nwk: int, aps: dict[str, Any], payload: bytes) -> bool | None:
        """A frame for ``nwk``: True if a device will take (and ACK) it, False if it is
        there but silent, None if no such device."""
        dev = self._by_nwk(nwk)
        if dev is None:
            return None
        if dev.silenced:
            return False
        packet = t.ZigbeePacket(
            src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(COORDINATOR)),
            src_ep=aps["sourceEndpoint"],
            dst=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=dev.nwk),
            dst_ep=aps["destinationEndpoint"], tsn=aps["sequence"],
            profile_id=aps["profileId"], cluster_id=aps["clusterId"],
            data=t.SerializableBytes(payload))
        self.loop().call_soon(self._receive, dev, packet)
        return True

    def _receive(self, dev: SimDevice, packet: t.ZigbeePacket) -> None:
        if dev.ieee not in self.devices:
            return
        try:
            dev.receive(packet)
        except Exception:  # a frame the firmware cannot parse: a real one ignores it
            log.warning("air: %s could not handle %r", dev.ieee, packet, exc_info=True)

    def eui64_of(self, nwk: int) -> bytes | None:
        dev = self._by_nwk(nwk)
        return _raw(dev.ieee) if dev is not None else None

    def nwk_of(self, eui64: bytes) -> int | None:
        dev = self.devices.get(t.EUI64.deserialize(eui64)[0])
        return int(dev.nwk) if dev is not None else None

    def remove(self, eui64: bytes) -> bool:
        dev = self.devices.get(t.EUI64.deserialize(eui64)[0])
        if dev is None:
            return False
        self.loop().call_soon(self.device_left, dev)
        return True

    def forget_all(self, network: str | None = None) -> None:
        """The NCP left its network (``network``: its extended PAN id, hex): the devices
        stay behind on it, and are there again for a stick that forms it (:meth:`back_on`:
        a restore of the network onto this or another stick). The devices of the last
        :data:`MAX_BEHIND` networks are kept (in the NCP's state file: the room's)."""
        if self._stream is not None:
            self._stream.cancel()
        behind = self.ncp.nvram.behind
        if network is not None and self.devices:
            behind.pop(network, None)
            behind[network] = self.to_json()
            while len(behind) > MAX_BEHIND:
                del behind[next(iter(behind))]
        self.devices.clear()
        self._aps.clear()

    def back_on(self, network: str) -> None:
        """The NCP formed ``network``: the devices left behind on it talk to it again, the
        end devices as its children (a real one rejoins the coordinator of its network
        when its parent is gone)."""
        for item in self.ncp.nvram.behind.pop(network, []):
            dev = SimDevice(self, parse_eui64(item["ieee"]), item["nwk"], item["kind"], item)
            if dev.ieee in self.devices or len(self.devices) >= MAX_DEVICES:
                continue
            self.devices[dev.ieee] = dev
            if dev.spec["logical_type"] != "router":
                node_type = st.SLEEPY_END_DEVICE if dev.sleepy else st.END_DEVICE
                self.ncp.nvram.children.append(
                    Child(eui64=_raw(dev.ieee).hex(), node_id=int(dev.nwk), node_type=node_type))

    def to_json(self) -> list[dict[str, Any]]:
        return [dev.to_json() for dev in self.devices.values()]

    def _by_nwk(self, nwk: int) -> SimDevice | None:
        return next((d for d in self.devices.values() if d.nwk == nwk), None)

    # -- joins ----------------------------------------------------------------------------
    def _join_pairing(self) -> None:
        while self.pairing and self.ncp.permit_open:
            ieee, (kind, key) = next(iter(self.pairing.items()))
            del self.pairing[ieee]
            try:
                self._join_now(kind, ieee, key)
            except AirError as exc:
                log.warning("air: %s could not join: %s", ieee, exc)

    def _admitted(self, raw: bytes, key: bytes | None) -> bool:
        """The trust centre's decision: a device with an install code joins with the link
        key derived from it (AES-MMO), which the host must have given the NCP as a
        transient key; one without uses the well-known key, refused while the policy asks
        for install-code keys."""
        policy = self.ncp.policy(st.TRUST_CENTER_POLICY)
        if policy is not None and not policy & st.DECISION_ALLOW_JOINS:
            return False
        if key is not None:
            return self.ncp.transient_keys.get(raw) == key
        return policy is None or not policy & st.DECISION_JOINS_USE_INSTALL_CODE_KEY

    def _join_now(self, kind: str, ieee: t.EUI64, key: bytes | None = None) -> SimDevice:
        if len(self.devices) >= MAX_DEVICES:
            raise AirError(f"network is full ({MAX_DEVICES} devices)")
        used = {int(d.nwk) for d in self.devices.values()}
        nwk = next(n for n in iter(lambda: random.randint(1, 0xFFF7), None)  # noqa: S311
                   if n not in used)
        raw = _raw(ieee)
        if not self._admitted(raw, key):
            self.ncp.emit("trustCenterJoinHandler", newNodeId=nwk, newNodeEui64=raw,
                          status=st.UNSECURED_JOIN, policyDecision=st.DENY_JOIN,
                          parentOfNewNodeId=COORDINATOR)
            raise AirError("the trust centre denies the join" + (
                " (the coordinator has not been given this device's install code)"
                if key is not None else " (its policy asks for install-code keys)"))
        dev = SimDevice(self, ieee, nwk, kind)
        self.devices[ieee] = dev
        self.ncp.count(st.COUNTER_JOIN_INDICATION)
        if dev.spec["logical_type"] != "router":
            node_type = st.SLEEPY_END_DEVICE if dev.sleepy else st.END_DEVICE
            children = self.ncp.nvram.children
            children.append(Child(eui64=raw.hex(), node_id=nwk, node_type=node_type))
            self.ncp.emit("childJoinHandler", index=len(children) - 1, joining=True,
                          childId=nwk, childEui64=raw, childType=node_type)
        self.ncp.emit("trustCenterJoinHandler", newNodeId=nwk, newNodeEui64=raw,
                      status=st.UNSECURED_JOIN, policyDecision=st.USE_PRECONFIGURED_KEY,
                      parentOfNewNodeId=COORDINATOR)
        self.ncp.save()
        return dev

    # -- the injection interface (JSON-able arguments and results) ------------------------
    def device(self, ieee: str | t.EUI64) -> SimDevice:
        key = parse_eui64(ieee)
        try:
            return self.devices[key]
        except KeyError:
            raise AirError(f"no simulated device {key}") from None

    def join(self, kind: str, ieee: str | None = None, wait: bool = False,
             install_code: str | None = None) -> dict[str, Any]:
        """A device of ``kind`` joins now (permit join must be open), or with ``wait``
        goes into pairing mode and joins when joining is next permitted. A device with an
        ``install_code`` (hex, with its CRC) joins only if the host was given that code."""
        if kind not in KINDS:
            raise AirError(f"unknown device kind {kind!r} (known: {sorted(KINDS)})")
        addr = parse_eui64(ieee) if ieee else t.EUI64(os.urandom(8))
        if addr in self.devices:
            raise AirError(f"{addr} is already joined")
        key = None
        if install_code is not None:
            key = bytes(install_code_key(install_code).serialize())
        if self.ncp.permit_open:
            dev = self._join_now(kind, addr, key)
            return {"ieee": str(addr), "nwk": f"0x{int(dev.nwk):04X}", "joined": True}
        if not wait:
            raise AirError("permit join is closed" + WAIT_HINT)
        self.pairing[addr] = (kind, key)
        return {"ieee": str(addr), "joined": False, "pairing": True}

    def leave(self, ieee: str) -> None:
        self.device_left(self.device(ieee))

    def silence(self, ieee: str, silent: bool = True) -> None:
        """Stop (or resume) all radio traffic of one device, as if out of range."""
        self.device(ieee).silenced = bool(silent)
        self.changed()

    def set_link(self, ieee: str, lqi: int) -> None:
        """The link quality the NCP reports for the device's next frames (0-255)."""
        if isinstance(lqi, bool) or not isinstance(lqi, int) or not 0 <= lqi <= 255:
            raise AirError(f"lqi: must be an integer from 0 to 255, got {lqi!r}")
        self.device(ieee).lqi = lqi
        self.changed()

    def _require_network(self) -> None:
        if not self.ncp.network_up:
            raise AirError("the NCP's network is not up: nobody would hear the device")

    def report(self, ieee: str, cluster: str, attributes: dict[str, Any],
               endpoint: int | None = None) -> None:
        """Set raw ZCL attribute values on a server cluster and report them."""
        self._require_network()
        self.device(ieee).update(cluster, attributes, endpoint)

    def command(self, ieee: str, cluster: str, command: str,
                args: dict[str, Any] | None = None, endpoint: int | None = None) -> None:
        """The device sends a cluster command to the coordinator (a button press)."""
        self._require_network()
        self.device(ieee).send_command(cluster, command, args or {}, endpoint)

    def stream(self, count: int, rate: float = 0, cluster: str = "electrical_measurement",
               attribute: str = "active_power", start_at: float | None = None,
               modulo: int = 30000, offset: int = 0) -> dict[str, Any]:
        """A numbered stream of attribute reports (gatewayd.zigbee.virtual.report_stream),
        woken on time by a timerfd (:mod:`.alarm`)."""
        if self._stream is not None and self._stream.running:
            raise AirError("a report stream is already running")
        self._require_network()
        check_attribute(cluster, attribute, integer=True)
        devices = []
        for dev in sorted(self.devices.values(), key=lambda d: str(d.ieee)):
            try:
                dev.value(cluster, attribute)
            except AirError:
                continue
            if not dev.silenced:
                devices.append(dev)
        self.ncp.save_pending_now()
        self._stream = ReportStream(devices, cluster=cluster, attribute=attribute,
                                    count=count, rate=rate, start_at=start_at,
                                    modulo=modulo, offset=offset, gate=self.room,
                                    alarm=timerfd_alarm)
        self._stream.start()
        return self._stream.plan()

    def stream_status(self) -> dict[str, Any] | None:
        return self._stream.status() if self._stream is not None else None

    def stream_stop(self) -> dict[str, Any] | None:
        if self._stream is not None:
            self._stream.cancel()
        return self.stream_status()

    def list(self) -> list[dict[str, Any]]:
        out = []
        for dev in self.devices.values():
            item = dev.to_json()
            item["nwk"] = f"0x{int(dev.nwk):04X}"
            out.append(item)
        out.extend({"ieee": str(ieee), "kind": kind, "pairing": True}
                   for ieee, (kind, _) in self.pairing.items())
        return out
