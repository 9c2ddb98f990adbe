"""bellows' ASH reading sped up (gatewayd/zigbee/ash_fast.py) against bellows' own.

The codec functions are compared with bellows' on arbitrary bytes; the reading is
compared by feeding the same byte stream, cut into reads anywhere, to a stock
``AshProtocol`` and to one with :class:`FastAsh` installed: the same frames reach EZSP,
the same NAKs go out, the same state is left, and the ACKs differ only in being one per
read. Through the emulator, bellows runs with it installed.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

import bellows.ash as ash
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatewayd.zigbee.ash_fast import FastAsh, parse, randomize, unstuff
from tests.helpers import run_async
from tests.test_bridge import dev_id, join, started
from tests.zigbee_radios import Radio, sim

RESERVED = [int(b) for b in ash.Reserved]


def outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args)
    except Exception as exc:  # the same error, with the same words, or the test fails
        return type(exc).__name__, str(exc)


# bytes with many reserved ones: random bytes alone would seldom exercise the escapes
_bytes = st.lists(st.one_of(st.integers(0, 255), st.sampled_from([*RESERVED, 0x5D, 0x5E])),
                  max_size=300).map(bytes)


@given(_bytes)
def test_unstuff_is_bellows_unstuff(data: bytes) -> None:
    assert outcome(unstuff, data) == outcome(ash.AshProtocol._unstuff_bytes, data)


@given(_bytes)
def test_randomize_is_bellows_randomize(data: bytes) -> None:
    assert outcome(randomize, data) == outcome(ash.DataFrame._randomize, data)


@given(_bytes)
def test_parse_is_bellows_parse(data: bytes) -> None:
    ours, theirs = outcome(parse, data), outcome(ash.parse_frame, data)
    assert ours == theirs


# ---- the reading --------------------------------------------------------------------------

class Ezsp:
    """What sits above ASH: records the EZSP frames handed up."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.frames.append(bytes(data))

    def connection_made(self, transport: Any) -> None: ...


class Line:
    """The serial transport: records the frames written, decoded."""

    def __init__(self) -> None:
        self.written: list[ash.AshFrame] = []

    def write(self, data: bytes) -> None:
        assert data.endswith(bytes([ash.Reserved.FLAG]))
        self.written.append(ash.parse_frame(ash.AshProtocol._unstuff_bytes(data[:-1])))

    def is_closing(self) -> bool:
        return False


def protocol(fast: bool) -> tuple[ash.AshProtocol, Ezsp, Line, FastAsh | None]:
    ezsp, line = Ezsp(), Line()
    p = ash.AshProtocol(ezsp)
    p.connection_made(line)
    installed = FastAsh.install(p) if fast else None
    assert (installed is not None) == fast
    return p, ezsp, line, installed


def wire(frame: ash.AshFrame) -> bytes:
    return bytes(ash.AshProtocol._stuff_bytes(frame.to_bytes())) + bytes([ash.Reserved.FLAG])


_piece = st.one_of(
    # DATA frames, mostly in sequence (the test numbers them), some not
    st.builds(lambda payload, skip, re_tx: ("data", payload, skip, re_tx),
              st.binary(max_size=60), st.sampled_from([0, 0, 0, 1]), st.booleans()),
    st.builds(lambda n: ("ack", n), st.integers(0, 7)),
    st.builds(lambda b: ("raw", b), st.binary(max_size=12)),  # noise, a cut frame
    st.sampled_from([("byte", b) for b in RESERVED]),  # cancel, substitute, XON, ...
    st.builds(lambda payload: ("bad crc", payload), st.binary(min_size=1, max_size=20)),
)


def stream(pieces: list[tuple[Any, ...]]) -> bytes:
    out = bytearray()
    seq = 0
    for piece in pieces:
        kind = piece[0]
        if kind == "data":
            _, payload, skip, re_tx = piece
            seq = (seq + skip) % 8
            out += wire(ash.DataFrame(frm_num=seq, re_tx=re_tx, ack_num=0,
                                      ezsp_frame=payload))
            seq = (seq + 1) % 8
        elif kind == "ack":
            out += wire(ash.AckFrame(res=0, ncp_ready=0, ack_num=piece[1]))
        elif kind == "raw":
            out += piece[1]
        elif kind == "byte":
            out.append(piece[1])
        else:
            good = wire(ash.DataFrame(frm_num=seq, re_tx=0, ack_num=0, ezsp_frame=piece[1]))
            out += good[:-3] + bytes([good[-3] ^ 0x01]) + good[-2:]
    return bytes(out)


