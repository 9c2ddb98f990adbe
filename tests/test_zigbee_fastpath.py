"""The attribute-report fast path (gatewayd/zigbee/fastpath.py) against zigpy itself.

On both radios, every attribute the mapping table reads is reported with edge values,
once through zigpy's own ``packet_received`` and once through the fast path; both must
leave the same attribute cache, emit the same events (type and value types included),
tell the application listeners the same, and give the bridge the same values to publish.
Frames the fast path does not reproduce exactly must be refused before anything changes,
and then be zigpy's to handle (or drop, if malformed).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import pytest
import zigpy.types as t
from zigpy.datastructures import Debouncer
from zigpy.zcl import foundation

from gatewayd.zigbee import fastpath, mapping, pinned
from gatewayd.zigbee.dedup import CompactDebouncer, Shared
from gatewayd.zigbee.fastpath import FastReports
from tests.helpers import run_async
from tests.test_bridge import dev_id, join, on_set, started
from tests.zigbee_radios import RADIOS, Radio

pytestmark = pytest.mark.timeout(120)

KINDS = ("plug", "light", "th-sensor", "motion", "contact")
EVENTS = ("attribute_report", "attribute_updated", "attribute_cleared", "attribute_read")
_tsn = itertools.count(1)


@pytest.fixture(params=RADIOS)
def radio(request: pytest.FixtureRequest, tmp_path: Any) -> Radio:
    return Radio(request.param, tmp_path)


def edge_values(type_id: int) -> list[int]:
    size, signed = fastpath._INT_TYPES[type_id]
    if type_id == 0x10:
        return [0, 1]
    bits = 8 * size
    lo, hi = (-(1 << bits - 1), (1 << bits - 1) - 1) if signed else (0, (1 << bits) - 1)
    return sorted({lo, lo + 1, -1 if signed else 1, 0, 1, 2, 0x7F & hi, hi - 1, hi,
                   hi // 3})


def encode(attrid: int, type_id: int, value: int) -> bytes:
    size, signed = fastpath._INT_TYPES[type_id]
    return (attrid.to_bytes(2, "little") + bytes([type_id])
            + value.to_bytes(size, "little", signed=signed))


def report(records: bytes, *, frame_control: int = 0x18, command: int = 0x0A) -> bytes:
    return bytes([frame_control, next(_tsn) & 0xFF, command]) + records


def packet(dev: Any, ep: int, cluster: int, data: bytes, profile: int = 0x0104) -> Any:
    return t.ZigbeePacket(
        src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=dev.nwk), src_ep=ep,
        dst=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=0x0000), dst_ep=1,
        tsn=next(_tsn) & 0xFF, profile_id=profile, cluster_id=cluster,
        data=t.SerializableBytes(data), lqi=123, rssi=-60)


class Watch:
    """What one frame did: events of every mapped cluster, application listener calls,
    and what the bridge was handed to publish."""

    def __init__(self, bridge: Any, pub: Any) -> None:
        self.bridge, self.pub = bridge, pub
        self.events: list[tuple[str, Any, type, type]] = []
        self.messages: list[tuple[Any, ...]] = []
        self.mark = 0
        self.since = datetime.now(UTC)
        bridge.app.add_listener(self)
        for child in bridge.children.values():
            for binding in child.plan.bindings:
                cluster = child._cluster(binding)
                for name in EVENTS:
                    cluster.on_event(name, self._event)

    def _event(self, event: Any) -> None:
        self.events.append((event.event_type, event, type(getattr(event, "raw_value", None)),
                            type(event.value)))

    def handle_message(self, *args: Any) -> None:
        data = args[-1]  # the ZCL sequence number differs, or zigpy drops a duplicate
        self.messages.append((*args[:-1], data[:1] + data[2:]))

    def start(self) -> None:
        self.events.clear()
        self.messages.clear()
        self.bridge.coalescer.pending.clear()
        self.mark = len(self.pub.log)
        self.since = datetime.now(UTC)

    def outcome(self, cluster: Any, names: list[str]) -> dict[str, Any]:
        self.bridge.coalescer.read_soon()  # the link quality, read after the frame
        handed = dict(self.bridge.coalescer.pending)
        handed.update({(e[1], e[2]): e[3] for e in self.pub.log[self.mark:] if e[0] == "value"})
        cache = {n: (cluster.get(n), type(cluster.get(n)),
                     *_cache_item(cluster, n, self.since)) for n in names}
        return {"events": list(self.events), "messages": list(self.messages),
                "handed": {k: (v, type(v)) for k, v in handed.items()}, "cache": cache}


def _cache_item(cluster: Any, name: str, since: datetime) -> tuple[bool, bool]:
    """Marked unsupported; updated by this frame (zigpy's cache entry, not only its value)."""
    attr = cluster.find_attribute(name)
    cache = cluster._attr_cache
    item = cache._cache.get(cache._cache_key(attr))
    return cache.is_unsupported(attr), item is not None and item.last_updated >= since


def both_paths(fast: FastReports, watch: Watch, dev: Any, ep: int, cluster: Any,
               records: bytes, names: list[str], unsupported: tuple[str, ...] = ()
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    for name in unsupported:  # what a device once refused to read: a report clears it
        cluster._attr_cache.mark_unsupported(cluster.find_attribute(name))
    watch.start()
    dev.lqi = 200  # what the listeners see before the frame's own LQI is stored
    fast.zigpy_packet_received(packet(dev, ep, cluster.cluster_id, report(records)))
    by_zigpy = watch.outcome(cluster, names)
    for name in unsupported:
        cluster._attr_cache.mark_unsupported(cluster.find_attribute(name))
    watch.start()
    dev.lqi = 200
    taken = fast.taken
    assert fast.take(packet(dev, ep, cluster.cluster_id, report(records)))
    assert fast.taken == taken + 1
    return by_zigpy, watch.outcome(cluster, names)


def test_fast_path_equals_zigpy_over_the_mapping_table(radio: Radio) -> None:
    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio, min_interval=3600.0)
            for kind in KINDS:
                await join(bridge, pub, kind, "sleeping" if kind in (
                    "th-sensor", "motion", "contact") else "ready")
            fast = bridge.fast.reports
            assert fast is not None
            watch = Watch(bridge, pub)
            covered: set[tuple[int, str]] = set()
            for child in bridge.children.values():
                for binding in child.plan.bindings:
                    if not binding.cmap.server:
                        continue
                    cluster = child._cluster(binding)
                    attrs = [cluster.find_attribute(p.attribute)
                             for p in binding.cmap.properties(child._getter(cluster))
                             if p.attribute]
                    names = [a.name for a in attrs]
                    for attr in attrs:
                        tid = int(attr.zcl_type)
                        for value in edge_values(tid):
                            by_zigpy, by_fast = both_paths(
                                fast, watch, child.device, binding.endpoint, cluster,
                                encode(int(attr.id), tid, value), names)
                            assert by_fast == by_zigpy, (attr.name, value)
                            assert by_fast["events"] and by_fast["messages"]
                        covered.add((binding.cmap.cluster_id, attr.name))
                    # All of a cluster's attributes in one frame, once more with each of
                    # them marked unsupported beforehand.
                    frame = b"".join(encode(int(a.id), int(a.zcl_type), 1) for a in attrs)
                    for unsupported in ((), tuple(names)):
                        by_zigpy, by_fast = both_paths(
                            fast, watch, child.device, binding.endpoint, cluster, frame,
                            names, unsupported)
                        assert by_fast == by_zigpy
                        assert all(c[2:] == (False, True) for c in by_fast["cache"].values())
            table = {(m.cluster_id, p.attribute) for m in mapping.TABLE if m.server
                     for p in m.every_property() if p.attribute}
            assert covered == table  # every attribute the bridge maps was compared
            await bridge.stop()

    run_async(main(), timeout=90.0)


def _refused(fast: FastReports, cluster: Any, dev: Any, ep: int, pkt: Any,
             what: str = "") -> None:
    names = [a.name for a in cluster.attributes.values()]
    before = ({n: cluster.get(n) for n in names}, dev.last_seen, dev.lqi, dev.rssi)
    taken = fast.taken
    assert not fast.take(pkt), what
    assert fast.taken == taken
    assert ({n: cluster.get(n) for n in names}, dev.last_seen, dev.lqi, dev.rssi) == before, \
        what


def test_frames_it_does_not_reproduce_are_refused_without_effect(radio: Radio) -> None:
    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio, min_interval=3600.0)
            plug = bridge.children[await join(bridge, pub, "plug")]
            fast = bridge.fast.reports
            assert fast is not None
            dev = plug.device
            # A device that joined keeps keys, not packets, in its duplicate filter.
            assert type(dev._packet_debouncer) is CompactDebouncer
            # Its clusters share zigpy's database listeners: equal ones are one object.
            db = bridge.app._dblistener
            mine = [listener for ep in dev.endpoints.values()
                    for clusters in (getattr(ep, "in_clusters", {}),
                                     getattr(ep, "out_clusters", {}))
                    for cluster in clusters.values()
                    for listeners in cluster._event_listeners.values()
                    for listener in listeners
                    if getattr(listener.callback, "__self__", None) is db]
            assert len(mine) > len({id(m) for m in mine}) == len(set(mine))
            meter = dev.endpoints[1].in_clusters[0x0B04]
            power = meter.find_attribute("active_power")  # int16
            good = encode(int(power.id), 0x29, 1234)
            bad_frames = {
                "truncated header": b"\x18\x01",
                "no records": report(b""),
                "truncated record": report(good[:-1]),
                "record without a value": report(good[:3]),
                "bytes left over": report(good + b"\x00"),
                "wrong wire type": report(encode(int(power.id), 0x21, 1234)),
                "unknown type": report(good[:2] + b"\xff\x00\x00"),
                "a string": report(good[:2] + b"\x42\x02hi"),
                "a float": report(good[:2] + b"\x39" + bytes(4)),
                "unknown attribute": report(encode(0x7777, 0x29, 1)),
                "default response wanted": report(good, frame_control=0x08),
                "manufacturer-specific": report(good, frame_control=0x1C),
                "cluster command": report(good, frame_control=0x19),
                "read attributes response": report(good, command=0x01),
            }
            for what, data in bad_frames.items():
                _refused(fast, meter, dev, 1, packet(dev, 1, 0x0B04, data), what)
            on_off = dev.endpoints[1].in_clusters[0x0006]
            bool2 = report(encode(int(on_off.find_attribute("on_off").id), 0x10, 0)[:-1]
                           + b"\x02")
            _refused(fast, on_off, dev, 1, packet(dev, 1, 0x0006, bool2))
            basic = dev.endpoints[1].in_clusters[0x0000]  # not mapped
            _refused(fast, basic, dev, 1, packet(dev, 1, 0x0000, report(
                b"\x00\x00\x20\x03")))
            _refused(fast, meter, dev, 1, packet(dev, 1, 0x0B04, report(good), profile=0xC05E))
            _refused(fast, meter, dev, 1, packet(dev, 9, 0x0B04, report(good)))  # no such ep
            stranger = packet(dev, 1, 0x0B04, report(good))
            stranger.src.address = t.NWK(0x7A7A)  # nobody has this address
            _refused(fast, meter, dev, 1, stranger)

            # zigpy's is_initialized, asked again whatever the path saw before: an
            # endpoint not interviewed yet, or no node descriptor, and zigpy decides.
            assert fast.take(packet(dev, 1, 0x0B04, report(good)))
            dev.add_endpoint(7)
            assert not dev.is_initialized
            _refused(fast, meter, dev, 1, packet(dev, 1, 0x0B04, report(good)), "new ep")
            del dev.endpoints[7]
            assert fast.take(packet(dev, 1, 0x0B04, report(good)))
            node_desc, dev.node_desc = dev.node_desc, None
            _refused(fast, meter, dev, 1, packet(dev, 1, 0x0B04, report(good)), "no desc")
            dev.node_desc = node_desc
            assert fast.take(packet(dev, 1, 0x0B04, report(good)))
            dev._reinterview_in_progress = True  # zigpy has a shadow device in its place
            _refused(fast, meter, dev, 1, packet(dev, 1, 0x0B04, report(good)), "reinterview")
            dev._reinterview_in_progress = False
            assert fast.take(packet(dev, 1, 0x0B04, report(good)))

            # Malformed frames through the whole path: zigpy drops them, nothing changes.
            cached = meter.get("active_power")
            for what in ("truncated record", "record without a value"):
                bridge.app.packet_received(packet(dev, 1, 0x0B04, bad_frames[what]))
                assert meter.get("active_power") == cached, what
            # A good one through the whole path is the fast path's.
            taken = fast.taken
            bridge.app.packet_received(packet(dev, 1, 0x0B04, report(good)))
            assert fast.taken == taken + 1 and meter.get("active_power") == 1234
            await bridge.stop()

    run_async(main(), timeout=60.0)


