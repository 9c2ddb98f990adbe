"""What the bridge's front ends share: its refusal and the parsing of what people type.

The control socket, the portal and the hub's ``zigbee`` node (``/set``) all check
permit-join durations, IEEE addresses and install codes here, and answer a
:class:`BridgeError` the same way. No zigpy, no I/O.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from gatewayd import homie

if TYPE_CHECKING:

    pass

class BridgeError(Exception):
    """A request the bridge refuses (bad address or install code, radio down)."""

    def __init__(self, message: str, code: str = homie.VALIDATION) -> None:
        super().__init__(message)
        self.code = code

    @property
    def http_status(self) -> int:
        """What an HTTP front end answers: 409 while the radio is away, else 400."""
        return 409 if self.code in ("UNREACHABLE", "unavailable") else 400


_HEX = re.compile(r"[0-9a-f]+")
MAX_PERMIT_SECONDS = 254  # Zigbee's permit-join duration is one byte; 255 would mean "forever"


def parse_permit_seconds(value: Any) -> int | None:
    """A permit-join duration from JSON: None (the configured default) or 0-254 seconds."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) \
            or not 0 <= value <= MAX_PERMIT_SECONDS:
        raise ValueError(f"seconds: must be an integer 0-{MAX_PERMIT_SECONDS}")
    return value


def parse_ieee(text: str) -> str:
    """``00:12:4b:...``, ``00124b...`` or ``0x00124b...`` -> ``00:12:4b:...``."""
    raw = text.strip().lower().removeprefix("0x").replace(":", "").replace("-", "")
    if len(raw) != 16 or not _HEX.fullmatch(raw):
        raise BridgeError(f"{text!r} is not an IEEE address (16 hex digits)")
    return ":".join(raw[i:i + 2] for i in range(0, 16, 2))


def parse_device_ieee(text: str) -> str:
    """An address a device can have: not all zeros (unset) nor all ones (broadcast)."""
    address = parse_ieee(text)
    if address in ("00:00:00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff:ff:ff"):
        which = "all zeros" if address.startswith("00") else "all ones"
        raise BridgeError(f"{address} is not a device's IEEE address ({which} is reserved): "
                          "check the address printed on the device")
    return address


def crc16_x25(data: bytes) -> int:
    """CRC-16/X-25, the checksum at the end of a Zigbee 3.0 install code."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


def parse_install_code(text: str) -> bytes:
    """An install code as printed (hex, any separators) with its CRC verified."""
    raw = re.sub(r"[\s:\-]", "", text.strip().lower())
    if not _HEX.fullmatch(raw or "x") or len(raw) % 2:
        raise BridgeError("an install code is hex digits, such as "
                          "83FED3407A939723A5C639B26916D505C3B5")
    code = bytes.fromhex(raw)
    if len(code) not in (8, 10, 14, 18):
        raise BridgeError(f"an install code has 6, 8, 12 or 16 bytes plus a 2-byte CRC; "
                          f"this one has {len(code)} bytes")
    if int.from_bytes(code[-2:], "little") != crc16_x25(code[:-2]):
        raise BridgeError("the install code's checksum (last 4 digits) does not match: "
                          "check for a typo")
    return code
