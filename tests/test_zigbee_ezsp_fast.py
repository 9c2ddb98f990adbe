"""bellows' side of the report fast path (gatewayd/zigbee/ezsp_fast.py) against bellows.

The hub runs unmodified bellows on the EZSP NCP emulator. ``incomingMessageHandler``
frames are built with bellows' own serializer from its own schema (not from the layout
the fast path reads), and each is handed once to bellows and zigpy (their
``frame_received`` and ``packet_received``, nothing of ours in between) and once to the
fast path; both must leave the same attribute cache, events, application-listener calls,
values for the bridge, LQI/RSSI and bellows' frame counters, and share zigpy's duplicate
filter. Frames it must leave to bellows are refused with nothing changed.
"""

from __future__ import annotations

import itertools
import logging
import threading
from pathlib import Path
from typing import Any

import bellows.types as bt
import pytest
from bellows.ezsp.v13 import EZSPv13
from bellows.ezsp.v14 import EZSPv14

from gatewayd.zigbee import ezsp_fast, pinned
from gatewayd.zigbee.ezsp_fast import FastFrames
from tests.helpers import run_async
from tests.test_bridge import join, started
from tests.test_zigbee_fastpath import Watch, encode, report
from tests.zigbee_radios import Radio

pytestmark = pytest.mark.timeout(120)

_seq = itertools.count(0x80)


def incoming(fast: FastFrames, dev: Any, cluster: int, message: bytes, *,
             profile: int = 0x0104, message_type: int = ezsp_fast.INCOMING_UNICAST,
             options: int = 0x0140, src_ep: int = 1, lqi: int = 201, rssi: int = -47,
             seq: int | None = None, trailing: bytes = b"") -> bytes:
    """An ``incomingMessageHandler`` callback frame as the NCP sends it (EZSP v14)."""
    protocol = fast.app._ezsp._protocol
    frame_id, _, schema = protocol.COMMANDS["incomingMessageHandler"]
    aps = bt.EmberApsFrame(profileId=profile, clusterId=cluster, sourceEndpoint=src_ep,
                           destinationEndpoint=1, options=bt.EmberApsOption(options),
                           groupId=0, sequence=next(_seq) & 0xFF)
    body = bt.serialize_dict([], {
        "message_type": message_type, "aps_frame": aps, "nwk": dev.nwk, "eui64": dev.ieee,
        "binding_index": 0xFF, "address_index": 0xFF, "lqi": lqi, "rssi": rssi,
        "timestamp": 12345, "message": message}, schema)
    if seq is None:
        seq = (protocol._seq + 0x80) & 0xFF  # no command of bellows waits for it
    return bytes([seq, 0x90, 0x01]) + frame_id.to_bytes(2, "little") + body + trailing


def rx_unicast(fast: FastFrames) -> int:
    return int(fast.app.state.counters["controller_app_counters"]["unicast_rx"].value)


class Paths:
    """One frame through bellows and zigpy alone, or through the fast path."""

    def __init__(self, bridge: Any, pub: Any) -> None:
        self.bridge = bridge
        self.fast = bridge.fast.frames
        assert self.fast is not None, "the EZSP fast path is installed on bellows"
        self.watch = Watch(bridge, pub)

    def outcome(self, dev: Any, cluster: Any, names: list[str]) -> dict[str, Any]:
        out = self.watch.outcome(cluster, names)
        out.update(lqi=dev.lqi, rssi=dev.rssi, rx=rx_unicast(self.fast))
        return out

    def by_bellows(self, frame: bytes, dev: Any, cluster: Any,
                   names: list[str]) -> dict[str, Any]:
        app = self.bridge.app
        reports = self.bridge.fast.reports
        self.watch.start()
        dev.lqi, dev.rssi = 0, 0
        app.packet_received = reports.zigpy_packet_received
        try:
            self.fast._bellows_frame_received(frame)
        finally:
            app.packet_received = reports.packet_received
        return self.outcome(dev, cluster, names)

    def by_fast(self, frame: bytes, dev: Any, cluster: Any,
                names: list[str]) -> dict[str, Any]:
        self.watch.start()
        dev.lqi, dev.rssi = 0, 0
        taken = self.fast.taken
        assert self.fast.take(frame)
        assert self.fast.taken == taken + 1
        return self.outcome(dev, cluster, names)


