"""The NCP's serial line as a TCP server: the NCP side of an ASH session, one host at a
time, with fault injection and counters.

ASH (UG101) on the NCP side: a host's RST resets the NCP and is answered by RSTACK
(version 2, RESET_SOFTWARE); DATA frames are numbered mod 8 and acknowledged, by our
own DATA frames' ackNum (piggy-backed) or by an ACK frame; an out-of-sequence or
corrupted DATA frame is NAKed once (the reject condition); our DATA frames stay
unacknowledged in a window of :data:`TX_WINDOW` and are sent again, with the reTx bit,
after a NAK or after :attr:`AshSession.ack_timeout` without an acknowledgement.

Faults: :meth:`NcpServer.reset` (the NCP restarts and says so with an unsolicited
RSTACK), :meth:`NcpServer.drop` (the TCP connection is closed; the server accepts the
next one), line noise (a rate of bytes corrupted or lost in both directions, from a
seeded RNG) and a delay before every frame the NCP sends (a slow NCP).
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
ACK_TIMEOUT = 0.4  # seconds before unacknowledged DATA frames are sent again


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
        self._pending: collections.deque[tuple[float, bytes]] = collections.deque()
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
        for reply in self.ncp.handle(frame.payload):
            self._queue(reply)
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
        for _ in range(acked):
            self._unacked.popleft()
        if acked:
            self._restart_retx_timer()
            self._pump()

    # -- frames to the host ---------------------------------------------------------------
    def send_ezsp(self, payload: bytes) -> None:
        """A callback from the NCP, outside any command."""
        self._queue(payload)

    def _queue(self, payload: bytes) -> None:
        self._pending.append((self._loop.time() + self.server.delay, payload))
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
            self._unacked.append((self._tx_seq, payload))
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
        self.connected = asyncio.Event()
        self._server: asyncio.Server | None = None
        ncp.on_reset_request = self._reset_requested

    def _reset_requested(self) -> None:
        self.reset(ash.ResetCode.SOFTWARE)  # resetNode: the NCP restarts as asked

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def _protocol(self) -> asyncio.Protocol:
        if self.session is not None:
            log.warning("ncp: a second host connection is refused (one host at a time)")
            return _Refuse()
        self.session = AshSession(self)
        self.connected.set()
        return self.session

    def session_closed(self, session: AshSession) -> None:
        if self.session is session:
            self.session = None
            self.connected.clear()

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


class _Refuse(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()
