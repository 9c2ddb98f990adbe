"""A simulated Zigbee device: what its firmware answers, built from the catalog.

:class:`SimDevice` answers ZDO (node, active-endpoint and simple descriptors, bind,
leave) and ZCL (read/write attributes, configure reporting, the cluster commands our
catalog devices implement) the way firmware does, and sends attribute reports once
reporting is configured. It talks through its :class:`VirtualNetwork`
(:mod:`gatewayd.zigbee.virtual.radio`), which carries frames to and from the
coordinator on the event loop. State is raw ZCL values, saved as JSON with the world.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import zigpy.types as t
import zigpy.zdo.types as zdo_t
from zigpy.zcl import Cluster, foundation

from gatewayd.zigbee.virtual.catalog import KINDS, KindSpec

if TYPE_CHECKING:
    from gatewayd.zigbee.virtual.radio import VirtualNetwork

ZDO_PROFILE = 0x0000

_CLUSTERS_BY_NAME: dict[str, type[Cluster]] = {
    cls.ep_attribute: cls for cls in Cluster._registry.values() if cls.ep_attribute
}


_ATTRIBUTE_LIST = t.List[foundation.Attribute]  # built once: zigpy makes a new type per call


class VirtualRadioError(ValueError):
    """An injected event that cannot happen (closed permit join, unknown device...): the
    caller's mistake, so front ends answer it like any other bad value."""


def cluster_class(name: str) -> type[Cluster]:
    try:
        return _CLUSTERS_BY_NAME[name]
    except KeyError:
        raise VirtualRadioError(f"unknown cluster {name!r}") from None


def _attribute(cls: type[Cluster], name: str) -> foundation.ZCLAttributeDef:
    attr = getattr(cls.AttributeDefs, name, None) if not name.startswith("_") else None
    if not isinstance(attr, foundation.ZCLAttributeDef):
        raise VirtualRadioError(f"cluster {cls.ep_attribute!r} has no attribute {name!r}")
    return attr


def check_attribute(cluster: str, attribute: str) -> foundation.ZCLAttributeDef:
    """The ZCL definition of ``cluster.attribute``; VirtualRadioError naming what is unknown."""
    return _attribute(cluster_class(cluster), attribute)


def parse_eui64(value: str | t.EUI64) -> t.EUI64:
    if isinstance(value, t.EUI64):
        return value
    text = value.strip().lower().replace("-", ":")
    if ":" not in text and len(text) == 16:
        text = ":".join(text[i:i + 2] for i in range(0, 16, 2))
    try:
        return t.EUI64.convert(text)
    except (ValueError, TypeError):
        raise VirtualRadioError(f"not an IEEE address: {value!r}") from None


def _typed(attr: foundation.ZCLAttributeDef, value: Any) -> Any:
    """A stored (JSON) value as the attribute's zigpy type, ready to serialize."""
    if isinstance(value, attr.type):
        return value
    if issubclass(attr.type, t.EUI64):
        return t.EUI64.convert(value)
    if isinstance(value, bool):
        value = int(value)
    return attr.type(value)


@functools.cache
def _attribute_names(cluster_id: int) -> tuple[str, dict[int, str]]:
    """A cluster's name and attribute names by id. Cached: rebuilding them for every
    device made saving a 200-device world take 29 ms, on the event loop."""
    cls = Cluster._registry[cluster_id]
    return cls.ep_attribute, {a.id: a.name for a in cls.AttributeDefs}


def _plain(value: Any) -> Any:
    """A zigpy value as JSON: EUI64/keys as text, enums and bitmaps as numbers."""
    if isinstance(value, t.EUI64):
        return str(value)
    if isinstance(value, bool | str | float):
        return value
    if isinstance(value, int):
        return int(value)
    return str(value)


ClusterKey = tuple[int, bool, int]  # endpoint, is_server, cluster id