def test_the_frame_fast_path_equals_bellows_and_zigpy(tmp_path: Path) -> None:
    async def main(radio: Radio) -> None:
        bridge, pub = await started(radio, min_interval=3600.0)
        plug = bridge.children[await join(bridge, pub, "plug")]
        paths = Paths(bridge, pub)
        # bellows runs on the hub's loop: no serial thread of its own (radio.py).
        assert not [t.name for t in threading.enumerate() if t.name.startswith("bellows")]
        dev = plug.device
        meter = dev.endpoints[1].in_clusters[0x0B04]
        on_off = dev.endpoints[1].in_clusters[0x0006]
        cases = [
            (meter, encode(int(meter.find_attribute("active_power").id), 0x29, -1234)),
            (meter, encode(int(meter.find_attribute("rms_voltage").id), 0x21, 231)
             + encode(int(meter.find_attribute("rms_current").id), 0x21, 2)),
            (on_off, encode(int(on_off.find_attribute("on_off").id), 0x10, 1)),
            (on_off, encode(int(on_off.find_attribute("on_off").id), 0x10, 0)),
        ]
        for options in (0x0140, 0x0160):  # without and with APS encryption
            for cluster, records in cases:
                names = [a.name for a in cluster.attributes.values()]
                rx = rx_unicast(paths.fast)
                by_bellows = paths.by_bellows(incoming(
                    paths.fast, dev, cluster.cluster_id, report(records), options=options),
                    dev, cluster, names)
                assert by_bellows["rx"] == rx + 1 and by_bellows["events"]
                by_fast = paths.by_fast(incoming(
                    paths.fast, dev, cluster.cluster_id, report(records), options=options),
                    dev, cluster, names)
                assert by_fast["rx"] == rx + 2
                by_fast["rx"] -= 1
                assert by_fast == by_bellows
                assert (dev.lqi, dev.rssi) == (201, -47)

        # Both paths share zigpy's duplicate filter: the same frame again, through either
        # path, is counted and seen (LQI) but changes no value and emits nothing.
        power = meter.find_attribute("active_power")
        names = [a.name for a in meter.attributes.values()]
        for first, again in ((paths.by_bellows, paths.by_fast),
                             (paths.by_fast, paths.by_bellows)):
            frame = incoming(paths.fast, dev, 0x0B04, report(encode(int(power.id), 0x29,
                                                                     next(_seq))))
            assert first(frame, dev, meter, names)["events"]
            repeated = again(frame, dev, meter, names)
            assert repeated["events"] == []
            # zigpy tells the listeners before it filters: only the link quality moves.
            assert [key[1:] for key in repeated["handed"]] == [("$telemetry", "signal")]
            assert repeated["messages"] and repeated["lqi"] == 201
        await bridge.stop()

    async def run(tmp: Any) -> None:
        async with Radio("bellows", tmp) as radio:
            await main(radio)

    run_async(run(tmp_path), timeout=90.0)