def test_gatewayctl_status_counts_what_the_fast_paths_took_and_the_filters_evictions(
        radio: Radio) -> None:
    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            plug = await join(bridge, pub, "plug")
            fast = bridge.fast.reports
            assert fast is not None
            before = bridge.status()["fast_path"]
            assert before["duplicates"]["evicted"] == 0
            fast._intern.max_keys = 1  # a window that is full from its second key
            for power in (11, 12, 13):  # distinct reports: each one a new key
                await bridge.sim.call("report", {"ieee": plug, "cluster": "electrical_measurement",
                                                 "attributes": {"active_power": power}})
                await pub.until(lambda p=power: pub.value(dev_id(plug), "meter/power") == p / 10)
            after = bridge.status()["fast_path"]
            assert after["reports"] >= before["reports"] + 3
            if radio.kind == "bellows":  # the EZSP frames came through bellows' fast path
                assert after["frames"] >= before["frames"] + 3
            else:
                assert after["frames"] is None
            assert after["duplicates"]["evicted"] >= 2
            assert after["duplicates"]["keys"] == len(fast._intern)
            await bridge.stop()

    run_async(main(), timeout=60.0)


def test_off_on_another_zigpy_version(radio: Radio, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pinned, "ZIGPY_VERSION", "0.0.0")

    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            assert bridge.fast.reports is None
            assert bridge.status()["fast_path"] is None
            # One pin: the zigbee.db workarounds and the command fast path stand aside
            # with the report fast path.
            assert not hasattr(bridge.app._dblistener, "_gatewayd_write_batch")
            assert bridge.fast.commands is None
            ieee = await join(bridge, pub, "th-sensor", "sleeping")
            await bridge.sim.call("report", {"ieee": ieee, "cluster": "temperature",
                                             "attributes": {"measured_value": 2345}})
            await pub.until(lambda: pub.value(dev_id(ieee), "sensor/temperature") == 23.45)
            plug = await join(bridge, pub, "plug")  # a /set through zigpy's own command
            assert await on_set(pub, dev_id(plug), "switch/on-off")(True) is True
            await pub.until(lambda: pub.value(dev_id(plug), "switch/on-off") is True)
            await bridge.stop()

    run_async(main(), timeout=60.0)