def read(p: ash.AshProtocol, line: Line, data: bytes, cuts: list[int]) -> list[list[Any]]:
    """Feed ``data`` in reads cut at ``cuts``; what was written during each read."""
    written = []
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    for start, end in itertools.pairwise(bounds):
        mark = len(line.written)
        p.data_received(data[start:end])
        written.append(line.written[mark:])
    return written


def state(p: ash.AshProtocol) -> tuple[Any, ...]:
    return (p._rx_seq, p._in_reject_condition, p._discarding_until_next_flag,
            bytes(p._buffer))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(_piece, max_size=25), st.lists(st.integers(0, 10_000), max_size=8))
def test_reading_is_bellows_reading_with_one_ack_per_read(pieces: list[tuple[Any, ...]],
                                                          cuts: list[int]) -> None:
    data = stream(pieces)
    stock, stock_ezsp, stock_line, _ = protocol(fast=False)
    fast, fast_ezsp, fast_line, installed = protocol(fast=True)
    by_stock = read(stock, stock_line, data, cuts)
    by_fast = read(fast, fast_line, data, cuts)
    assert fast_ezsp.frames == stock_ezsp.frames
    assert state(fast) == state(stock)
    for theirs, ours in zip(by_stock, by_fast, strict=True):
        assert [f for f in ours if isinstance(f, ash.NakFrame)] == \
            [f for f in theirs if isinstance(f, ash.NakFrame)]
        acks = [f for f in theirs if isinstance(f, ash.AckFrame)]
        # one ACK for the read, with the latest ackNum bellows sent in it
        assert [f for f in ours if isinstance(f, ash.AckFrame)] == acks[-1:]
    assert installed is not None and installed.acks == sum(1 for r in by_stock if any(
        isinstance(f, ash.AckFrame) for f in r))


def test_three_frames_in_one_read_get_one_ack() -> None:
    p, ezsp, line, fast = protocol(fast=True)
    frames = [ash.DataFrame(frm_num=n, re_tx=0, ack_num=0, ezsp_frame=bytes([n, 0x7E, 0x11]))
              for n in range(3)]
    p.data_received(b"".join(wire(f) for f in frames))
    assert ezsp.frames == [f.ezsp_frame for f in frames]
    assert line.written == [ash.AckFrame(res=0, ncp_ready=0, ack_num=3)]
    p.data_received(wire(ash.DataFrame(frm_num=3, re_tx=0, ack_num=0, ezsp_frame=b"x")))
    assert line.written[1:] == [ash.AckFrame(res=0, ncp_ready=0, ack_num=4)]
    assert fast is not None and (fast.reads, fast.acks) == (2, 2)


def test_with_bellows_debug_log_on_bellows_reads(caplog: pytest.LogCaptureFixture) -> None:
    p, ezsp, line, fast = protocol(fast=True)
    frames = [ash.DataFrame(frm_num=n, re_tx=0, ack_num=0, ezsp_frame=b"ab") for n in range(2)]
    with caplog.at_level(logging.DEBUG, logger=ash.__name__):
        p.data_received(b"".join(wire(f) for f in frames))
    assert "Received data" in caplog.text  # bellows' own log of the read
    assert len(line.written) == 2 and len(ezsp.frames) == 2  # and an ACK per frame
    assert fast is not None and fast.reads == 0


def test_a_subclass_reads_for_itself() -> None:
    class Tap(ash.AshProtocol):
        def data_received(self, data: bytes) -> None:
            super().data_received(data)

    assert FastAsh.install(Tap(Ezsp())) is None
    assert FastAsh.install(object()) is None


def test_bellows_reads_through_it_on_the_emulator(tmp_path: Path) -> None:
    async def run(tmp: Any) -> None:
        async with Radio("bellows", tmp) as radio:
            bridge, pub = await started(radio, min_interval=0.0)
            try:
                plug = await join(bridge, pub, "plug")
                fast = bridge.fast_frames.ash
                assert fast is not None and fast.reads > 0  # the join went through it
                reads = fast.reads
                await sim(bridge, "stream", count=50, offset=1)
                await pub.until(lambda: pub.value(dev_id(plug), "meter/power") == 5.0, 30)
                assert fast.reads > reads and 0 < fast.acks <= fast.reads
            finally:
                await bridge.stop()

    run_async(run(tmp_path), timeout=90.0)