def test_frames_it_leaves_to_bellows_change_nothing(tmp_path: Path) -> None:
    async def main(radio: Radio) -> None:
        bridge, pub = await started(radio, min_interval=3600.0)
        plug = bridge.children[await join(bridge, pub, "plug")]
        fast: FastFrames = bridge.fast.frames
        dev = plug.device
        meter = dev.endpoints[1].in_clusters[0x0B04]
        power = meter.find_attribute("active_power")
        good = report(encode(int(power.id), 0x29, 777))
        protocol = fast.app._ezsp._protocol
        busy_seq = (protocol._seq + 0x40) & 0xFF
        refused = {
            "broadcast": incoming(fast, dev, 0x0B04, good, message_type=int(
                bt.EmberIncomingMessageType.INCOMING_BROADCAST)),
            "multicast": incoming(fast, dev, 0x0B04, good, message_type=int(
                bt.EmberIncomingMessageType.INCOMING_MULTICAST)),
            "an APS fragment": incoming(fast, dev, 0x0B04, good, options=0x8140),
            "bytes left over": incoming(fast, dev, 0x0B04, good, trailing=b"\x00"),
            "truncated": incoming(fast, dev, 0x0B04, good)[:-1],
            "not a report": incoming(fast, dev, 0x0B04, report(good[3:], command=0x01)),
            "another profile": incoming(fast, dev, 0x0B04, good, profile=0xC05E),
            "an unmapped cluster": incoming(fast, dev, 0x0000, good),
            "an answer bellows waits for": incoming(fast, dev, 0x0B04, good, seq=busy_seq),
            "another frame id": b"\x01\x90\x01\x3f\x00" + bytes(30),
            "too short": b"\x01\x90\x01",
        }
        protocol._awaiting[busy_seq] = (0x0045, None, None)
        try:
            for what, frame in refused.items():
                before = (meter.get("active_power"), dev.lqi, rx_unicast(fast), fast.taken)
                assert not fast.take(frame), what
                assert (meter.get("active_power"), dev.lqi, rx_unicast(fast),
                        fast.taken) == before, what
        finally:
            del protocol._awaiting[busy_seq]

        frame = incoming(fast, dev, 0x0B04, report(encode(int(power.id), 0x29, 4321)))
        # An extra EZSP callback (a scan registers one) would not see the frame.
        ezsp = fast.app._ezsp
        with ezsp.callback_for_commands({"incomingMessageHandler"}, lambda *a: None):
            assert not fast.take(frame)
        # With bellows' debug log on, bellows handles (and logs) every frame.
        logger = logging.getLogger("bellows.zigbee.application")
        level = logger.level
        logger.setLevel(logging.DEBUG)
        try:
            assert not fast.take(frame)
        finally:
            logger.setLevel(level)
        assert meter.get("active_power") != 4321
        # Through the whole path (what the wire hands over), a good one is taken.
        taken = fast.taken
        fast.frame_received(frame)
        assert fast.taken == taken + 1 and meter.get("active_power") == 4321
        counts = bridge.status()["fast_path"]  # gatewayctl status
        assert counts["frames"] == fast.taken and counts["reports"] == bridge.fast.reports.taken
        await bridge.stop()

    async def run(tmp: Any) -> None:
        async with Radio("bellows", tmp) as radio:
            await main(radio)

    run_async(run(tmp_path), timeout=90.0)


def test_off_on_another_bellows_version(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pinned, "BELLOWS_VERSION", "0.0.0")

    async def run(tmp: Any) -> None:
        async with Radio("bellows", tmp) as radio:
            bridge, _ = await started(radio)
            assert bridge.fast.frames is None and bridge.fast.reports is not None
            await bridge.stop()

    run_async(run(tmp_path), timeout=60.0)


def test_the_layouts_are_bellows_own() -> None:
    """The two layouts read here are bellows' schemas for EZSP v4-v13 and v14+: a frame
    bellows serializes with its own schema decodes to the same fields."""
    aps = bt.EmberApsFrame(profileId=0x0104, clusterId=0x0B04, sourceEndpoint=3,
                           destinationEndpoint=1, options=bt.EmberApsOption(0x0160),
                           groupId=0x1234, sequence=0x56)
    fields = {
        EZSPv13: {"type": 0, "apsFrame": aps, "lastHopLqi": 199, "lastHopRssi": -61,
                  "sender": 0xABCD, "bindingIndex": 0xFF, "addressIndex": 2,
                  "messageContents": b"\x18\x01\x0a\x0b\x05\x29\xd2\x04"},
        EZSPv14: {"message_type": 0, "aps_frame": aps, "nwk": 0xABCD,
                  "eui64": bt.EUI64.convert("00:0d:6f:00:00:00:02:01"),
                  "binding_index": 0xFF, "address_index": 2, "lqi": 199, "rssi": -61,
                  "timestamp": 0xDEADBEEF,
                  "message": b"\x18\x01\x0a\x0b\x05\x29\xd2\x04"},
    }
    expected = ezsp_fast.Incoming(0, 0x0104, 0x0B04, 3, 1, 0x0160, 0xABCD, 199, -61,
                                  b"\x18\x01\x0a\x0b\x05\x29\xd2\x04")
    for cls, decoder in ((EZSPv13, ezsp_fast.decode_v4), (EZSPv14, ezsp_fast.decode_v14)):
        protocol = cls(None, None)
        assert ezsp_fast.decoder_for(protocol) is decoder, cls
        frame_id, _, schema = protocol.COMMANDS["incomingMessageHandler"]
        frame = b"\x07\x90\x01" + frame_id.to_bytes(2, "little") + bt.serialize_dict(
            [], fields[cls], schema)
        assert decoder(frame) == expected, cls
        assert decoder(frame + b"\x00") is None and decoder(frame[:-1]) is None
