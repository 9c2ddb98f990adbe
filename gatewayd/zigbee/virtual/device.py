"""A simulated Zigbee device: what its firmware answers, built from the catalog.

:class:`SimDevice` answers ZDO (node, active-endpoint and simple descriptors, bind,
leave) and ZCL (read/write attributes, configure reporting, the cluster commands our
catalog devices implement) the way firmware does, and sends attribute reports once
reporting is configured. It talks through its :class:`Network`: the virtual radio's
:class:`~gatewayd.zigbee.virtual.radio.VirtualNetwork` or the NCP emulator's air, which
carry frames to and from the coordinator on the event loop. State is raw ZCL values,
saved as JSON with the world. ZCL value helpers live in :mod:`.zcl`.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import zigpy.types as t
import zigpy.zdo.types as zdo_t
from zigpy.zcl import Cluster, foundation
from zigpy.zcl.clusters.general import LevelControl, OnOff
from zigpy.zcl.clusters.lighting import Color
from zigpy.zcl.clusters.security import IasZone

from gatewayd.zigbee.virtual.catalog import KINDS, KindSpec
from gatewayd.zigbee.virtual.zcl import (
    ClusterKey,
    VirtualRadioError,
    attribute,
    attribute_names,
    check_attribute,
    checked,
    cluster_class,
    command_payload,
    general_command,
    parse_eui64,
    plain,
    typed,
)

__all__ = ["Network", "SimDevice", "VirtualRadioError", "check_attribute", "parse_eui64"]

ZDO_PROFILE = 0x0000
_ATTRIBUTE_LIST = t.List[foundation.Attribute]  # built once: zigpy makes a new type per call
# Attribute ids the firmware behaviour below changes, by name (typed, unlike lookups
# through a cluster class picked at run time).
_ON_OFF = int(OnOff.AttributeDefs.on_off.id)
_LEVEL = int(LevelControl.AttributeDefs.current_level.id)
_COLOR = Color.AttributeDefs
_ZONE = IasZone.AttributeDefs


class Network(Protocol):
    """What a device needs from the air it is on (the virtual radio, the NCP emulator)."""

    def uplink(self, dev: SimDevice, packet: t.ZigbeePacket) -> None: ...
    def device_left(self, dev: SimDevice) -> None: ...
    def next_tsn(self) -> int: ...
    def changed(self) -> None: ...
    def loop(self) -> asyncio.AbstractEventLoop: ...


class SimDevice:
    """One simulated device: state, descriptors, and firmware-like answers."""

    def __init__(self, net: Network, ieee: t.EUI64, nwk: int, kind: str,
                 state: dict[str, Any] | None = None) -> None:
        if kind not in KINDS:
            raise VirtualRadioError(f"unknown device kind {kind!r} (known: {sorted(KINDS)})")
        self.net = net
        self.ieee = ieee
        self.nwk = t.NWK(nwk)
        self.kind = kind
        self.spec: KindSpec = KINDS[kind]
        self.silenced = False
        self.lqi = 200
        self.rssi = -55
        self.attrs: dict[ClusterKey, dict[int, Any]] = {}
        self.reporting: set[tuple[int, int, int]] = set()  # ep, cluster, attribute
        for ep in self.spec["endpoints"]:
            for name in ep["inputs"]:
                self.attrs[(ep["id"], True, cluster_class(name).cluster_id)] = {}
            for name in ep["outputs"]:
                self.attrs[(ep["id"], False, cluster_class(name).cluster_id)] = {}
        basic = {"manufacturer": self.spec["manufacturer"], "model": self.spec["model"],
                 "zcl_version": 3, "app_version": 1, "sw_build_id": "gatewayd-sim"}
        self._apply({"basic": basic}, server_only=False)
        self._apply(self.spec["attributes"], server_only=False)
        if state:
            self._load(state)

    # -- descriptors --------------------------------------------------------------------
    @property
    def sleepy(self) -> bool:
        return not self.spec["mains"]

    def node_descriptor(self) -> zdo_t.NodeDescriptor:
        flags = zdo_t.MACCapabilityFlags.AllocateAddress
        if self.spec["mains"]:
            flags |= (zdo_t.MACCapabilityFlags.MainsPowered
                      | zdo_t.MACCapabilityFlags.RxOnWhenIdle
                      | zdo_t.MACCapabilityFlags.FullFunctionDevice)
        logical = (zdo_t.LogicalType.Router if self.spec["logical_type"] == "router"
                   else zdo_t.LogicalType.EndDevice)
        return zdo_t.NodeDescriptor(
            logical_type=logical, complex_descriptor_available=0,
            user_descriptor_available=0, reserved=0, aps_flags=0,
            frequency_band=zdo_t.NodeDescriptor.FrequencyBand.Freq2400MHz,
            mac_capability_flags=flags, manufacturer_code=self.spec["manufacturer_code"],
            maximum_buffer_size=82, maximum_incoming_transfer_size=82, server_mask=0,
            maximum_outgoing_transfer_size=82,
            descriptor_capability_field=zdo_t.NodeDescriptor.DescriptorCapability.NONE)

    def simple_descriptor(self, endpoint: int) -> zdo_t.SizePrefixedSimpleDescriptor | None:
        for ep in self.spec["endpoints"]:
            if ep["id"] == endpoint:
                return zdo_t.SizePrefixedSimpleDescriptor(
                    endpoint=ep["id"], profile=ep["profile"], device_type=ep["device_type"],
                    device_version=1,
                    input_clusters=[cluster_class(n).cluster_id for n in ep["inputs"]],
                    output_clusters=[cluster_class(n).cluster_id for n in ep["outputs"]])
        return None

    # -- attribute state ----------------------------------------------------------------
    def _locate(self, cluster: str, endpoint: int | None = None,
                server: bool = True) -> tuple[ClusterKey, type[Cluster]]:
        cls = cluster_class(cluster)
        for key in self.attrs:
            if key[1] == server and key[2] == cls.cluster_id and endpoint in (None, key[0]):
                return key, cls
        side = "server" if server else "client"
        raise VirtualRadioError(f"{self.kind} {self.ieee} has no {side} cluster {cluster!r}"
                                + (f" on endpoint {endpoint}" if endpoint else ""))

    def _apply(self, values: dict[str, dict[str, Any]], server_only: bool = True) -> None:
        for where, attributes in values.items():
            ep_text, _, cluster = where.rpartition(":")
            endpoint = int(ep_text) if ep_text else None
            try:
                key, cls = self._locate(cluster, endpoint, server=True)
            except VirtualRadioError:
                if server_only:
                    raise
                key, cls = self._locate(cluster, endpoint, server=False)
            for name, value in attributes.items():
                self.attrs[key][attribute(cls, name).id] = value

    def set_attributes(self, cluster: str, values: dict[str, Any],
                       endpoint: int | None = None, *,
                       persist: bool = True) -> list[tuple[ClusterKey, int]]:
        key, cls = self._locate(cluster, endpoint)
        changed: list[tuple[ClusterKey, int]] = []
        for name, value in values.items():
            attr = attribute(cls, name)
            checked(attr.type, value, f"{cluster}.{name}")
            self.attrs[key][attr.id] = value
            changed.append((key, attr.id))
        if persist:
            self.net.changed()
        return changed

    def value(self, cluster: str, name: str, endpoint: int | None = None) -> Any:
        key, cls = self._locate(cluster, endpoint)
        return self.attrs[key].get(attribute(cls, name).id)

    def to_json(self) -> dict[str, Any]:
        state: dict[str, dict[str, Any]] = {}
        for (ep, server, cid), values in self.attrs.items():
            cluster, names = attribute_names(cid)
            side = "in" if server else "out"
            state[f"{ep}:{side}:{cluster}"] = {
                names.get(aid, str(aid)): plain(v) for aid, v in values.items()}
        return {"ieee": str(self.ieee), "nwk": int(self.nwk), "kind": self.kind,
                "silenced": self.silenced, "lqi": self.lqi, "state": state,
                "reporting": sorted(list(r) for r in self.reporting)}

    def _load(self, data: dict[str, Any]) -> None:
        self.silenced = bool(data.get("silenced", False))
        self.lqi = int(data.get("lqi", self.lqi))
        self.reporting = {(int(a), int(b), int(c)) for a, b, c in data.get("reporting", [])}
        for where, values in data.get("state", {}).items():
            ep, side, name = where.split(":")
            key = (int(ep), side == "in", cluster_class(name).cluster_id)
            if key not in self.attrs:
                continue
            cls = cluster_class(name)
            for attr_name, value in values.items():
                self.attrs[key][attribute(cls, attr_name).id] = value

    # -- the air ------------------------------------------------------------------------
    def receive(self, packet: t.ZigbeePacket) -> None:
        """Handle one frame from the coordinator (called by the network, on the loop)."""
        if packet.dst_ep == 0 or packet.profile_id == ZDO_PROFILE:
            self._zdo(packet)
        else:
            self._zcl(packet)

    def _send(self, *, src_ep: int, dst_ep: int, cluster: int, profile: int,
              data: bytes) -> None:
        self.net.uplink(self, t.ZigbeePacket(
            src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=self.nwk),
            src_ep=t.uint8_t(src_ep), dst_ep=t.uint8_t(dst_ep), profile_id=t.uint16_t(profile),
            cluster_id=t.uint16_t(cluster), tsn=t.uint8_t(data[0] if profile == ZDO_PROFILE
                                                          else 0),
            dst=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(0x0000)),
            data=t.SerializableBytes(data), lqi=t.uint8_t(self.lqi), rssi=t.int8s(self.rssi)))

    def _zdo(self, packet: t.ZigbeePacket) -> None:
        cmd = zdo_t.ZDOCmd(packet.cluster_id)
        raw = packet.data.serialize()
        if cmd not in zdo_t.CLUSTERS:
            return
        hdr, rest = zdo_t.ZDOHeader.deserialize(cmd, raw)
        args, _ = t.deserialize(rest, zdo_t.CLUSTERS[cmd][1])
        ok = zdo_t.Status.SUCCESS
        reply: list[Any]
        if cmd == zdo_t.ZDOCmd.Node_Desc_req:
            reply = [ok, self.nwk, self.node_descriptor()]
        elif cmd == zdo_t.ZDOCmd.Active_EP_req:
            reply = [ok, self.nwk, [ep["id"] for ep in self.spec["endpoints"]]]
        elif cmd == zdo_t.ZDOCmd.Simple_Desc_req:
            sd = self.simple_descriptor(args[1])
            reply = [ok if sd else zdo_t.Status.NOT_ACTIVE, self.nwk, sd]
        elif cmd in (zdo_t.ZDOCmd.Bind_req, zdo_t.ZDOCmd.Unbind_req,
                     zdo_t.ZDOCmd.Mgmt_Permit_Joining_req):
            reply = [ok]
        elif cmd == zdo_t.ZDOCmd.IEEE_addr_req:
            reply = [ok, self.ieee, self.nwk, 0, 0, []]
        elif cmd == zdo_t.ZDOCmd.Mgmt_Leave_req:
            self._zdo_reply(cmd, hdr.tsn, [ok])
            self.net.loop().call_soon(self.net.device_left, self)
            return
        else:
            # Optional services (Mgmt_Lqi, Mgmt_Rtg, ...): answer like small firmware does.
            self._send(src_ep=0, dst_ep=0, cluster=cmd | 0x8000, profile=ZDO_PROFILE,
                       data=bytes([hdr.tsn]) + zdo_t.Status.NOT_SUPPORTED.serialize())
            return
        self._zdo_reply(cmd, hdr.tsn, reply)

    def _zdo_reply(self, cmd: zdo_t.ZDOCmd, tsn: int, reply: list[Any]) -> None:
        rsp = zdo_t.ZDOCmd(cmd | 0x8000)
        data = bytes([tsn]) + t.serialize(reply, zdo_t.CLUSTERS[rsp][1])
        self._send(src_ep=0, dst_ep=0, cluster=rsp, profile=ZDO_PROFILE, data=data)

    def _zcl_send(self, *, ep: int, cluster: int, tsn: int, command: int, general: bool,
                  direction: foundation.Direction, payload: bytes, profile: int) -> None:
        # ZCL frame control: frame type in bits 0-1, direction in bit 3, "disable default
        # response" in bit 4. Packed by hand: zigpy's ZCLHeader struct cost the simulator
        # more per report than the hub spends parsing it (bench/README.md).
        frame_control = (0 if general else 1) | (int(direction) << 3) | 0x10
        self._send(src_ep=ep, dst_ep=1, cluster=cluster, profile=profile,
                   data=bytes((frame_control, tsn, command)) + payload)

    def _zcl(self, packet: t.ZigbeePacket) -> None:
        hdr, payload = foundation.ZCLHeader.deserialize(packet.data.serialize())
        # A frame sent client->server addresses one of our server (input) clusters.
        server = hdr.direction == foundation.Direction.Client_to_Server
        ep, cid = int(packet.dst_ep or 0), int(packet.cluster_id)
        key = (ep, server, cid)
        reply_dir = hdr.direction.flip()

        def default_rsp(status: foundation.Status) -> None:
            if status == foundation.Status.SUCCESS and hdr.frame_control.disable_default_response:
                return
            body = foundation.DefaultResponse(command_id=hdr.command_id, status=status)
            self._zcl_send(ep=ep, cluster=cid, tsn=hdr.tsn, general=True, profile=packet.profile_id,
                           command=foundation.GeneralCommand.Default_Response,
                           direction=reply_dir, payload=body.serialize())

        if key not in self.attrs:
            default_rsp(foundation.Status.UNSUPPORTED_CLUSTER)
            return
        cls = Cluster._registry[cid]
        if hdr.frame_control.is_general:
            if hdr.command_id == foundation.GeneralCommand.Default_Response:
                return
            command = foundation.GENERAL_COMMANDS.get(hdr.command_id)  # type: ignore[call-overload]
            if command is None:
                default_rsp(foundation.Status.UNSUP_GENERAL_COMMAND)
                return
            args, _ = command.schema.deserialize(payload)
            answer = general_command(key, self.attrs[key], cls,
                                     foundation.GeneralCommand(hdr.command_id), args,
                                     self.reporting, self.net.changed)
            if answer is None:
                default_rsp(foundation.Status.UNSUP_GENERAL_COMMAND)
                return
            rsp_id, body = answer
            self._zcl_send(ep=ep, cluster=cid, tsn=hdr.tsn, command=rsp_id, general=True,
                           direction=reply_dir, payload=body, profile=packet.profile_id)
            return
        commands = cls.server_commands if server else cls.client_commands
        if hdr.command_id not in commands:
            default_rsp(foundation.Status.UNSUP_CLUSTER_COMMAND)
            return
        cmd = commands[hdr.command_id]
        args, _ = cmd.schema.deserialize(payload)
        status, changed = self._behave(key, cls, cmd.name, args)
        default_rsp(status)
        for attr_id in changed:
            if (key[0], key[2], attr_id) in self.reporting:
                self.report(key, [attr_id], profile=packet.profile_id)
        if changed:
            self.net.changed()

    def _behave(self, key: ClusterKey, cls: type[Cluster], name: str,
                args: Any) -> tuple[foundation.Status, list[int]]:
        """Firmware behaviour for the cluster commands our catalog devices implement."""
        values = self.attrs[key]
        ok = foundation.Status.SUCCESS
        if cls.ep_attribute == "on_off":
            on = _ON_OFF
            new = {"on": 1, "off": 0, "off_with_effect": 0,
                   "toggle": 0 if values.get(on) else 1}.get(name)
            if new is None:
                return foundation.Status.UNSUP_CLUSTER_COMMAND, []
            values[on] = new
            return ok, [on]
        if cls.ep_attribute == "level":
            level = _LEVEL
            if name in ("move_to_level", "move_to_level_with_on_off"):
                values[level] = int(args.level)
            elif name in ("step", "step_with_on_off"):
                delta = int(args.step_size) * (-1 if int(args.step_mode) else 1)
                values[level] = max(1, min(254, int(values.get(level, 0)) + delta))
            elif name in ("stop", "stop_with_on_off", "move", "move_with_on_off"):
                return ok, []
            else:
                return foundation.Status.UNSUP_CLUSTER_COMMAND, []
            changed = [level]
            on_off = self._find_key(key[0], "on_off")
            if name.endswith("with_on_off") and on_off is not None:
                self.attrs[on_off][_ON_OFF] = 1 if values[level] > 1 else 0
                if (on_off[0], on_off[2], _ON_OFF) in self.reporting:
                    self.report(on_off, [_ON_OFF])
            return ok, changed
        if cls.ep_attribute == "light_color" and name == "move_to_color_temp":
            lo = int(values.get(_COLOR.color_temp_physical_min.id, 1))
            hi = int(values.get(_COLOR.color_temp_physical_max.id, 0xFEFF))
            if not lo <= int(args.color_temp_mireds) <= hi:
                return foundation.Status.INVALID_VALUE, []
            values[_COLOR.color_temperature.id] = int(args.color_temp_mireds)
            return ok, [int(_COLOR.color_temperature.id)]
        if cls.ep_attribute == "ias_zone" and name == "enroll_response":
            values[_ZONE.zone_state.id] = 1
            values[_ZONE.zone_id.id] = int(args.zone_id)
            return ok, []
        if cls.ep_attribute == "identify":
            return ok, []
        return foundation.Status.UNSUP_CLUSTER_COMMAND, []

    def _find_key(self, endpoint: int, cluster: str) -> ClusterKey | None:
        key = (endpoint, True, cluster_class(cluster).cluster_id)
        return key if key in self.attrs else None

    def _profile(self, endpoint: int) -> int:
        return next(ep["profile"] for ep in self.spec["endpoints"] if ep["id"] == endpoint)

    def report(self, key: ClusterKey, attr_ids: list[int], profile: int | None = None) -> None:
        cls = Cluster._registry[key[2]]
        records = [foundation.Attribute(attrid=a, value=foundation.TypeValue(
            type=cls.attributes[a].zcl_type, value=typed(cls.attributes[a], self.attrs[key][a])))
            for a in attr_ids]
        self._zcl_send(ep=key[0], cluster=key[2], tsn=self.net.next_tsn(),
                       command=foundation.GeneralCommand.Report_Attributes, general=True,
                       direction=foundation.Direction.Server_to_Client,
                       payload=_ATTRIBUTE_LIST(records).serialize(),
                       profile=profile or self._profile(key[0]))

    def update(self, cluster: str, attributes: dict[str, Any],
               endpoint: int | None = None, *, persist: bool = True) -> None:
        """New raw values on a server cluster, told to the coordinator at once.
        ``persist=False``: the caller has the state saved itself (a report stream, once
        at its end)."""
        changed = self.set_attributes(cluster, attributes, endpoint, persist=persist)
        key = changed[0][0]
        if cluster == "ias_zone" and "zone_status" in attributes:
            # IAS zones tell status changes with a command, not an attribute report.
            payload = t.uint16_t(attributes["zone_status"]).serialize() + b"\x00\x00\x00\x00"
            self._zcl_send(ep=key[0], cluster=key[2], tsn=self.net.next_tsn(), command=0x00,
                           general=False, direction=foundation.Direction.Server_to_Client,
                           payload=payload, profile=self._profile(key[0]))
            return
        self.report(key, [a for _, a in changed])

    def send_command(self, cluster: str, command: str, args: dict[str, Any],
                     endpoint: int | None = None) -> None:
        """Send a cluster command from one of our client clusters (a button press)."""
        key, cls = self._locate(cluster, endpoint, server=False)
        cmd = getattr(cls.ServerCommandDefs, command, None) if not command.startswith("_") else None
        if not isinstance(cmd, foundation.ZCLCommandDef):
            raise VirtualRadioError(f"cluster {cluster!r} has no command {command!r}")
        body = command_payload(cmd, args, f"{cluster}.{command}")
        self._zcl_send(ep=key[0], cluster=key[2], tsn=self.net.next_tsn(), command=cmd.id,
                       general=False, direction=foundation.Direction.Client_to_Server,
                       payload=body, profile=self._profile(key[0]))
