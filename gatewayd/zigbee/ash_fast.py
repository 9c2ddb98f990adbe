"""bellows' ASH receive path with its byte loops in C.

bellows 1.2.1 reads the serial line (``AshProtocol.data_received``) a byte at a time in
Python three times over: it looks for the next reserved byte with a generator over the
buffer, unstuffs the frame with a loop (``_unstuff_bytes``) and derandomizes the DATA
payload with a list comprehension (``DataFrame._randomize``). On this machine that was
~11 µs a frame before the frame reached EZSP (an ACK written for each included).

:class:`FastAsh` does the same on one ``AshProtocol`` instance: a regular expression
finds the reserved bytes, ``bytes.split`` unstuffs and one integer XOR derandomizes.
Everything else (the frame's CRC, sequence numbers, the ACK for each DATA frame, NAKs
and the reject condition, retransmissions, the cancel, substitute and XON/XOFF bytes,
the buffer limit) is bellows' own code or follows it line by line, so the wire sees
what it sees with bellows; with bellows' debug log on, bellows reads the line itself.
tests/test_zigbee_ash_fast.py feeds the same byte streams, cut anywhere, to a stock and
a fast instance and compares what each hands to EZSP and writes, in order.

(One ACK per read instead of one per DATA frame, which ASH allows, was tried and
measured: no difference in the daemon's CPU, so bellows' wire behaviour stayed;
bench/README.md.)

The codec functions (:func:`unstuff`, :func:`randomize`, :func:`parse`) are what
upstream could take as they are: same results, same errors.
:class:`~gatewayd.zigbee.ezsp_fast.FastFrames` installs this, after checking the
bellows version, on each connection bellows makes.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import bellows.ash as ash

from gatewayd.zigbee.fastpath import plain

ESCAPE = int(ash.Reserved.ESCAPE)
FLAG = int(ash.Reserved.FLAG)
CANCEL = int(ash.Reserved.CANCEL)
SUBSTITUTE = int(ash.Reserved.SUBSTITUTE)
_RESERVED = frozenset(int(b) for b in ash.RESERVED_BYTES)
# the reserved bytes a frame ends or is interrupted at (every one but the escape)
_STOPS = re.compile(b"[" + b"".join(re.escape(bytes([b])) for b in
                                    sorted(int(b) for b in ash.RESERVED_WITHOUT_ESCAPE)) + b"]")
_SEQUENCE = ash.PSEUDO_RANDOM_DATA_SEQUENCE
_DATA_MASK = ash.DataFrame.MASK
_DATA_MASK_VALUE = ash.DataFrame.MASK_VALUE
_METHODS = ("data_received", "frame_received", "_unstuff_bytes", "_reject_frame")


def unstuff(data: bytes | bytearray) -> bytearray:
    """``AshProtocol._unstuff_bytes``: the same bytes, or the same ``ParsingError``."""
    if ESCAPE not in data:
        return bytearray(data)
    parts = bytes(data).split(b"\x7d")
    out = bytearray(parts[0])
    last = len(parts) - 1
    for i in range(1, last + 1):
        part = parts[i]
        if not part and i == last:
            break  # an escape at the very end is dropped, as bellows drops it
        byte = (part[0] if part else ESCAPE) ^ 0x20  # an empty part: an escaped escape
        if byte not in _RESERVED:
            raise ash.ParsingError(f"Invalid escaped byte: 0x{byte:02X}")
        out.append(byte)
        out += part[1:]
    return out


def randomize(data: bytes | bytearray) -> bytes:
    """``DataFrame._randomize`` (its own inverse): the same bytes, or the same error."""
    n = len(data)
    if n > len(_SEQUENCE):
        raise ash.ParsingError(f"Frame payload is too long: {n} > {len(_SEQUENCE)} bytes")
    return (int.from_bytes(data, "little")
            ^ int.from_bytes(_SEQUENCE[:n], "little")).to_bytes(n, "little")


def parse(data: bytes | bytearray) -> ash.AshFrame:
    """``ash.parse_frame``, with DATA frames derandomized by :func:`randomize`."""
    if not data or data[0] & _DATA_MASK != _DATA_MASK_VALUE:
        return ash.parse_frame(data)
    control, body = ash.DataFrame._unwrap(data)
    return ash.DataFrame(frm_num=(control & 0b01110000) >> 4,
                         re_tx=(control & 0b00001000) >> 3,
                         ack_num=control & 0b00000111, ezsp_frame=randomize(body))


class FastAsh:
    """Reads the line for one ``AshProtocol`` (an instance attribute over its method)."""

    def __init__(self, protocol: ash.AshProtocol) -> None:
        self.protocol = protocol
        self.reads = 0  # data_received calls taken
        self._bellows_data_received = protocol.data_received
        self._reading = False
        self._log = logging.getLogger(ash.__name__)

    @classmethod
    def install(cls, protocol: Any) -> FastAsh | None:
        """On a stock ``AshProtocol`` only (a subclass may read differently)."""
        if not isinstance(protocol, ash.AshProtocol) or \
                not plain(type(protocol), ash.AshProtocol, _METHODS):
            return None
        fast = cls(protocol)
        protocol.data_received = fast.data_received
        return fast

    def data_received(self, data: bytes) -> None:
        if self._reading:
            # A synchronous transport handing more bytes from inside a frame's handling:
            # the read in progress takes them (it reads to the buffer's end, and trims
            # the buffer only when it is done).
            self.protocol._buffer.extend(data)
            return
        if self._log.isEnabledFor(logging.DEBUG):
            self._bellows_data_received(data)  # bellows logs every byte and frame
            return
        self.reads += 1
        self._reading = True
        try:
            self._read(data)
        finally:
            self._reading = False

    def _read(self, data: bytes | bytearray) -> None:
        """``AshProtocol.data_received``, step for step, with a read position instead
        of a new buffer after each frame."""
        p = self.protocol
        p._buffer.extend(data)
        if len(p._buffer) > ash.MAX_BUFFER_SIZE:
            p._buffer = p._buffer[-ash.MAX_BUFFER_SIZE:]
        buffer = p._buffer
        pos = 0
        try:
            while pos < len(buffer):
                if p._discarding_until_next_flag:
                    flag = buffer.find(FLAG, pos)
                    if flag < 0:
                        pos = len(buffer)
                        break
                    p._discarding_until_next_flag = False
                    pos = flag + 1
                    continue
                match = _STOPS.search(buffer, pos)
                if match is None:
                    break
                index = match.start()
                byte = buffer[index]
                if byte == FLAG:
                    frame_bytes = buffer[pos:index]
                    pos = index + 1
                    if not frame_bytes:
                        continue  # consecutive flags
                    try:
                        data = unstuff(frame_bytes)
                        frame = parse(data)
                    except Exception:
                        # bellows rejects a DATA frame it cannot parse (the SDK does).
                        # As in bellows, ``data`` is the read's bytes or the last frame
                        # unstuffed if this one's unstuffing failed.
                        if len(data) > 0 and data[0] & _DATA_MASK == _DATA_MASK_VALUE:
                            p._reject_frame()
                    else:
                        p.frame_received(frame)
                elif byte == CANCEL or byte == SUBSTITUTE:
                    # everything since the last flag is void; after a substitute, up
                    # to the next flag too
                    pos = index + 1
                    if byte == SUBSTITUTE:
                        p._discarding_until_next_flag = True
                else:  # XON, XOFF: not implemented by bellows, dropped from the buffer
                    del buffer[index]
        finally:
            del buffer[:pos]
