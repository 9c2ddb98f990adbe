"""The NCP side of the ASH session, driven byte by byte by a raw TCP client: reset,
sequencing, a window of three host frames, NAKs, retransmissions both ways, faults."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from gatewayd.simulator.ncp import ash
from gatewayd.simulator.ncp.emulator import Emulator
from tests.helpers import run_async

pytestmark = pytest.mark.timeout(30)

VERSION_LEGACY = bytes((0, 0, 0, 14))


def nop(seq: int) -> bytes:
    return bytes((seq, 0, 1, 0x05, 0x00))


class Host:
    """A minimal ASH host: frames in, frames out, no automatic anything."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = ash.Decoder()
        self.frames: list[ash.Frame | ash.BadFrame] = []

    def send(self, frame: ash.Frame, raw: bytes | None = None) -> None:
        self.writer.write(raw if raw is not None else ash.encode(frame))

    async def next(self, timeout: float = 5.0) -> ash.Frame | ash.BadFrame:
        async with asyncio.timeout(timeout):
            while not self.frames:
                data = await self.reader.read(4096)
                assert data, "the NCP closed the connection"
                self.frames.extend(self.decoder.feed(data))
        return self.frames.pop(0)

    async def reset(self) -> None:
        self.writer.write(bytes((ash.CANCEL,)) + ash.encode(ash.Rst()))
        assert await self.next() == ash.RstAck(reset_code=ash.ResetCode.SOFTWARE)


@asynccontextmanager
async def host(emu: Emulator) -> AsyncIterator[Host]:
    reader, writer = await asyncio.open_connection("127.0.0.1", emu.port)
    try:
        yield Host(reader, writer)
    finally:
        writer.close()


def test_reset_window_of_three_piggybacked_acks_and_naks() -> None:
    async def main() -> None:
        emu = await Emulator(None, control_port=None).start()
        async with host(emu) as h:
            # Nothing but RST is answered before the first RST.
            h.send(ash.Data(frm_num=0, ack_num=0, payload=VERSION_LEGACY))
            await h.reset()
            h.send(ash.Data(frm_num=0, ack_num=0, payload=VERSION_LEGACY))
            reply = await h.next()
            assert isinstance(reply, ash.Data)
            assert (reply.frm_num, reply.ack_num) == (0, 1)  # ACK piggy-backed
            assert reply.payload[:3] == bytes((0, 0x80, 0)) and reply.payload[3] == 14
            # Three frames in flight at once, all answered in order.
            for i in range(3):
                h.send(ash.Data(frm_num=1 + i, ack_num=1, payload=nop(1 + i)))
            replies = [await h.next() for _ in range(3)]
            assert [(r.frm_num, r.ack_num, r.payload[0]) for r in replies
                    if isinstance(r, ash.Data)] == [(1, 2, 1), (2, 3, 2), (3, 4, 3)]
            h.send(ash.Ack(ack_num=4))
            # Out of sequence: NAKed once (the reject condition), not twice.
            h.send(ash.Data(frm_num=6, ack_num=4, payload=nop(9)))
            h.send(ash.Data(frm_num=7, ack_num=4, payload=nop(10)))
            assert await h.next() == ash.Nak(ack_num=4)
            # A corrupted frame after the reject condition is cleared is NAKed as well.
            h.send(ash.Data(frm_num=4, ack_num=4, payload=nop(4)))
            assert isinstance(await h.next(), ash.Data)
            wire = bytearray(ash.encode(ash.Data(frm_num=5, ack_num=5, payload=nop(5))))
            wire[3] ^= 0x01
            h.send(ash.Ack(0), raw=bytes(wire))
            assert await h.next() == ash.Nak(ack_num=5)
            # A retransmitted copy of a frame already received is ACKed, not executed.
            h.send(ash.Data(frm_num=4, ack_num=5, payload=nop(4), re_tx=True))
            assert await h.next() == ash.Ack(ack_num=5)
            counters = emu.server.counters
            assert (counters.naks_sent, counters.retransmissions_received) == (2, 1)
            assert counters.bad_frames_received == 1
            assert emu.ncp.commands["nop"] == 4
        await emu.stop()

    run_async(main(), 20)


def test_unacknowledged_frames_are_sent_again_with_the_retx_bit() -> None:
    async def main() -> None:
        emu = await Emulator(None, control_port=None).start()
        async with host(emu) as h:
            await h.reset()
            assert emu.server.session is not None
            emu.server.session.ack_timeout = 0.1
            h.send(ash.Data(frm_num=0, ack_num=0, payload=VERSION_LEGACY))
            first = await h.next()
            again = await h.next()  # no ACK from us: the NCP sends it again
            assert isinstance(first, ash.Data) and isinstance(again, ash.Data)
            assert (again.frm_num, again.re_tx, again.payload) == (0, True, first.payload)
            h.send(ash.Nak(ack_num=0))  # a NAK gets the frame at once
            assert isinstance(nak_reply := await h.next(), ash.Data) and nak_reply.re_tx
            h.send(ash.Ack(ack_num=1))
            counters = emu.server.counters
            assert counters.retransmissions_sent >= 2 and counters.naks_received == 1
            # The NCP resets on its own: an unsolicited RSTACK.
            emu.server.reset()
            assert await h.next() == ash.RstAck(reset_code=ash.ResetCode.POWER_ON)
            assert emu.ncp.version_set is False
            # The TCP drop fault closes the connection; the server takes the next one.
            assert emu.server.drop() is True
            assert await h.reader.read() == b""
        async with host(emu) as h:
            await h.reset()
            assert emu.server.counters.connections == 2
        await emu.stop()

    run_async(main(), 20)


def test_a_host_that_reconnects_at_once_is_not_refused() -> None:
    """A host that closes its connection and opens the next at once (zigbee-herdsman's
    stop-then-start) may be accepted before the NCP has read the close: it waits for the
    line instead of being refused, and what it sent meanwhile is answered."""
    async def main() -> None:
        emu = await Emulator(None, control_port=None).start()
        async with host(emu) as first:
            await first.reset()
            async with host(emu) as second:  # connected while the first still holds the line
                second.writer.write(bytes((ash.CANCEL,)) + ash.encode(ash.Rst()))
                await second.writer.drain()
                first.writer.close()  # the first host goes away after the second came
                assert await second.next() == ash.RstAck(reset_code=ash.ResetCode.SOFTWARE)
                assert emu.server.counters.connections == 2
        await emu.stop()

    run_async(main(), 20)


def test_second_host_is_refused_and_slow_ncp_delays_frames() -> None:
    async def main() -> None:
        emu = await Emulator(None, control_port=None, delay_ms=150).start()
        async with host(emu) as h, host(emu) as intruder:
            assert await intruder.reader.read() == b""  # one host at a time
            await h.reset()  # RSTACK is not a DATA frame: not delayed
            h.send(ash.Data(frm_num=0, ack_num=0, payload=VERSION_LEGACY))
            # Without a delay the answer itself acknowledges the command (its DATA frame
            # comes first); a slow NCP acknowledges at once and answers later.
            assert await h.next() == ash.Ack(ack_num=1)
            reply = await h.next()
            assert isinstance(reply, ash.Data)
        await emu.stop()

    run_async(main(), 20)
