"""zigpy's duplicate filter with a compact key per packet instead of the packet.

zigpy drops a packet equal to one the same device sent in the last 10 s
(``PACKET_DEBOUNCE_WINDOW``; timestamp, ZCL sequence number, LQI and RSSI not compared),
and to know, each device's ``Debouncer`` keeps a copy of every packet for those 10 s:
a ``ZigbeePacket`` dataclass with its typed fields and two address dataclasses, about
1 KB each, in a dict and a sorted list of ``(-expiry, counter, packet)`` tuples. At the
13 000 reports a second of the throughput runs that is 130 000 entries at the peak, and
Python's allocator keeps the peak: the full hub idled at 212 MB after those runs
(bench/README.md, "Memory").

:class:`CompactDebouncer` is zigpy's ``Debouncer`` keeping one ``bytes`` per packet: the
device filter's number, then the fields zigpy compares, with small numbers standing for
the parts that repeat (source and destination address, the fields that are the same in
every incoming packet; :class:`Shared`). Two packets have equal keys exactly when zigpy
finds them equal (``tests/test_zigbee_fastpath.py`` checks it against
``ZigbeePacket.__eq__``; ``tests/test_zigbee_dedup.py`` that the filter decides as
zigpy's). :meth:`~CompactDebouncer.frame_key` builds the same key from a frame's fields, so
the EZSP fast path never makes the packet at all. All devices' keys wait in one window
(:class:`Shared`): a set, the keys in expiry order in a list, their expiry times in an
``array``. An entry is one small object (its key, ~64 B) and some 40 B in a few large
buffers, instead of ~230 B in five small objects in each device's own dict and list:
what the allocators keep after a peak is that much smaller (bench/README.md, "Memory").
The window holds at most :data:`MAX_KEYS` keys, so that peak is bounded too.
"""

from __future__ import annotations

import bisect
import struct
from array import array
from typing import Any

from zigpy.datastructures import Debouncer

INTERN_MAX = 4096  # parts numbered; past that, keys keep the part itself (a tuple key)
# The device filter's number; source, destination and "rest" part numbers; source and
# destination endpoint, profile, cluster. The ZCL frame follows.
_HEAD = struct.Struct("<IHHHBBHH")
_COMPACT_AT = 64  # expired slots at the front of the list before it is shifted down
_SHRINK_FROM = 256  # keys held at some point before the set is rebuilt smaller
# The most keys the window holds (under 1 MB). zigpy's 10 s at 800 reports/s: an EZSP
# stick's 115 200-baud serial line carries about 250 incoming messages a second. Past it
# the key that expires soonest goes first, so a faster burst (only a simulated radio
# makes one) is filtered over a shorter window; retransmissions, what the filter is for,
# come within a second or two. Unbounded, the window was rate x 10 s: 160 000 keys in
# the throughput runs, and the allocators kept that peak (bench/README.md, "Memory").
MAX_KEYS = 8192


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


class Shared:
    """What the duplicate filters of one network share: a number for each repeating part
    of a key (bounded; the part is in the key as that number, and past
    :data:`INTERN_MAX` parts a new part stays itself), and every device's keys (at most
    ``max_keys``; past it the one that expires soonest is dropped).

    One window for all devices rather than one per device: the keys' set and lists are
    then a few large buffers, which the C allocator maps and unmaps on their own, instead
    of 200 devices' middle-sized ones left as holes in its heap after a burst.
    """

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self.max_keys = max_keys
        self.evicted = 0  # keys dropped before their expiry to stay within max_keys
        self.parts: dict[Any, int] = {}
        self.incoming: dict[Any, Any] = {}  # tx options -> the rest of an incoming key
        self.keys: set[Any] = set()
        self._order: list[Any] = []  # the keys by expiry; None once expired
        self._expiry: array[float] = array("d")  # each one's expiry, same index
        self._head = 0  # where the live ones start
        self._most = 0  # the most keys held since the set was last rebuilt
        self._filters = 0  # device filters numbered so far

    def __call__(self, part: Any) -> Any:
        number = self.parts.get(part)
        if number is None:
            if len(self.parts) >= INTERN_MAX:
                return part
            number = self.parts[part] = len(self.parts)
        return number

    def __len__(self) -> int:
        return len(self.keys)

    def next_filter(self) -> int:
        self._filters += 1
        return self._filters

    def clean(self, now: float) -> None:
        """Forget the keys whose expiry is before ``now``."""
        order, expiry, keys, head = self._order, self._expiry, self.keys, self._head
        end = len(order)
        while head < end and expiry[head] < now:
            keys.discard(order[head])
            order[head] = None
            head += 1
        if head >= _COMPACT_AT and head * 2 >= end:
            del order[:head]
            del expiry[:head]
            head = 0
        self._head = head
        # A set never shrinks as keys leave it: after a burst, build a small one.
        if self._most > _SHRINK_FROM and len(keys) * 4 < self._most:
            self.keys = set(keys)
            self._most = len(keys)

    def add(self, key: Any, expires: float) -> None:
        keys = self.keys
        if len(keys) >= self.max_keys:
            head = self._head
            keys.discard(self._order[head])
            self._order[head] = None
            self._head = head + 1
            self.evicted += 1
        keys.add(key)
        if len(keys) > self._most:
            self._most = len(keys)
        expiry = self._expiry
        if len(expiry) == self._head or expiry[-1] <= expires:
            self._order.append(key)
            expiry.append(expires)
        else:  # a shorter window than the last one's: keep the order (zigpy's insort)
            at = bisect.bisect_right(expiry, expires, self._head)
            self._order.insert(at, key)
            expiry.insert(at, expires)


