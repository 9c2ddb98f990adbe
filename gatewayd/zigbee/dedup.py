"""zigpy's duplicate filter with a compact key per packet instead of the packet.

zigpy drops a packet equal to one the same device sent in the last 10 s
(``PACKET_DEBOUNCE_WINDOW``; timestamp, ZCL sequence number, LQI and RSSI not compared),
and to know, each device's ``Debouncer`` keeps a copy of every packet for those 10 s:
a ``ZigbeePacket`` dataclass with its typed fields and two address dataclasses, about
1 KB each. At the few thousand reports a second the benchmarks offer that is tens of MB
at the peak, and Python's allocator keeps the peak: the full hub idled at 212 MB after
its throughput runs (bench/README.md, "Memory").

:class:`CompactDebouncer` is zigpy's ``Debouncer`` keeping a key instead: the fields
zigpy compares, as plain values, with the parts that repeat (addresses, the fields that
are the same in every incoming packet) shared between keys. Two packets have equal keys
exactly when zigpy finds them equal (``tests/test_zigbee_fastpath.py`` checks it against
``ZigbeePacket.__eq__``). :meth:`frame_key` builds the same key from a frame's fields, so
the EZSP fast path never makes the packet at all.
"""

from __future__ import annotations

import struct
from typing import Any

from zigpy.datastructures import Debouncer

INTERN_MAX = 4096  # shared parts kept; past that, keys are simply not shared
_HEAD = struct.Struct("<BBHH")  # source and destination endpoint, profile, cluster


def _int(value: Any) -> Any:
    return None if value is None else int(value)


def _address(address: Any) -> Any:
    if address is None:
        return None
    value = address.address
    return (int(address.addr_mode),
            tuple(value) if isinstance(value, list) else _int(value))


def zigpy_debouncer(debouncer: Any) -> bool:
    """True for zigpy's own ``Debouncer`` (not a subclass: a quirk's, or ours)."""
    return type(debouncer) is Debouncer


class Interner:
    """The shared parts of keys, one per value (bounded)."""

    def __init__(self) -> None:
        self.parts: dict[Any, Any] = {}
        self.incoming: dict[Any, Any] = {}  # tx options -> the rest of an incoming key

    def __call__(self, part: Any) -> Any:
        shared = self.parts.get(part)
        if shared is None:
            if len(self.parts) >= INTERN_MAX:
                return part
            shared = self.parts[part] = part
        return shared


class CompactDebouncer(Debouncer):
    """A device's duplicate filter (``device._packet_debouncer``) keeping keys."""

    def __init__(self, intern: Interner) -> None:
        super().__init__()
        self.intern = intern

    @classmethod
    def taking_over(cls, old: Debouncer, intern: Interner) -> CompactDebouncer:
        """A filter that remembers what ``old`` (zigpy's) remembers, as keys."""
        new = cls(intern)
        for negative_expiry, counter, packet in old._queue:  # sorted: kept so
            key = new.packet_key(packet)
            new._queue.append((negative_expiry, counter, key))
            new._times[key] = -negative_expiry
        new._last_time, new._dedup_counter = old._last_time, old._dedup_counter
        return new

    def filter(self, obj: Any, expire_in: float) -> bool:
        return super().filter(obj if type(obj) is tuple else self.packet_key(obj), expire_in)

    def packet_key(self, packet: Any) -> tuple[Any, ...]:
        """The key of a ``ZigbeePacket`` (zigpy blanks the uncompared fields first)."""
        route = packet.source_route
        rest = (packet.priority, None if route is None else tuple(int(n) for n in route),
                packet.extended_timeout, _int(packet.tsn), packet.tx_options,
                _int(packet.radius), _int(packet.non_member_radius), _int(packet.alias_src),
                _int(packet.alias_seq), _int(packet.lqi), _int(packet.rssi))
        return self._key(self.intern(_address(packet.src)), packet.src_ep,
                         self.intern(_address(packet.dst)), packet.dst_ep, packet.profile_id,
                         packet.cluster_id, bytes(packet.data.serialize()), self.intern(rest))

    def frame_key(self, src: Any, src_ep: int, dst: Any, dst_ep: int, profile_id: int,
                  cluster_id: int, data: bytes, tx_options: Any) -> tuple[Any, ...]:
        """The key of the packet a radio library would make of an incoming unicast
        (``src``, ``dst``: from :meth:`address`)."""
        rest = self.intern.incoming.get(tx_options)
        if rest is None:
            rest = self.intern.incoming[tx_options] = self.intern(
                (None, None, False, None, tx_options, 0, 0, None, None, None, None))
        return self._key(src, src_ep, dst, dst_ep, profile_id, cluster_id, data, rest)

    def address(self, address: Any) -> Any:
        """An ``AddrModeAddress`` as keys hold it."""
        return self.intern(_address(address))

    @staticmethod
    def _key(src: Any, src_ep: Any, dst: Any, dst_ep: Any, profile_id: Any, cluster_id: Any,
             data: bytes, rest: Any) -> tuple[Any, ...]:
        try:
            head = _HEAD.pack(src_ep, dst_ep, profile_id, cluster_id)
        except struct.error:  # None, or out of range: kept as they are
            return (src, dst, rest, (_int(src_ep), _int(dst_ep), _int(profile_id),
                                     _int(cluster_id)), data)
        return (src, dst, rest, head + data)
