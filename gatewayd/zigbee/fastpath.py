"""A fast path for the hot frame: attribute reports from known devices on mapped clusters.

Profiling the hub through bellows (bench/README.md) put two thirds of a report's CPU in
zigpy's ``packet_received``: the 3-byte ZCL header parsed twice into a ``ZCLHeader``
Struct (per-field validation, ``replace()`` copies), the records into
``Attribute``/``TypeValue`` Structs, and a linear scan of every device to find the
sender by NWK address. None of that generality is needed for the frame a busy network
is made of: a ``Report_Attributes`` from a device zigpy knows, on a cluster the mapping
table binds, with fixed-size integer values.

:class:`FastReports` wraps the application's ``packet_received``. For such a frame it
parses header and records by hand and then does, in zigpy's order and with zigpy's own
methods, what zigpy would do next: the application's ``handle_message`` listeners, the
device's ``last_seen``/LQI/RSSI and duplicate filter, the attribute cache update
(``_legacy_apply_quirk_attribute_update``) and the ``attribute_report`` /
``attribute_updated`` events that the children (gatewayd/zigbee/child.py) and
zigbee.db listen to. So the bridge's code path after zigpy is the same one.

Everything else goes to zigpy untouched, decided before anything is changed: other
commands and profiles, ZDO, manufacturer-specific frames, frames that ask for a default
response, unknown devices or devices still being interviewed, clusters the table does
not map, attribute ids or wire types zigpy would convert differently (a type other than
the attribute's declared one, ``dataN``, strings, floats), truncated frames or frames
with bytes left over, devices or clusters of a class that overrides zigpy's handling
(quirks), and any moment a response listener is waiting. tests/test_zigbee_fastpath.py
checks that both paths leave the same cache, events and published values.

Read_Attributes responses are not taken: they answer requests (zigpy matches them to
the waiting future, which updates the cache), and unsolicited ones are rare.

This uses zigpy internals, so it installs only on the zigpy version it was written and
tested against (:data:`ZIGPY_VERSION`, pinned in pyproject.toml); on any other it logs
that and zigpy does all the work. An upstream fix would be a faster ``ZCLHeader`` and
``Report_Attributes`` deserialisation and an NWK index in ``get_device``; this is ours.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
from collections.abc import Callable
from typing import Any

import zigpy.device
import zigpy.listeners
import zigpy.types as t
from zigpy.zcl import AttributeReportedEvent, AttributeUpdatedEvent, Cluster, foundation

from gatewayd.zigbee import mapping

log = logging.getLogger(__name__)

ZIGPY_VERSION = "2.4.0"

PROFILE_HA = 0x0104
# Frame control of a profile-wide command from a server, not manufacturer-specific,
# default response disabled (bits: type 0, manufacturer 0x04 clear, direction 0x08
# server->client, 0x10 disable default response, reserved bits clear).
FRAME_CONTROL = 0x18
REPORT_ATTRIBUTES = int(foundation.GeneralCommand.Report_Attributes)

# ZCL type id -> (size in bytes, signed): the fixed-size integers, booleans, bitmaps and
# enums the mapping table's attributes use. Anything else goes to zigpy.
_INT_TYPES: dict[int, tuple[int, bool]] = {
    0x10: (1, False),  # bool
    0x18: (1, False), 0x19: (2, False),  # map8, map16
    0x20: (1, False), 0x21: (2, False), 0x22: (3, False), 0x23: (4, False),  # uintN
    0x24: (5, False), 0x25: (6, False),  # uint40, uint48 (energy counters)
    0x28: (1, True), 0x29: (2, True), 0x2A: (3, True), 0x2B: (4, True),  # intN
    0x30: (1, False), 0x31: (2, False),  # enum8, enum16
}
_WIRE_TYPES: dict[int, Any] = {
    tid: foundation.DataType.from_type_id(foundation.DataTypeId(tid)).python_type
    for tid in _INT_TYPES}

# The zigpy methods whose behaviour this file reproduces; a subclass that overrides one
# (a quirk) gets zigpy's path.
_DEVICE_METHODS = ("packet_received", "_should_filter_packet", "_parse_packet_header",
                   "_match_packet_endpoint_cluster", "_find_zcl_cluster",
                   "_parse_packet_command", "_maybe_match_response")
_CLUSTER_METHODS = ("deserialize", "handle_message", "handle_cluster_general_request",
                    "_legacy_apply_quirk_attribute_update", "_update_attribute",
                    "find_attribute", "find_attributes", "listener_event", "emit")

_Record = tuple[Any, Any, Any]  # attribute definition, raw (wire-typed) value, value


def mapped_clusters() -> frozenset[int]:
    """Server cluster ids the mapping table binds: where reports come from."""
    return frozenset(m.cluster_id for m in mapping.TABLE if m.server)


def _plain(cls: type, base: type, names: tuple[str, ...]) -> bool:
    return all(inspect.getattr_static(cls, name) is inspect.getattr_static(base, name)
               for name in names)


_REPORT_SCHEMA: type = foundation.GENERAL_COMMANDS[
    foundation.GeneralCommand.Report_Attributes].schema


def _cannot_match(listeners: Any) -> bool:
    """True if none of these response listeners could take a Report_Attributes (zigpy
    offers every frame to them). zigpy keeps one per device for Poll Control check-ins:
    a command schema matches only its own kind of command (``Struct.matches``)."""
    for listener in listeners or ():
        for matcher in listener.matchers:
            if not isinstance(matcher, foundation.CommandSchema) or isinstance(
                    matcher, _REPORT_SCHEMA) or issubclass(_REPORT_SCHEMA, type(matcher)):
                return False
    return True


class FastReports:
    """Installed on a zigpy ``ControllerApplication`` by :meth:`install`."""

    def __init__(self, app: Any, clusters: frozenset[int] | None = None) -> None:
        self.app = app
        self.clusters = mapped_clusters() if clusters is None else clusters
        self.zigpy_packet_received: Callable[[Any], None] = app.packet_received
        self.taken = 0  # frames this path handled
        self._by_nwk: dict[int, tuple[Any, str]] = {}  # NWK -> device, its IEEE as text
        self._plain_classes: dict[type, bool] = {}
        self._attrs: dict[tuple[type, int], Any] = {}

    @classmethod
    def install(cls, app: Any) -> FastReports | None:
        try:
            version = importlib.metadata.version("zigpy")
        except importlib.metadata.PackageNotFoundError:
            version = "?"
        if version != ZIGPY_VERSION:
            log.info("zigbee: report fast path off: written for zigpy %s, this is %s",
                     ZIGPY_VERSION, version)
            return None
        fast = cls(app)
        app.packet_received = fast.packet_received
        return fast

    def packet_received(self, packet: Any) -> None:
        if not self.take(packet):
            self.zigpy_packet_received(packet)

    # -- deciding -------------------------------------------------------------------------------
    def take(self, packet: Any) -> bool:
        """Handle ``packet`` as zigpy would and return True, or change nothing and
        return False (zigpy's turn)."""
        if (packet.profile_id != PROFILE_HA or packet.cluster_id not in self.clusters
                or not packet.src_ep or not packet.dst_ep
                or packet.src.addr_mode != t.AddrMode.NWK):
            return False
        data: bytes = packet.data.serialize()
        if len(data) < 3 or data[0] != FRAME_CONTROL or data[2] != REPORT_ATTRIBUTES:
            return False
        device = self._device(packet.src.address)
        if device is None or not device.is_initialized:
            return False
        listeners = self.app._req_listeners
        if not (_cannot_match(listeners.get(zigpy.listeners.ANY_DEVICE))
                and _cannot_match(listeners.get(device))):
            return False
        endpoint = device.endpoints.get(packet.src_ep)
        clusters = getattr(endpoint, "in_clusters", None)
        cluster = clusters.get(packet.cluster_id) if clusters is not None else None
        if cluster is None or not self._plain_cluster(cluster):
            return False
        records = self._records(cluster, data)
        if records is None:
            return False
        self._deliver(packet, device, cluster, data, records)
        self.taken += 1
        return True

    def _device(self, nwk: int) -> Any:
        """zigpy's ``get_device(nwk=...)`` without scanning every device each time. A
        remembered device counts only while it still has that address and is still
        zigpy's device for its IEEE address."""
        known = self._by_nwk.get(nwk)
        if known is not None and known[0].nwk == nwk and \
                self.app.devices.get(known[0].ieee) is known[0]:
            return known[0]
        self._by_nwk.pop(nwk, None)
        if nwk == self.app.state.node_info.nwk:
            return None
        try:
            device = self.app.get_device(nwk=nwk)
        except KeyError:
            return None  # zigpy asks the network who it is
        if type(device) not in self._plain_classes:
            self._plain_classes[type(device)] = (
                isinstance(device, zigpy.device.Device)
                and _plain(type(device), zigpy.device.Device, _DEVICE_METHODS))
        if not self._plain_classes[type(device)]:
            return None
        self._by_nwk[nwk] = (device, str(device.ieee))
        return device

    def _plain_cluster(self, cluster: Any) -> bool:
        cls = type(cluster)
        plain = self._plain_classes.get(cls)
        if plain is None:
            plain = self._plain_classes[cls] = _plain(cls, Cluster, _CLUSTER_METHODS)
        # A listener with general_command would be handed the parsed header and command.
        return plain and not any(hasattr(listener, "general_command")
                                 for listener, _ in cluster._listeners.values())

    def _attribute(self, cluster: Any, attrid: int) -> Any:
        key = (type(cluster), attrid)
        attr = self._attrs.get(key)
        if attr is None and key not in self._attrs:
            try:
                attr = cluster.find_attribute(attrid, manufacturer_code=None)
            except KeyError:
                attr = None
            self._attrs[key] = attr
        return attr

    def _records(self, cluster: Any, data: bytes) -> list[_Record] | None:
        """The report's records, converted as zigpy converts them; None if any record
        is not one this path reproduces exactly, or the frame is malformed."""
        records: list[_Record] = []
        pos, end = 3, len(data)
        while pos < end:
            if pos + 3 > end:
                return None
            attrid = data[pos] | data[pos + 1] << 8
            type_id = data[pos + 2]
            shape = _INT_TYPES.get(type_id)
            attr = self._attribute(cluster, attrid)
            if shape is None or attr is None or int(attr.zcl_type) != type_id:
                return None
            size, signed = shape
            pos += 3
            if pos + size > end:
                return None
            number = int.from_bytes(data[pos:pos + size], "little", signed=signed)
            pos += size
            if type_id == 0x10 and number > 1:
                return None  # zigpy's Bool refuses it
            try:
                raw = _WIRE_TYPES[type_id](number)
                value = attr.type(raw)
            except (TypeError, ValueError):
                return None
            records.append((attr, raw, value))
        return records or None

    # -- doing what zigpy does ----------------------------------------------------------------
    def _deliver(self, packet: Any, device: Any, cluster: Cluster, data: bytes,
                 records: list[_Record]) -> None:
        ieee = self._by_nwk[packet.src.address][1]  # str(EUI64) cost 4 % of a report
        # ControllerApplication.packet_received
        self.app.listener_event("handle_message", device, packet.profile_id,
                                packet.cluster_id, packet.src_ep, packet.dst_ep, data)
        # ZigbeeDevice.packet_received
        device.last_seen = packet.timestamp
        if packet.lqi is not None:
            device.lqi = packet.lqi
        if packet.rssi is not None:
            device.rssi = packet.rssi
        if device._should_filter_packet(packet):
            return
        # Cluster.handle_cluster_general_request, Report_Attributes, no manufacturer code
        endpoint_id = cluster.endpoint.endpoint_id
        for attr, raw, value in records:
            cached = cluster._legacy_apply_quirk_attribute_update(attr, value)
            if cached is None:
                continue
            if cached != value:
                cluster.emit(AttributeUpdatedEvent.event_type, AttributeUpdatedEvent(
                    device_ieee=ieee, endpoint_id=endpoint_id, cluster_type=cluster._type,
                    cluster_id=cluster.cluster_id, attribute_name=attr.name,
                    attribute_id=attr.id, manufacturer_code=None, value=cached))
            else:
                cluster.emit(AttributeReportedEvent.event_type, AttributeReportedEvent(
                    device_ieee=ieee, endpoint_id=endpoint_id, cluster_type=cluster._type,
                    cluster_id=cluster.cluster_id, attribute_name=attr.name,
                    attribute_id=attr.id, manufacturer_code=None, raw_value=raw,
                    value=value))