def test_mapped_clusters_are_the_tables_server_clusters() -> None:
    assert fastpath.mapped_clusters() == {m.cluster_id for m in mapping.TABLE if m.server}
    assert foundation.GeneralCommand.Report_Attributes == fastpath.REPORT_ATTRIBUTES


def test_duplicate_filter_keys_are_equal_exactly_when_zigpy_finds_the_packets_equal() -> None:
    """gatewayd/zigbee/dedup.py keeps a key per packet instead of the packet: each field
    zigpy compares must tell keys apart, the ones it ignores must not, and a frame's key
    must be the key of the packet a radio library would have made of it."""
    debouncer = CompactDebouncer(Shared())
    nwk = t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(0x1234))
    base = t.ZigbeePacket(
        src=nwk, src_ep=t.uint8_t(1),
        dst=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(0)),
        dst_ep=t.uint8_t(1), tsn=None, profile_id=t.uint16_t(0x0104),
        cluster_id=t.uint16_t(0x0B04), data=t.SerializableBytes(b"\x18\x01\x0a\x0b\x05"),
        tx_options=t.TransmitOptions.NONE, lqi=None, rssi=None)
    changes: dict[str, Any] = {
        "src": t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(0x1235)),
        "src_ep": t.uint8_t(2), "dst_ep": t.uint8_t(2), "profile_id": t.uint16_t(0x0105),
        "cluster_id": t.uint16_t(0x0B05), "data": t.SerializableBytes(b"\x18\x01\x0a\x0b\x06"),
        "tx_options": t.TransmitOptions.APS_Encryption, "tsn": t.uint8_t(7),
        "lqi": t.uint8_t(200), "rssi": t.int8s(-50), "radius": t.uint8_t(3),
        "priority": 5, "source_route": [t.NWK(1)], "extended_timeout": True,
        "alias_src": t.NWK(9), "alias_seq": t.uint8_t(9), "non_member_radius": t.uint8_t(1),
        "dst": t.AddrModeAddress(addr_mode=t.AddrMode.Group, address=t.Group(0)),
        "timestamp": base.timestamp.replace(year=2001),  # not compared by zigpy
    }
    ieee_src = t.AddrModeAddress(addr_mode=t.AddrMode.IEEE,
                                 address=t.EUI64.convert("00:0d:6f:00:00:00:02:01"))
    assert debouncer.packet_key(base.replace(src=ieee_src)) == debouncer.packet_key(
        base.replace(src=ieee_src.replace()))
    for field, value in changes.items():
        other = base.replace(**{field: value})
        assert (debouncer.packet_key(other) == debouncer.packet_key(base)) == (other == base), \
            field
    # Taking over from zigpy's filter keeps what it remembered.
    zigpys = Debouncer()
    zigpys._loop = debouncer._loop = _Loop()  # type: ignore[misc]
    assert not zigpys.filter(obj=base, expire_in=10)
    taken_over = CompactDebouncer.taking_over(zigpys, Shared())
    taken_over._loop = _Loop()  # type: ignore[misc]
    assert taken_over.filter(obj=base.replace(), expire_in=10)  # the same packet again
    assert not taken_over.filter(obj=base.replace(src_ep=t.uint8_t(3)), expire_in=10)
    assert debouncer.frame_key(debouncer.address(nwk), 1, debouncer.address(base.dst), 1,
                               0x0104, 0x0B04, b"\x18\x01\x0a\x0b\x05",
                               t.TransmitOptions.NONE) == debouncer.packet_key(base)