class CompactDebouncer(Debouncer):
    """A device's duplicate filter (``device._packet_debouncer``) keeping keys, in the
    window it shares with the network's other devices (its keys start with its number).

    Filters as zigpy's does: an object is filtered while an equal one stored by
    :meth:`filter` has not expired (its expiry is not before now).
    """

    def __init__(self, shared: Shared) -> None:
        super().__init__()
        self.shared = shared
        self.number = shared.next_filter()

    @classmethod
    def taking_over(cls, old: Debouncer, shared: Shared) -> CompactDebouncer:
        """A filter that remembers what ``old`` (zigpy's) remembers, as keys."""
        new = cls(shared)
        for negative_expiry, _, packet in reversed(old._queue):  # soonest expiry last
            shared.add(new.packet_key(packet), -negative_expiry)
        return new

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} #{self.number}>"

    def clean(self, now: float | None = None) -> None:
        self.shared.clean(self._loop.time() if now is None else now)

    def is_filtered(self, obj: Any, now: float | None = None) -> bool:
        self.clean(now)
        return self._key(obj) in self.shared.keys

    def filter(self, obj: Any, expire_in: float) -> bool:
        now = self._loop.time()
        shared = self.shared
        shared.clean(now)
        key = self._key(obj)
        if key in shared.keys:
            return True
        shared.add(key, now + expire_in)
        return False

    def _key(self, obj: Any) -> Any:
        kind = type(obj)
        return obj if kind is bytes or kind is tuple else self.packet_key(obj)

    def packet_key(self, packet: Any) -> Any:
        """The key of a ``ZigbeePacket`` (zigpy blanks the uncompared fields first)."""
        route = packet.source_route
        rest = (packet.priority, None if route is None else tuple(int(n) for n in route),
                packet.extended_timeout, _int(packet.tsn), packet.tx_options,
                _int(packet.radius), _int(packet.non_member_radius), _int(packet.alias_src),
                _int(packet.alias_seq), _int(packet.lqi), _int(packet.rssi))
        shared = self.shared
        return self._pack(shared(_address(packet.src)), packet.src_ep,
                          shared(_address(packet.dst)), packet.dst_ep, packet.profile_id,
                          packet.cluster_id, bytes(packet.data.serialize()), shared(rest))

    def frame_key(self, src: Any, src_ep: int, dst: Any, dst_ep: int, profile_id: int,
                  cluster_id: int, data: bytes, tx_options: Any) -> Any:
        """The key of the packet a radio library would make of an incoming unicast
        (``src``, ``dst``: from :meth:`address`)."""
        rest = self.shared.incoming.get(tx_options)
        if rest is None:
            rest = self.shared.incoming[tx_options] = self.shared(
                (None, None, False, None, tx_options, 0, 0, None, None, None, None))
        return self._pack(src, src_ep, dst, dst_ep, profile_id, cluster_id, data, rest)

    def address(self, address: Any) -> Any:
        """An ``AddrModeAddress`` as keys hold it."""
        return self.shared(_address(address))

    def _pack(self, src: Any, src_ep: Any, dst: Any, dst_ep: Any, profile_id: Any, cluster_id: Any,
              data: bytes, rest: Any) -> Any:
        if type(src) is int and type(dst) is int and type(rest) is int:
            try:
                return _HEAD.pack(self.number, src, dst, rest, src_ep, dst_ep, profile_id,
                                  cluster_id) + data
            except struct.error:  # None, or out of range: kept as they are
                pass
        # A part the interner had no number for (it is full), or a field that does not
        # pack: the same packet always takes this branch, so keys still compare exactly.
        return (self.number, src, dst, rest, (_int(src_ep), _int(dst_ep), _int(profile_id),
                                 _int(cluster_id)), data)
