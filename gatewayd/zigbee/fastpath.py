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
response, unknown devices or devices still being (re-)interviewed, clusters the table does
not map, attribute ids or wire types zigpy would convert differently (a type other than
the attribute's declared one, ``dataN``, strings, floats), truncated frames or frames
with bytes left over, devices or clusters of a class that overrides zigpy's handling
(quirks), and any moment a response listener is waiting. tests/test_zigbee_fastpath.py
checks that both paths leave the same cache, events and published values.

Read_Attributes responses are not taken: they answer requests (zigpy matches them to
the waiting future, which updates the cache), and unsolicited ones are rare.

This uses zigpy internals, so it installs only on the zigpy version it was written and
tested against (:mod:`~gatewayd.zigbee.pinned`); on any other it logs that and zigpy does
all the work. An upstream fix would be a faster ``ZCLHeader`` and
``Report_Attributes`` deserialisation and an NWK index in ``get_device``; this is ours.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import zigpy.device
import zigpy.listeners
import zigpy.types as t
from zigpy.zcl import AttributeReportedEvent, AttributeUpdatedEvent, Cluster, foundation
from zigpy.zcl.helpers import AttributeCache, CacheItem

from gatewayd.zigbee import mapping
from gatewayd.zigbee.dedup import CompactDebouncer, Shared, zigpy_debouncer
from gatewayd.zigbee.pinned import written_for

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
                   "_parse_packet_command", "_maybe_match_response", "is_initialized",
                   "all_endpoints_init", "has_non_zdo_endpoints", "non_zdo_endpoints")
_CLUSTER_METHODS = ("deserialize", "handle_message", "handle_cluster_general_request",
                    "_legacy_apply_quirk_attribute_update", "_update_attribute",
                    "find_attribute", "find_attributes", "listener_event", "emit",
                    "_quirk_attribute_update", "_get_effective_manufacturer_code",
                    "_attr_cache")

_Record = tuple[Any, Any, Any]  # attribute definition, raw (wire-typed) value, value
# A device by NWK (FastReports._device): the device, its IEEE address as text, its address
# as duplicate-filter keys hold it, and its endpoints when it was last found initialized.
_Known = tuple[Any, str, Any, tuple[Any, ...] | None]
# Untyped here: the packet made for zigpy's duplicate filter has None where zigpy's
# annotations want numbers, as the one zigpy makes for it does (``packet.replace``).
_ZigbeePacket: Any = t.ZigbeePacket


def mapped_clusters() -> frozenset[int]:
    """Server cluster ids the mapping table binds: where reports come from."""
    return frozenset(m.cluster_id for m in mapping.TABLE if m.server)