class _Loop:
    """The one thing a Debouncer asks of its event loop: the time (fixed here)."""

    def time(self) -> float:
        return 100.0


def test_the_childs_attribute_lookup_answers_as_cluster_get(radio: Radio) -> None:
    """Child._getter (what the converters read multipliers and divisors through) skips
    Cluster.get's lookup by name on a plain cluster: same answers, cached or not,
    unsupported, unknown; a cluster class with its own ``get`` (a quirk's) is asked."""
    def by_zigpy(cluster: Any, name: str) -> Any:
        try:
            return cluster.get(name)
        except KeyError:
            return None

    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio, min_interval=3600.0)
            plug = bridge.children[await join(bridge, pub, "plug")]
            for binding in plug.plan.bindings:
                cluster = plug._cluster(binding)
                get = plug._getter(cluster)
                names = [*cluster.attributes_by_name, "no_such_attribute"]
                assert [get(n) for n in names] == [by_zigpy(cluster, n) for n in names]
                assert any(get(n) is not None for n in names), binding.cmap.cluster
                for attr in list(cluster.attributes_by_name.values())[::2]:
                    cluster._attr_cache.mark_unsupported(attr)
                assert [get(n) for n in names] == [by_zigpy(cluster, n) for n in names]
                assert None in [get(n) for n in names[:-1]]
                cluster._attr_cache.clear()
                assert [get(n) for n in names] == [None] * len(names)

            meter = plug.device.endpoints[1].in_clusters[0x0B04]
            meter._update_attribute(meter.find_attribute("ac_power_divisor").id, 10)
            # What the device answered UNSUPPORTED stands for the mapping's default, on
            # both paths; one only unread is still unknown.
            defaults = {"ac_power_multiplier": 1, "ac_current_divisor": 1}
            meter._attr_cache.mark_unsupported(meter.find_attribute("ac_power_multiplier"))
            seen = ("ac_power_multiplier", "ac_current_divisor", "ac_power_divisor")
            assert [plug._getter(meter, defaults)(n) for n in seen] == [1, None, 10]

            class Quirked(type(meter)):  # type: ignore[misc]
                _skip_registry = True  # as zigpy's quirk clusters: not the class for 0x0B04

                def get(self, key: int | str, default: Any | None = None) -> Any:
                    return 42 if key == "ac_power_divisor" else super().get(key, default)

            meter.__class__ = Quirked
            assert plug._getter(meter)("ac_power_divisor") == 42
            assert [plug._getter(meter, defaults)(n) for n in seen] == [1, None, 42]
            await bridge.stop()

    run_async(main(), timeout=60.0)
