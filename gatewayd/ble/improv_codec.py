"""Improv Wi-Fi 2.x over BLE: UUIDs, states, errors, RPC frames and their codec. No I/O.

Importable without sdbus or bleak: the hub's service (:mod:`gatewayd.ble.improv_service`)
and the phone client (:mod:`gatewayd.ble.phone`) share it.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

SERVICE_UUID = "00467768-6228-2272-4663-277478268000"
STATE_UUID = "00467768-6228-2272-4663-277478268001"
ERROR_UUID = "00467768-6228-2272-4663-277478268002"
RPC_COMMAND_UUID = "00467768-6228-2272-4663-277478268003"
RPC_RESULT_UUID = "00467768-6228-2272-4663-277478268004"
CAPABILITIES_UUID = "00467768-6228-2272-4663-277478268005"
SERVICE_DATA_UUID = "00004677-0000-1000-8000-00805f9b34fb"
MAX_DATA = 255  # the length field is one byte
MAX_FRAME = MAX_DATA + 3
STALE_WRITE_SECONDS = 5.0  # a half-written frame older than this is abandoned
HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


class State(enum.IntEnum):
    AUTHORIZATION_REQUIRED = 0x01
    AUTHORIZED = 0x02
    PROVISIONING = 0x03
    PROVISIONED = 0x04


class Error(enum.IntEnum):
    NONE = 0x00
    INVALID_RPC = 0x01
    UNKNOWN_RPC = 0x02
    UNABLE_TO_CONNECT = 0x03
    NOT_AUTHORIZED = 0x04
    BAD_HOSTNAME = 0x05
    UNKNOWN = 0xFF


class Command(enum.IntEnum):
    WIFI_SETTINGS = 0x01
    IDENTIFY = 0x02
    DEVICE_INFO = 0x03
    SCAN_WIFI = 0x04
    HOSTNAME = 0x05
    DEVICE_NAME = 0x06


class Capability(enum.IntFlag):
    IDENTIFY = 0x01
    DEVICE_INFO = 0x02
    SCAN_WIFI = 0x04
    HOSTNAME = 0x08


# How many strings each command may carry: (min, max).
_STRINGS: dict[Command, tuple[int, int]] = {
    Command.WIFI_SETTINGS: (2, 2), Command.IDENTIFY: (0, 0), Command.DEVICE_INFO: (0, 0),
    Command.SCAN_WIFI: (0, 0), Command.HOSTNAME: (0, 1), Command.DEVICE_NAME: (0, 1),
}


class FrameError(Exception):
    """Input that maps to an Improv error state."""

    def __init__(self, error: Error, reason: str) -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def encode_strings(strings: Sequence[bytes]) -> bytes:
    out = bytearray()
    for item in strings:
        if len(item) > MAX_DATA:
            raise ValueError("an Improv string holds at most 255 bytes")
        out += bytes([len(item)]) + item
    return bytes(out)


def encode_frame(command: int, data: bytes) -> bytes:
    """``command, len, data, checksum``: an RPC command or an RPC result."""
    if len(data) > MAX_DATA:
        raise ValueError(f"Improv frame data is at most {MAX_DATA} bytes, got {len(data)}")
    body = bytes([command, len(data)]) + data
    return body + bytes([checksum(body)])


def encode_result(command: int, strings: Sequence[str]) -> bytes:
    return encode_frame(command, encode_strings([s.encode("utf-8") for s in strings]))


def decode_strings(data: bytes) -> list[bytes]:
    strings: list[bytes] = []
    pos = 0
    while pos < len(data):
        size = data[pos]
        if pos + 1 + size > len(data):
            raise FrameError(Error.INVALID_RPC, "a string runs past the end of the data")
        strings.append(data[pos + 1:pos + 1 + size])
        pos += 1 + size
    return strings


def decode_frame(frame: bytes) -> tuple[int, bytes]:
    """Check length and checksum of one complete frame: (command, data)."""
    if len(frame) < 3:
        raise FrameError(Error.INVALID_RPC, "frame shorter than 3 bytes")
    if len(frame) != frame[1] + 3:
        raise FrameError(Error.INVALID_RPC, "length byte does not match the frame")
    if checksum(frame[:-1]) != frame[-1]:
        raise FrameError(Error.INVALID_RPC, "bad checksum")
    return frame[0], frame[2:-1]


@dataclass(frozen=True)
class RpcCommand:
    command: Command
    strings: list[bytes]


def parse_command(frame: bytes) -> RpcCommand:
    """A complete RPC frame as a command; the checksum is checked before the command id."""
    code, data = decode_frame(frame)
    try:
        command = Command(code)
    except ValueError:
        raise FrameError(Error.UNKNOWN_RPC, f"unknown command 0x{code:02x}") from None
    strings = decode_strings(data)
    low, high = _STRINGS[command]
    if not low <= len(strings) <= high:
        raise FrameError(Error.INVALID_RPC, f"{command.name} takes {low}-{high} strings, "
                                            f"got {len(strings)}")
    return RpcCommand(command, strings)


class Reassembler:
    """Collects one RPC frame from the ATT writes of one phone.

    Frames longer than an ATT payload arrive in pieces: as several writes at offset 0 (the
    client split the frame, as ESPHome expects) or as one long write that bluetoothd delivers
    with offsets. Either way the pieces are appended until the length byte is satisfied. The
    buffer never holds more than one frame (258 bytes).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buffer = bytearray()
        self._value_len = 0  # bytes of the current ATT value (for offset checks)
        self._last = 0.0

    def reset(self) -> None:
        self._buffer.clear()
        self._value_len = 0

    def feed(self, chunk: bytes, offset: int = 0) -> bytes | None:
        """The complete frame once it is there; raises :class:`FrameError` (and starts over)
        on a piece that cannot belong to a frame."""
        now = self._clock()
        if self._buffer and now - self._last > STALE_WRITE_SECONDS:
            self.reset()  # the client gave up on that frame
        self._last = now
        if offset == 0:
            self._value_len = 0
        elif offset != self._value_len:
            self.reset()
            raise FrameError(Error.INVALID_RPC, f"write at offset {offset} leaves a gap")
        self._value_len += len(chunk)
        self._buffer += chunk
        if len(self._buffer) > MAX_FRAME:
            self.reset()
            raise FrameError(Error.INVALID_RPC, "more data than any RPC frame holds")
        if len(self._buffer) < 2 or len(self._buffer) < self._buffer[1] + 3:
            return None
        frame = bytes(self._buffer)
        self.reset()
        if len(frame) > frame[1] + 3:
            raise FrameError(Error.INVALID_RPC, "more data than the length byte announced")
        return frame
