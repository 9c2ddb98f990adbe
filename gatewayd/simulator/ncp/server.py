"""The NCP's serial line as a TCP server: the NCP side of an ASH session, one host at a
time, with fault injection and counters.

ASH (UG101) on the NCP side: a host's RST resets the NCP and is answered by RSTACK
(version 2, RESET_SOFTWARE); DATA frames are numbered mod 8 and acknowledged, by our
own DATA frames' ackNum (piggy-backed) or by an ACK frame; an out-of-sequence or
corrupted DATA frame is NAKed once (the reject condition); our DATA frames stay
unacknowledged in a window of :data:`TX_WINDOW` and are sent again, with the reTx bit,
after a NAK or after :attr:`AshSession.ack_timeout` without an acknowledgement. That
timeout follows the measured acknowledgement time (four times its smoothed value, from
:data:`ACK_TIMEOUT_MIN` to UG101's 0.4 s): a loopback line answers in a millisecond, and
with UG101's fixed 0.4 s (or its doubling after each expiry) a noisy line, where every
NAK the host suppresses in its reject condition costs one expiry, carried a few dozen
frames a second. Losses here are noise, not congestion: nothing backs off.

Faults: :meth:`NcpServer.reset` (the NCP restarts and says so with an unsolicited
RSTACK), :meth:`NcpServer.drop` (the TCP connection is closed; the server accepts the
next one), :meth:`NcpServer.unplug` and :meth:`~NcpServer.replug` (the port stops
listening until the dongle is back), line noise (a rate of bytes corrupted or lost in
both directions, from a seeded RNG) and a delay before every frame the NCP sends (a slow
NCP).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import random
from typing import Any

from gatewayd.simulator.ncp import ash
from gatewayd.simulator.ncp.ncp import Ncp

log = logging.getLogger(__name__)

TX_WINDOW = 3  # our DATA frames in flight before we wait for an acknowledgement
ACK_TIMEOUT = 0.4  # seconds before unacknowledged DATA frames are sent again, at most
ACK_TIMEOUT_MIN = 0.02  # ... and at least
# Frames waiting for the serial line. A real NCP has a few dozen packet buffers: with the
# line backed up it stops taking frames from the air (devices' MAC retries hold them back),
# so :attr:`NcpServer.room` closes above HIGH_WATER and opens again at LOW_WATER; the air
# and its report stream wait for it. Without this, a fast report stream queued thousands
# of callbacks, and a command's response waited behind all of them.
HIGH_WATER = 24
LOW_WATER = 8


@dataclasses.dataclass
class Counters:
    frames_in: int = 0
    frames_out: int = 0
    naks_sent: int = 0
    naks_received: int = 0
    retransmissions_received: int = 0
    retransmissions_sent: int = 0
    bad_frames_received: int = 0
    resets: int = 0
    connections: int = 0
    bytes_corrupted: int = 0
    bytes_dropped: int = 0


class LineNoise:
    """Corrupts (flips one bit) or drops each byte with probability ``rate``."""

    def __init__(self, rate: float = 0.0, seed: int | None = None) -> None:
        self.rate = rate
        self.rng = random.Random(seed)  # noqa: S311 - reproducible noise, not security

    def apply(self, data: bytes, counters: Counters) -> bytes:
        if self.rate <= 0:
            return data
        out = bytearray()
        for byte in data:
            if self.rng.random() >= self.rate:
                out.append(byte)
            elif self.rng.random() < 0.5:
                counters.bytes_dropped += 1
            else:
                counters.bytes_corrupted += 1
                out.append(byte ^ (1 << self.rng.randrange(8)))
        return bytes(out)


class AshSession(asyncio.Protocol):
    """One host connection: ASH framing, sequencing, acknowledgement, retransmission."""

    def __init__(self, server: NcpServer) -> None:
        self.server = server
        self.ncp = server.ncp
        self.counters = server.counters
        self.transport: asyncio.Transport | None = None
        self.decoder = ash.Decoder()
        self.ack_timeout = ACK_TIMEOUT
        self._ack_time = ACK_TIMEOUT / 4  # smoothed time from a frame to its ACK
        self._loop = asyncio.get_running_loop()
        self._started = False  # a RST has been answered
        self._retx_handle: asyncio.TimerHandle | None = None
        self._pump_handle: asyncio.TimerHandle | None = None
        self._reset_ash()

    def _reset_ash(self) -> None:
        self._tx_seq = 0  # frmNum of our next new DATA frame
        self._rx_expected = 0  # frmNum of the host's next DATA frame
        self._reject = False
        self._unacked: collections.deque[tuple[int, bytes]] = collections.deque()
        self._sent_at: dict[int, float] = {}  # frames sent once, for the ack time
        self._pending: collections.deque[tuple[float, bytes]] = collections.deque()
        self._responses = 0  # responses at the front of _pending
        self.server.room.set()
        self._cancel_timers()

    def _cancel_timers(self) -> None:
        for handle in (self._retx_handle, self._pump_handle):
            if handle is not None:
                handle.cancel()
        self._retx_handle = self._pump_handle = None

    # -- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.counters.connections += 1
        self.ncp.sink = self.send_ezsp

    def connection_lost(self, exc: Exception | None) -> None:
        log.info("ncp: host connection closed (%s)", exc or "EOF")
        self.transport = None
        self._cancel_timers()
        self.server.room.set()  # nobody listens: what the air sends now is lost, not held
        if self.ncp.sink == self.send_ezsp:
            self.ncp.sink = None
        self.server.session_closed(self)

    def data_received(self, data: bytes) -> None:
        data = self.server.noise.apply(data, self.counters)
        for item in self.decoder.feed(data):
            if isinstance(item, ash.BadFrame):
                self.counters.bad_frames_received += 1
                log.debug("ncp: bad frame from host (%s): %s", item.reason, item.raw.hex())
                if self._started and item.looks_like_data:
                    self._nak()
                continue
            self.counters.frames_in += 1
            self._frame(item)

    # -- frames from the host -------------------------------------------------------------
    def _frame(self, frame: ash.Frame) -> None:
        if isinstance(frame, ash.Rst):
            self.ncp_reset(ash.ResetCode.SOFTWARE, by_host=True)
            return
        if not self._started:
            return  # UG101: before RST, everything but RST is ignored
        if isinstance(frame, ash.Data):
            self._acknowledged(frame.ack_num)
            self._data(frame)
        elif isinstance(frame, ash.Ack):
            self._acknowledged(frame.ack_num)
        elif isinstance(frame, ash.Nak):
            self.counters.naks_received += 1
            self._acknowledged(frame.ack_num)
            self._retransmit()

    def _data(self, frame: ash.Data) -> None:
        if frame.re_tx:
            self.counters.retransmissions_received += 1
        if frame.frm_num != self._rx_expected:
            if frame.re_tx:
                self._write(ash.Ack(self._rx_expected))  # a copy we already have
            else:
                self._nak()
            return
        self._rx_expected = (self._rx_expected + 1) % 8
        self._reject = False
        sent_before = self.counters.frames_out
        for n, reply in enumerate(self.ncp.handle(frame.payload)):
            self._queue(reply, response=n == 0)
        if self.counters.frames_out == sent_before:
            self._write(ash.Ack(self._rx_expected))  # nothing to piggy-back the ACK on

    def _nak(self) -> None:
        if not self._reject:
            self._reject = True
            self.counters.naks_sent += 1
            self._write(ash.Nak(self._rx_expected))

    def _acknowledged(self, ack_num: int) -> None:
        if not self._unacked:
            return
        acked = (ack_num - self._unacked[0][0]) % 8
        if acked > len(self._unacked):
            return  # not an ackNum for anything we sent: ignore it
        now = self._loop.time()
        for _ in range(acked):
            frm_num, _ = self._unacked.popleft()
            sent = self._sent_at.pop(frm_num, None)
            if sent is not None:  # Karn: a retransmitted frame's ack time says nothing
                self._ack_time = self._ack_time * 7 / 8 + (now - sent) / 8
                self.ack_timeout = min(ACK_TIMEOUT, max(ACK_TIMEOUT_MIN, 4 * self._ack_time))
        if acked:
            self._restart_retx_timer()
            self._pump()

    # -- frames to the host ---------------------------------------------------------------
    def send_ezsp(self, payload: bytes) -> None:
        """A callback from the NCP, outside any command."""
        self._queue(payload)

    def _queue(self, payload: bytes, response: bool = False) -> None:
        item = (self._loop.time() + self.server.delay, payload)
        if response:
            # A command's response goes out before callbacks still waiting for the line,
            # as an EmberZNet NCP answers at once and queues its callbacks: the host
            # waits for the response (bellows sends one command at a time).
            self._pending.insert(self._responses, item)
            self._responses += 1
        else:
            self._pending.append(item)
        if len(self._pending) >= HIGH_WATER:
            self.server.room.clear()
        self._pump()

    def _pump(self) -> None:
        if self._pump_handle is not None:
            self._pump_handle.cancel()
            self._pump_handle = None
        now = self._loop.time()
        while self._pending and len(self._unacked) < TX_WINDOW:
            due, payload = self._pending[0]
            if due > now:
                self._pump_handle = self._loop.call_at(due, self._pump)
                return
            self._pending.popleft()
            self._responses = max(0, self._responses - 1)
            if len(self._pending) <= LOW_WATER:
                self.server.room.set()
            self._unacked.append((self._tx_seq, payload))
            self._sent_at[self._tx_seq] = now
            self._write(ash.Data(frm_num=self._tx_seq, ack_num=self._rx_expected,
                                 payload=payload))
            self._tx_seq = (self._tx_seq + 1) % 8
            if self._retx_handle is None:
                self._restart_retx_timer()

    def _restart_retx_timer(self) -> None:
        if self._retx_handle is not None:
            self._retx_handle.cancel()
            self._retx_handle = None
        if self._unacked and self.transport is not None:
            self._retx_handle = self._loop.call_later(self.ack_timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._retx_handle = None
        self._retransmit()

    def _retransmit(self) -> None:
        self._sent_at.clear()
        for frm_num, payload in self._unacked:
            self.counters.retransmissions_sent += 1
            self._write(ash.Data(frm_num=frm_num, ack_num=self._rx_expected, payload=payload,
                                 re_tx=True))
        self._restart_retx_timer()

    def _write(self, frame: ash.Frame, prefix: bytes = b"") -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.counters.frames_out += 1
        data = prefix + ash.encode(frame)
        self.transport.write(self.server.noise.apply(data, self.counters))

    # -- resets ---------------------------------------------------------------------------
    def ncp_reset(self, code: int, *, by_host: bool = False) -> None:
        """The NCP restarts (asked by the host's RST, or on its own) and says so."""
        self.counters.resets += 1
        self.ncp.reset()
        self._reset_ash()
        self.decoder = ash.Decoder()
        self._started = True
        log.info("ncp: reset (%s, code 0x%02X)", "host RST" if by_host else "injected", code)
        self._write(ash.RstAck(reset_code=code), prefix=bytes((ash.CANCEL,)))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class NcpServer:
    """A TCP server for the NCP's serial line; one host connection at a time."""

    def __init__(self, ncp: Ncp, host: str = "127.0.0.1", port: int = 0, *,
                 noise: float = 0.0, seed: int | None = None, delay_ms: float = 0) -> None:
        self.ncp = ncp
        self.host, self.port = host, port
        self.counters = Counters()
        self.noise = LineNoise(noise, seed)
        self.delay = delay_ms / 1000
        self.session: AshSession | None = None
        self.plugged = True
        self.connected = asyncio.Event()
        self.room = asyncio.Event()  # open while the line to the host is not backed up
        self.room.set()
        self._server: asyncio.Server | None = None
        self._line_free = asyncio.Event()  # set (and replaced) when a host goes away
        ncp.on_reset_request = self._reset_requested

    def _reset_requested(self) -> None:
        self.reset(ash.ResetCode.SOFTWARE)  # resetNode: the NCP restarts as asked

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self.plugged = True
        return self.port

    def _protocol(self) -> asyncio.Protocol:
        if self.session is not None:
            # A host that closed its connection and opens the next one at once can be
            # accepted before its close is read (both are ready in one turn of the loop):
            # the newcomer waits a moment for the line to be free before it is refused.
            return _Waiting(self)
        return self._open_session()

    def _open_session(self) -> AshSession:
        self.session = AshSession(self)
        self.connected.set()
        return self.session

    def session_closed(self, session: AshSession) -> None:
        if self.session is session:
            self.session = None
            self.connected.clear()
            self._line_free.set()
            self._line_free = asyncio.Event()

    async def stop(self) -> None:
        if self.session is not None:
            self.session.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.ncp.save()

    # -- faults ---------------------------------------------------------------------------
    def reset(self, code: int = ash.ResetCode.POWER_ON) -> bool:
        """The NCP restarts mid-session: RAM state is lost, an unsolicited RSTACK says so."""
        if self.session is None:
            self.counters.resets += 1
            self.ncp.reset()
            return False
        self.session.ncp_reset(code)
        return True

    def drop(self) -> bool:
        """Close the host's TCP connection; the emulator keeps running."""
        if self.session is None:
            return False
        self.session.close()
        return True

    async def unplug(self) -> bool:
        """The dongle is pulled out: the host's connection drops and connections are
        refused (nothing listens on the port) until :meth:`replug`. False if it was out."""
        if not self.plugged:
            return False
        self.plugged = False
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self.drop()
        if server is not None:
            await server.wait_closed()
        return True

    async def replug(self) -> bool:
        """The dongle is back, on the same port. False if it was not out."""
        if self.plugged:
            return False
        await self.start()
        return True

    def set_noise(self, rate: float) -> None:
        if not 0 <= rate < 1:
            raise ValueError(f"noise rate must be from 0 up to 1, got {rate!r}")
        self.noise.rate = rate

    def set_delay(self, delay_ms: float) -> None:
        if not 0 <= delay_ms <= 60_000:
            raise ValueError(f"delay_ms must be from 0 to 60000, got {delay_ms!r}")
        self.delay = delay_ms / 1000

    def counters_json(self) -> dict[str, Any]:
        data: dict[str, Any] = dataclasses.asdict(self.counters)
        data["commands"] = dict(sorted(self.ncp.commands.items()))
        data["noise"] = self.noise.rate
        data["delay_ms"] = self.delay * 1000
        return data


HANDOVER_SECONDS = 1.0  # how long a second host waits for the first one to go away
EARLY_BYTES = 4096  # what it may send meanwhile (a host sends one RST and waits)


class _Waiting(asyncio.Protocol):
    """A second host's connection: it becomes the session if the first host goes away
    within :data:`HANDOVER_SECONDS` (what it sent meanwhile is kept), or is closed."""

    def __init__(self, server: NcpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.early: list[bytes] = []
        self.session: AshSession | None = None
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._task = asyncio.get_running_loop().create_task(self._wait(self.server._line_free))

    async def _wait(self, line_free: asyncio.Event) -> None:
        try:
            await asyncio.wait_for(line_free.wait(), HANDOVER_SECONDS)
        except TimeoutError:
            pass
        if self.transport is None:
            return  # gone while waiting
        if self.server.session is not None:
            log.warning("ncp: a second host connection is refused (one host at a time)")
            self.transport.close()
            return
        self.session = self.server._open_session()
        self.session.connection_made(self.transport)
        for data in self.early:
            self.session.data_received(data)
        self.early.clear()

    def data_received(self, data: bytes) -> None:
        if self.session is not None:
            self.session.data_received(data)
        elif sum(map(len, self.early)) + len(data) > EARLY_BYTES:
            assert self.transport is not None
            self.transport.abort()  # not a host waiting its turn
        else:
            self.early.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.session is not None:
            self.session.connection_lost(exc)
        elif self._task is not None:
            self._task.cancel()