class SimDevice:
    """One simulated device: state, descriptors, and firmware-like answers."""

    def __init__(self, net: VirtualNetwork, ieee: t.EUI64, nwk: int, kind: str,
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
                self.attrs[key][_attribute(cls, name).id] = value

    def set_attributes(self, cluster: str, values: dict[str, Any],
                       endpoint: int | None = None) -> list[tuple[ClusterKey, int]]:
        key, cls = self._locate(cluster, endpoint)
        changed = []
        for name, value in values.items():
            attr = _attribute(cls, name)
            try:
                _typed(attr, value)
            except (ValueError, TypeError, OverflowError) as exc:
                raise VirtualRadioError(f"{cluster}.{name}: bad value {value!r} ({exc})"
                                        ) from None
            self.attrs[key][attr.id] = value
            changed.append((key, attr.id))
        self.net.changed()
        return changed

    def value(self, cluster: str, attribute: str, endpoint: int | None = None) -> Any:
        key, cls = self._locate(cluster, endpoint)
        return self.attrs[key].get(_attribute(cls, attribute).id)

    def to_json(self) -> dict[str, Any]:
        state: dict[str, dict[str, Any]] = {}
        for (ep, server, cid), values in self.attrs.items():
            cluster, names = _attribute_names(cid)
            side = "in" if server else "out"
            state[f"{ep}:{side}:{cluster}"] = {
                names.get(aid, str(aid)): _plain(v) for aid, v in values.items()}
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
                self.attrs[key][_attribute(cls, attr_name).id] = value

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
            src_ep=src_ep, dst_ep=dst_ep, profile_id=profile, cluster_id=cluster,
            tsn=data[0] if profile == ZDO_PROFILE else 0,
            dst=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(0x0000)),
            data=t.SerializableBytes(data), lqi=self.lqi, rssi=self.rssi))

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
        key = (packet.dst_ep, server, packet.cluster_id)
        ep, cid = packet.dst_ep, packet.cluster_id
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
            answer = self._general(key, cls, foundation.GeneralCommand(hdr.command_id), args)
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

    def _general(self, key: ClusterKey, cls: type[Cluster], command: foundation.GeneralCommand,
                 args: Any) -> tuple[int, bytes] | None:
        values = self.attrs[key]
        gc = foundation.GeneralCommand
        if command == gc.Read_Attributes:
            records = []
            for attr_id in args.attribute_ids:
                attr = cls.attributes.get(attr_id)
                if attr is None or attr_id not in values:
                    records.append(foundation.ReadAttributeRecord(
                        attrid=attr_id, status=foundation.Status.UNSUPPORTED_ATTRIBUTE))
                    continue
                records.append(foundation.ReadAttributeRecord(
                    attrid=attr_id, status=foundation.Status.SUCCESS,
                    value=foundation.TypeValue(type=attr.zcl_type,
                                               value=_typed(attr, values[attr_id]))))
            return gc.Read_Attributes_rsp, t.List[foundation.ReadAttributeRecord](
                records).serialize()
        if command in (gc.Write_Attributes, gc.Write_Attributes_Undivided):
            result = foundation.WriteAttributesResponse()
            for rec in args.attributes:
                attr = cls.attributes.get(rec.attrid)
                if attr is None:
                    status = foundation.Status.UNSUPPORTED_ATTRIBUTE
                elif not attr.access & foundation.ZCLAttributeAccess.Write:
                    status = foundation.Status.READ_ONLY
                else:
                    values[rec.attrid] = _plain(rec.value.value)
                    status = foundation.Status.SUCCESS
                result.append(foundation.WriteAttributesStatusRecord(status=status,
                                                                     attrid=rec.attrid))
            self.net.changed()
            return gc.Write_Attributes_rsp, result.serialize()
        if command == gc.Configure_Reporting:
            records = []
            for cfg in args.config_records:
                if cfg.attrid in values:
                    self.reporting.add((key[0], key[2], cfg.attrid))
                    status = foundation.Status.SUCCESS
                else:
                    status = foundation.Status.UNSUPPORTED_ATTRIBUTE
                records.append(foundation.ConfigureReportingResponseRecord(
                    status=status, direction=foundation.ReportingDirection.SendReports,
                    attrid=cfg.attrid))
            return gc.Configure_Reporting_rsp, foundation.ConfigureReportingResponse(
                records).serialize()
        return None

    def _behave(self, key: ClusterKey, cls: type[Cluster], name: str,
                args: Any) -> tuple[foundation.Status, list[int]]:
        """Firmware behaviour for the cluster commands our catalog devices implement."""
        values = self.attrs[key]
        ok = foundation.Status.SUCCESS
        attrs = cls.AttributeDefs
        if cls.ep_attribute == "on_off":
            on = attrs.on_off.id
            new = {"on": 1, "off": 0, "off_with_effect": 0,
                   "toggle": 0 if values.get(on) else 1}.get(name)
            if new is None:
                return foundation.Status.UNSUP_CLUSTER_COMMAND, []
            values[on] = new
            return ok, [on]
        if cls.ep_attribute == "level":
            level = attrs.current_level.id
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
                self.attrs[on_off][0x0000] = 1 if values[level] > 1 else 0
                if (on_off[0], on_off[2], 0) in self.reporting:
                    self.report(on_off, [0])
            return ok, changed
        if cls.ep_attribute == "light_color" and name == "move_to_color_temp":
            lo = int(values.get(attrs.color_temp_physical_min.id, 1))
            hi = int(values.get(attrs.color_temp_physical_max.id, 0xFEFF))
            if not lo <= int(args.color_temp_mireds) <= hi:
                return foundation.Status.INVALID_VALUE, []
            values[attrs.color_temperature.id] = int(args.color_temp_mireds)
            return ok, [attrs.color_temperature.id]
        if cls.ep_attribute == "ias_zone" and name == "enroll_response":
            values[attrs.zone_state.id] = 1
            values[attrs.zone_id.id] = int(args.zone_id)
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
            type=cls.attributes[a].zcl_type, value=_typed(cls.attributes[a], self.attrs[key][a])))
            for a in attr_ids]
        self._zcl_send(ep=key[0], cluster=key[2], tsn=self.net.next_tsn(),
                       command=foundation.GeneralCommand.Report_Attributes, general=True,
                       direction=foundation.Direction.Server_to_Client,
                       payload=_ATTRIBUTE_LIST(records).serialize(),
                       profile=profile or self._profile(key[0]))

    def update(self, cluster: str, attributes: dict[str, Any],
               endpoint: int | None = None) -> None:
        """New raw values on a server cluster, told to the coordinator at once."""
        changed = self.set_attributes(cluster, attributes, endpoint)
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
        try:
            body = cmd.schema(**args).serialize()
        except (TypeError, ValueError, KeyError) as exc:
            raise VirtualRadioError(f"bad arguments for {cluster}.{command}: {exc}") from None
        self._zcl_send(ep=key[0], cluster=key[2], tsn=self.net.next_tsn(), command=cmd.id,
                       general=False, direction=foundation.Direction.Client_to_Server,
                       payload=body, profile=self._profile(key[0]))
