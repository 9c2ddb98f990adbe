"""ASH (Asynchronous Serial Host, Silicon Labs UG101) as pure functions: no I/O.

An ASH frame on the wire is ``control byte + data + CRC (2 bytes, big-endian)``, byte
stuffed, then terminated by a Flag byte (0x7E). DATA frames carry one EZSP frame whose
bytes are XOR-ed with a pseudo-random sequence first ("data randomization"), so that
long runs of zeros do not reach the line. Control frames (ACK, NAK, RST, RSTACK, ERROR)
are not randomized.

:class:`Decoder` turns a byte stream into frames and reports the bad ones (CRC errors,
frames cut by a Substitute byte, garbage), which is what the NCP side needs to decide
when to NAK. Everything here is written from UG101; nothing is taken from a host library.
"""

from __future__ import annotations

import binascii
import dataclasses
import enum
from collections.abc import Iterator

FLAG = 0x7E  # ends a frame
ESCAPE = 0x7D  # the next byte is XOR-ed with 0x20
XON = 0x11
XOFF = 0x13
SUBSTITUTE = 0x18  # replaces a byte a UART received with an error: the frame is bad
CANCEL = 0x1A  # discards the frame in progress
RESERVED = frozenset({FLAG, ESCAPE, XON, XOFF, SUBSTITUTE, CANCEL})
ESCAPE_XOR = 0x20

ASH_VERSION = 2
MAX_DATA_LEN = 220  # UG101: a DATA frame's EZSP payload is at most 220 bytes (EZSP max frame)
MAX_FRAME_LEN = 1 + MAX_DATA_LEN + 2  # control + data + CRC, before stuffing


class ResetCode(enum.IntEnum):
    """Why the NCP (re)started; the second byte of RSTACK and ERROR frames."""

    UNKNOWN_REASON = 0x00
    EXTERNAL = 0x01
    POWER_ON = 0x02
    WATCHDOG = 0x03
    ASSERT = 0x06
    BOOTLOADER = 0x09
    SOFTWARE = 0x0B
    EXCEEDED_MAXIMUM_ACK_TIMEOUT_COUNT = 0x51
    UNKNOWN_EM3XX_ERROR = 0x80