def plain(cls: type, base: type, names: tuple[str, ...]) -> bool:
    """True if ``cls`` inherits these methods from ``base`` as they are (no override,
    as a quirk would have): the fast paths reproduce ``base``'s behaviour only."""
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
        self._by_nwk: dict[int, _Known] = {}  # NWK -> see _device
        self._intern = Shared()
        self._dst: tuple[Any, Any] = (None, None)  # the last frame's destination, as a key
        self._plain_classes: dict[type, bool] = {}
        self._attrs: dict[tuple[type, int], Any] = {}
        self._db_listeners: dict[Any, Any] = {}  # one of each equal EventListener

    @classmethod
    def install(cls, app: Any) -> FastReports | None:
        if not written_for("zigpy", "report fast path"):
            return None
        fast = cls(app)
        app.packet_received = fast.packet_received
        app.add_listener(fast)
        for device in app.devices.values():
            fast._compact(device)
        return fast

    def packet_received(self, packet: Any) -> None:
        if not self.take(packet):
            self.zigpy_packet_received(packet)

    def duplicates(self) -> dict[str, int]:
        """The duplicate filters' window: keys held, and keys dropped early to stay
        within its bound (``gatewayctl status``, ``zigbee.fast_path.duplicates``)."""
        return {"keys": len(self._intern), "evicted": self._intern.evicted}

    # -- deciding -------------------------------------------------------------------------------
    def take(self, packet: Any) -> bool:
        """Handle ``packet`` as zigpy would and return True, or change nothing and
        return False (zigpy's turn)."""
        if packet.src.addr_mode != t.AddrMode.NWK:
            return False
        return self._take(packet.src.address, packet.src_ep, packet.dst_ep,
                          packet.profile_id, packet.cluster_id, packet.data.serialize(),
                          packet.lqi, packet.rssi, packet)

    def take_frame(self, nwk: int, src_ep: int, dst_ep: int, profile_id: int,
                   cluster_id: int, data: bytes, lqi: int, rssi: int,
                   dst: Any, tx_options: Any) -> bool:
        """:meth:`take` for a unicast the radio library has not made a ZigbeePacket of
        (gatewayd/zigbee/ezsp_fast.py): the same decisions and the same effects; zigpy's
        duplicate filter gets the packet's key (dedup.py), or the packet if the device
        has another kind of filter."""
        return self._take(nwk, src_ep, dst_ep, profile_id, cluster_id, data, lqi, rssi,
                          None, dst, tx_options)

    def _take(self, nwk: int, src_ep: int, dst_ep: int, profile_id: int, cluster_id: int,
              data: bytes, lqi: int | None, rssi: int | None, packet: Any,
              dst: Any = None, tx_options: Any = None) -> bool:
        if (profile_id != PROFILE_HA or cluster_id not in self.clusters
                or not src_ep or not dst_ep):
            return False
        if len(data) < 3 or data[0] != FRAME_CONTROL or data[2] != REPORT_ATTRIBUTES:
            return False
        known = self._device(nwk)
        if known is None:
            return False
        device = known[0]
        if device._reinterview_in_progress or not self._initialized(nwk, known):
            # While a re-interview runs, zigpy routes the device's frames to the shadow
            # device it registered in its place, not to the object remembered here.
            return False
        listeners = self.app._req_listeners
        if not (_cannot_match(listeners.get(zigpy.listeners.ANY_DEVICE))
                and _cannot_match(listeners.get(device))):
            return False
        endpoint = device.endpoints.get(src_ep)
        clusters = getattr(endpoint, "in_clusters", None)
        cluster = clusters.get(cluster_id) if clusters is not None else None
        if cluster is None or not self._plain_cluster(cluster):
            return False
        records = self._records(cluster, data)
        if records is None:
            return False
        dedup: Any = None
        if packet is None:
            debouncer = device._packet_debouncer
            if type(debouncer) is CompactDebouncer:
                if dst is not self._dst[0]:
                    self._dst = (dst, debouncer.address(dst))
                dedup = debouncer.frame_key(known[2], src_ep, self._dst[1], dst_ep,
                                            profile_id, cluster_id, data, tx_options)
            else:
                # What bellows would have handed zigpy, with the fields zigpy's duplicate
                # filter blanks already blank (ZigbeeDevice._should_filter_packet).
                dedup = _ZigbeePacket(
                    src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(nwk)),
                    src_ep=src_ep, dst=dst, dst_ep=dst_ep, tsn=None, profile_id=profile_id,
                    cluster_id=cluster_id, data=t.SerializableBytes(data),
                    tx_options=tx_options)
            timestamp = datetime.now(UTC)
        else:
            timestamp = packet.timestamp
        self._deliver(device, known[1], cluster, records, lqi, rssi, timestamp,
                      (profile_id, cluster_id, src_ep, dst_ep, data), packet, dedup)
        self.taken += 1
        return True

    def _device(self, nwk: int) -> _Known | None:
        """zigpy's ``get_device(nwk=...)`` without scanning every device each time: the
        device, its IEEE address as text, and its address as duplicate-filter keys hold it.
        A remembered device counts only while it still has that address; any device
        joining, leaving, being removed or replaced (a quirk) forgets them all
        (:meth:`device_joined` and the others below)."""
        known = self._by_nwk.get(nwk)
        if known is not None and known[0].nwk == nwk:
            return known
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
                and plain(type(device), zigpy.device.Device, _DEVICE_METHODS))
        if not self._plain_classes[type(device)]:
            return None
        known = (device, str(device.ieee), self._intern((int(t.AddrMode.NWK), nwk)), None)
        self._by_nwk[nwk] = known
        return known

    def _initialized(self, nwk: int, known: _Known) -> bool:
        """zigpy's ``device.is_initialized`` (a node descriptor, and endpoints besides ZDO
        all past ``Status.NEW``), without walking the endpoints twice per frame: an
        endpoint object never goes back to ``NEW`` (zigpy sets it in the constructor
        only), so the answer holds while the device has the same endpoint objects."""
        device = known[0]
        if device.node_desc is None:
            return False
        endpoints = tuple(device.endpoints.values())
        if endpoints == known[3]:
            return True
        if not device.is_initialized:
            return False
        self._by_nwk[nwk] = (*known[:3], endpoints)
        return True

    # zigpy's application events that can change which device object has which address
    # (hashing an EUI64 formats it as text: checking zigpy's dict on every report cost
    # more than the rest of the lookup).
    def _forget(self, *_: Any) -> None:
        self._by_nwk.clear()

    def device_joined(self, device: Any, *_: Any) -> None:
        self._forget()
        self._compact(device)

    device_initialized = raw_device_initialized = device_joined
    device_removed = device_left = _forget

    def _compact(self, device: Any) -> None:
        """Give a device a duplicate filter that keeps keys, not packets (dedup.py),
        unless it has another kind of filter (a quirk's); and share the database
        listeners of its clusters (:meth:`_share_db_listeners`)."""
        debouncer: Any = getattr(device, "_packet_debouncer", None)
        if zigpy_debouncer(debouncer):
            device._packet_debouncer = CompactDebouncer.taking_over(debouncer, self._intern)
        self._share_db_listeners(device)

    def _share_db_listeners(self, device: Any) -> None:
        """zigpy's database listener subscribes 8 bound methods to every cluster, each
        in an ``EventListener`` of its own: ~900 B a cluster, 2.7 MB for 200 plugs.
        Equal ones become one shared instance. zigpy compares listeners by value (an
        unsubscribe is ``listeners.remove``) and calls them the same way, so nothing
        else changes."""
        db = getattr(self.app, "_dblistener", None)
        if db is None:
            return
        shared = self._db_listeners
        for endpoint in device.endpoints.values():
            for clusters in (getattr(endpoint, "in_clusters", None),
                             getattr(endpoint, "out_clusters", None)):
                for cluster in (clusters or {}).values():
                    for listeners in getattr(cluster, "_event_listeners", {}).values():
                        for i, listener in enumerate(listeners):
                            if getattr(listener.callback, "__self__", None) is db:
                                listeners[i] = shared.setdefault(listener, listener)

    def _plain_cluster(self, cluster: Any) -> bool:
        cls = type(cluster)
        known = self._plain_classes.get(cls)
        if known is None:
            known = self._plain_classes[cls] = plain(cls, Cluster, _CLUSTER_METHODS)
        # A listener with general_command would be handed the parsed header and command.
        return known and not any(hasattr(listener, "general_command")
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
    def _deliver(self, device: Any, ieee: str, cluster: Cluster, records: list[_Record],
                 lqi: int | None, rssi: int | None, timestamp: datetime,
                 message: tuple[Any, ...], packet: Any, dedup: Any) -> None:
        # ControllerApplication.packet_received (message: profile, cluster, source and
        # destination endpoint, the ZCL frame)
        self.app.listener_event("handle_message", device, *message)
        # ZigbeeDevice.packet_received
        device.last_seen = timestamp
        if lqi is not None:
            device.lqi = lqi
        if rssi is not None:
            device.rssi = rssi
        if packet is not None:
            duplicate = device._should_filter_packet(packet)
        else:  # the frame's key or packet has the uncompared fields blank already
            duplicate = device._packet_debouncer.filter(
                obj=dedup, expire_in=zigpy.device.PACKET_DEBOUNCE_WINDOW)
        if duplicate:
            return
        # Cluster.handle_cluster_general_request, Report_Attributes, no manufacturer code
        endpoint_id = cluster.endpoint.endpoint_id
        cache = cluster._attr_cache
        for attr, raw, value in records:
            if type(cache) is AttributeCache and \
                    cluster._get_effective_manufacturer_code(attr) is None:
                # _legacy_apply_quirk_attribute_update on a plain cluster, for an
                # attribute without a manufacturer code (the one _records found): the
                # update's own event is suppressed, the value stored and read back.
                key = (attr.id, None)
                cache._unsupported.discard(key)
                cache._cache[key] = CacheItem(value=value, last_updated=datetime.now(UTC))
                cached = value
            else:
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