def crc_ccitt(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-CCITT: polynomial 0x1021, initial value 0xFFFF, no reflection, no final XOR.

    The standard library's CRC-CCITT (``binascii.crc_hqx``, in C), which with 0xFFFF as
    its start is exactly this: the loop written out in Python was a fifth of the
    emulator's CPU at saturation, so the emulator, not the host under test, set the
    benchmarks' saturated rate (bench/README.md, "The emulator's codec").
    tests/test_ncp_ash.py checks it against UG101's bit loop."""
    return binascii.crc_hqx(data, crc)


def _pseudo_random(length: int) -> bytes:
    """UG101's LFSR: seed 0x42; shift right, XOR with 0xB8 when the bit shifted out was 1."""
    out = bytearray()
    rand = 0x42
    for _ in range(length):
        out.append(rand)
        rand = (rand >> 1) ^ 0xB8 if rand & 1 else rand >> 1
    return bytes(out)


PSEUDO_RANDOM = _pseudo_random(MAX_DATA_LEN)
PSEUDO_RANDOM_INT = int.from_bytes(PSEUDO_RANDOM, "big")  # XOR-ed as one integer


def randomize(data: bytes) -> bytes:
    """XOR with the pseudo-random sequence; its own inverse."""
    if len(data) > len(PSEUDO_RANDOM):
        raise ValueError(f"DATA payload of {len(data)} bytes exceeds {len(PSEUDO_RANDOM)}")
    size = len(data)
    mask = PSEUDO_RANDOM_INT >> 8 * (len(PSEUDO_RANDOM) - size)
    return (int.from_bytes(data, "big") ^ mask).to_bytes(size, "big")


# Escape first, so that the Escape bytes the others add are not escaped again (none of
# the escaped values, a reserved byte XOR 0x20, is reserved itself).
_STUFFING = tuple((bytes((byte,)), bytes((ESCAPE, byte ^ ESCAPE_XOR)))
                  for byte in [ESCAPE, *sorted(RESERVED - {ESCAPE})])


def stuff(frame: bytes) -> bytes:
    """Escape reserved bytes (the Flag is added by :func:`encode`)."""
    for byte, escaped in _STUFFING:
        if byte in frame:
            frame = frame.replace(byte, escaped)
    return frame


# -- frames ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Data:
    frm_num: int
    ack_num: int
    payload: bytes  # the EZSP frame, not randomized
    re_tx: bool = False

    def control(self) -> int:
        return (self.frm_num & 7) << 4 | int(self.re_tx) << 3 | (self.ack_num & 7)


@dataclasses.dataclass(frozen=True)
class Ack:
    ack_num: int
    not_ready: bool = False

    def control(self) -> int:
        return 0x80 | int(self.not_ready) << 3 | (self.ack_num & 7)


@dataclasses.dataclass(frozen=True)
class Nak:
    ack_num: int
    not_ready: bool = False

    def control(self) -> int:
        return 0xA0 | int(self.not_ready) << 3 | (self.ack_num & 7)


@dataclasses.dataclass(frozen=True)
class Rst:
    def control(self) -> int:
        return 0xC0


@dataclasses.dataclass(frozen=True)
class RstAck:
    reset_code: int
    version: int = ASH_VERSION

    def control(self) -> int:
        return 0xC1


@dataclasses.dataclass(frozen=True)
class Error:
    reset_code: int
    version: int = ASH_VERSION

    def control(self) -> int:
        return 0xC2


Frame = Data | Ack | Nak | Rst | RstAck | Error


@dataclasses.dataclass(frozen=True)
class BadFrame:
    """Bytes up to a Flag that are not a frame: ``reason`` says why. ``control`` is the
    first byte when there was one: a receiver NAKs a bad frame that looks like DATA."""

    reason: str
    raw: bytes
    control: int | None

    @property
    def looks_like_data(self) -> bool:
        return self.control is not None and not self.control & 0x80


def frame_body(frame: Frame) -> bytes:
    """Control byte and data, CRC not included, data randomized."""
    if isinstance(frame, Data):
        return bytes((frame.control(),)) + randomize(frame.payload)
    if isinstance(frame, RstAck | Error):
        return bytes((frame.control(), frame.version, frame.reset_code))
    return bytes((frame.control(),))


def encode(frame: Frame) -> bytes:
    """The bytes on the wire for one frame, Flag included."""
    body = frame_body(frame)
    return stuff(body + crc_ccitt(body).to_bytes(2, "big")) + bytes((FLAG,))


def parse(raw: bytes) -> Frame | BadFrame:
    """One unstuffed frame (control, data, CRC) into a frame, or why it is not one."""
    control = raw[0] if raw else None
    if len(raw) < 3:
        return BadFrame("too short", raw, control)
    if len(raw) > MAX_FRAME_LEN:
        return BadFrame("too long", raw, control)
    body, crc = raw[:-2], int.from_bytes(raw[-2:], "big")
    if crc_ccitt(body) != crc:
        return BadFrame("bad CRC", raw, control)
    assert control is not None
    data = body[1:]
    if not control & 0x80:
        if not data:
            return BadFrame("DATA frame without data", raw, control)
        return Data(frm_num=control >> 4 & 7, re_tx=bool(control & 0x08),
                    ack_num=control & 7, payload=randomize(data))
    kind = control & 0xE0
    if kind in (0x80, 0xA0):
        if data:
            return BadFrame("ACK/NAK with data", raw, control)
        cls = Ack if kind == 0x80 else Nak
        return cls(ack_num=control & 7, not_ready=bool(control & 0x08))
    if control == 0xC0:
        return Rst() if not data else BadFrame("RST with data", raw, control)
    if control in (0xC1, 0xC2):
        if len(data) != 2:
            return BadFrame("RSTACK/ERROR of the wrong length", raw, control)
        if control == 0xC1:
            return RstAck(version=data[0], reset_code=data[1])
        return Error(version=data[0], reset_code=data[1])
    return BadFrame(f"unknown control byte 0x{control:02X}", raw, control)


class Decoder:
    """Streaming ASH receiver: feed bytes, get frames and bad frames in order.

    * Flag ends a frame; consecutive Flags are nothing.
    * Cancel throws away everything since the last Flag (hosts send Cancel before RST).
    * Substitute marks the frame in progress bad; it is reported when its Flag arrives.
    * XON/XOFF are flow control, not data: dropped wherever they appear.
    * An Escape before a Flag, or an escaped byte that is not reserved, makes a bad frame.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._escaped = False
        self._bad: str | None = None
        self._overflow = False

    def feed(self, data: bytes) -> Iterator[Frame | BadFrame]:
        for byte in data:
            if byte == FLAG:
                result = self._finish()
                if result is not None:
                    yield result
            elif byte == CANCEL:
                self._reset()
            elif byte == SUBSTITUTE:
                self._bad = self._bad or "substitute byte"
            elif byte in (XON, XOFF):
                continue
            elif byte == ESCAPE:
                if self._escaped:
                    self._bad = self._bad or "escape after escape"
                self._escaped = True
            else:
                if self._escaped:
                    byte ^= ESCAPE_XOR
                    self._escaped = False
                    if byte not in RESERVED:
                        self._bad = self._bad or "escaped byte is not reserved"
                if len(self._buf) < MAX_FRAME_LEN + 1:
                    self._buf.append(byte)
                else:
                    self._overflow = True

    def _reset(self) -> None:
        self._buf.clear()
        self._escaped = False
        self._bad = None
        self._overflow = False

    def _finish(self) -> Frame | BadFrame | None:
        raw = bytes(self._buf)
        bad = self._bad or ("escape before flag" if self._escaped else None)
        if self._overflow:
            bad = bad or "too long"
        self._reset()
        if not raw and bad is None:
            return None
        if bad is not None:
            return BadFrame(bad, raw, raw[0] if raw else None)
        return parse(raw)
