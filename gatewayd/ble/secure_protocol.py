"""The gatewayd secure BLE protocol: frames, SPAKE2 keys, the AEAD channel, messages. No I/O.

Everything both ends need (see docs/ble-protocol.md): the hub's service
(:mod:`gatewayd.ble.secure_service`) and the phone client (:mod:`gatewayd.ble.phone`).
Importable without sdbus or bleak, and without cryptography and spake2: the key schedule
and the channel import them when first used, and :func:`load_crypto` imports them
beforehand. cryptography is 6.5 MB resident (its Rust binding, with its own OpenSSL)
that a hub with BLE on but nobody pairing by BLE never needs, and an import on the
event loop after READY would block it: the hub's service calls :func:`load_crypto` in a
thread on its first handshake (bench/README.md, "cryptography at idle").
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import importlib
import json
import os
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SERVICE_UUID = "1a0bb827-c7d4-4b45-af5a-727e88a26d00"
INFO_UUID = "1a0bb827-c7d4-4b45-af5a-727e88a26d01"  # read: plaintext identity and lock state
RX_UUID = "1a0bb827-c7d4-4b45-af5a-727e88a26d02"  # write: phone -> hub frames
TX_UUID = "1a0bb827-c7d4-4b45-af5a-727e88a26d03"  # notify: hub -> phone frames
PROTOCOL_VERSION = 1
LABEL = b"gatewayd-ble-v1"
PHONE_IDENTITY = LABEL + b" phone"
HEADER = struct.Struct(">HB4s")  # length (of type + sid + body), type, session id
MAX_FRAME_LEN = 4096  # the length field's largest accepted value
SPAKE2_MESSAGE_LEN = 33  # side byte + Ed25519 element
MAC_LEN = 32
SEQ_LEN = 8
TAG_LEN = 16
MAX_MESSAGE_LEN = MAX_FRAME_LEN - 5 - SEQ_LEN - TAG_LEN  # a DATA frame's plaintext: 4067
MAX_ID_LEN = 256  # a request's "id" as compact JSON; its reply echoes it
NO_SESSION = b"\x00\x00\x00\x00"
STALE_SECONDS = 5.0  # a half frame followed by this much silence is abandoned
BAD_MESSAGE_A = "the SPAKE2 message A is not a valid element from the phone's side"


class MsgType(enum.IntEnum):
    PAKE_START = 0x01  # phone: version (1) | SPAKE2 message A (33)
    PAKE_REPLY = 0x02  # hub:   SPAKE2 message B (33) | hub confirmation (32)
    PAKE_CONFIRM = 0x03  # phone: phone confirmation (32)
    DATA = 0x10  # both:  sequence number (8) | AES-256-GCM ciphertext and tag
    ERROR = 0x7F  # hub:   code (1) | attempts left (1) | UTF-8 text


class ErrorCode(enum.IntEnum):
    MALFORMED = 0x01
    UNEXPECTED = 0x02
    WRONG_CODE = 0x03
    LOCKED = 0x04
    VERSION = 0x05
    BUSY = 0x06
    DECRYPT = 0x07


class ProtocolError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Frame:
    type: int
    sid: bytes
    body: bytes = b""

    def encode(self) -> bytes:
        length = 5 + len(self.body)
        if length > MAX_FRAME_LEN:
            raise ValueError(f"frame of {length} bytes exceeds {MAX_FRAME_LEN}")
        return HEADER.pack(length, self.type, self.sid) + self.body


def error_frame(sid: bytes, code: ErrorCode, attempts_left: int, text: str) -> Frame:
    return Frame(MsgType.ERROR, sid,
                 bytes([code, max(0, min(attempts_left, 255))]) + text.encode()[:200])


def parse_error(frame: Frame) -> tuple[int, int, str]:
    body = frame.body
    if len(body) < 2:
        return ErrorCode.MALFORMED, 0, "malformed error frame"
    return body[0], body[1], body[2:].decode("utf-8", "replace")


class FrameReader:
    """Splits the byte stream of ATT writes or notifications into frames.

    Frames may be cut anywhere between writes; the buffer holds at most one frame. Raises
    ProtocolError(MALFORMED) on an impossible length, after which the reader starts over.
    A half frame followed by :data:`STALE_SECONDS` of silence is abandoned (as Improv's):
    the writer gave up on it, and what it writes next starts a new frame.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._buffer = bytearray()
        self._clock = clock
        self._last = 0.0

    def reset(self) -> None:
        self._buffer.clear()

    def feed(self, chunk: bytes) -> list[Frame]:
        now = self._clock()
        if self._buffer and now - self._last > STALE_SECONDS:
            self.reset()
        self._last = now
        self._buffer += chunk
        frames: list[Frame] = []
        while len(self._buffer) >= 2:
            length = int.from_bytes(self._buffer[:2], "big")
            if not 5 <= length <= MAX_FRAME_LEN:
                self.reset()
                raise ProtocolError(ErrorCode.MALFORMED, f"frame length {length} out of range")
            if len(self._buffer) < 2 + length:
                break
            raw = bytes(self._buffer[:2 + length])
            del self._buffer[:2 + length]
            frames.append(Frame(raw[2], raw[3:7], raw[7:]))
        return frames


def chunks(data: bytes, size: int) -> list[bytes]:
    size = max(1, size)
    return [data[i:i + size] for i in range(0, len(data), size)]


def setup_code_password(code: str) -> bytes:
    """``1234-5678``, ``1234 5678`` or ``12345678`` -> ``b"12345678"``."""
    digits = re.sub(r"[\s-]", "", code)
    if not re.fullmatch(r"[0-9]{8}", digits):
        raise ValueError("a setup code is 8 digits")
    return digits.encode("ascii")


def hub_identity(device_id: str) -> bytes:
    return LABEL + b" hub " + device_id.encode("utf-8")


# What the key schedule, the channel and the handshakes import when first used.
CRYPTO_MODULES = ("cryptography.exceptions", "cryptography.hazmat.primitives.hashes",
                  "cryptography.hazmat.primitives.ciphers.aead",
                  "cryptography.hazmat.primitives.kdf.hkdf", "spake2")


def load_crypto() -> None:
    """Import :data:`CRYPTO_MODULES`, so that the handshake and the channel do not import
    them themselves (in the hub's service: in a thread, before its first handshake)."""
    for name in CRYPTO_MODULES:
        importlib.import_module(name)


def _hkdf(key: bytes, salt: bytes, label: str, length: int = 32) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt,
                info=LABEL + b" " + label.encode("ascii")).derive(key)


@dataclass(frozen=True)
class SessionKeys:
    confirm_phone: bytes
    confirm_hub: bytes
    phone_to_hub: bytes
    hub_to_phone: bytes
    verification_code: str

    @classmethod
    def derive(cls, spake_key: bytes, msg_a: bytes, msg_b: bytes) -> SessionKeys:
        salt = msg_a + msg_b
        number = int.from_bytes(_hkdf(spake_key, salt, "verification", 4), "big")
        return cls(confirm_phone=_hkdf(spake_key, salt, "confirm phone"),
                   confirm_hub=_hkdf(spake_key, salt, "confirm hub"),
                   phone_to_hub=_hkdf(spake_key, salt, "key phone to hub"),
                   hub_to_phone=_hkdf(spake_key, salt, "key hub to phone"),
                   verification_code=f"{number % 1_000_000:06d}")

    def confirmation(self, side: str, msg_a: bytes, msg_b: bytes) -> bytes:
        key = self.confirm_phone if side == "phone" else self.confirm_hub
        return hmac.new(key, msg_a + msg_b, hashlib.sha256).digest()


class Channel:
    """AES-256-GCM both ways with explicit, strictly consecutive sequence numbers.

    Nonce = 4 zero bytes + the 8-byte sequence number; AAD = type, session id, sequence
    number. A frame whose number is not the next one expected (a replay, a reordering, a
    lost frame) ends the session.
    """

    def __init__(self, send_key: bytes, recv_key: bytes, sid: bytes) -> None:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._invalid_tag = InvalidTag  # for open(), without an import per frame
        self._send = AESGCM(send_key)
        self._recv = AESGCM(recv_key)
        self.sid = sid
        self.sent = 0
        self.received = 0

    def _aad(self, seq: bytes) -> bytes:
        return bytes([MsgType.DATA]) + self.sid + seq

    def seal(self, plaintext: bytes) -> Frame:
        """Raises ValueError for a plaintext no frame can carry, before numbering it: a
        number spent on a frame never sent would make the peer refuse every later one."""
        if len(plaintext) > MAX_MESSAGE_LEN:
            raise ValueError(f"message of {len(plaintext)} bytes exceeds {MAX_MESSAGE_LEN}")
        seq = self.sent.to_bytes(SEQ_LEN, "big")
        self.sent += 1
        body = seq + self._send.encrypt(b"\x00" * 4 + seq, plaintext, self._aad(seq))
        return Frame(MsgType.DATA, self.sid, body)

    def open(self, frame: Frame) -> bytes:
        if frame.type != MsgType.DATA or len(frame.body) < SEQ_LEN + TAG_LEN:
            raise ProtocolError(ErrorCode.MALFORMED, "short data frame")
        seq = frame.body[:SEQ_LEN]
        if int.from_bytes(seq, "big") != self.received:
            raise ProtocolError(ErrorCode.DECRYPT, "unexpected sequence number (replayed, "
                                                   "reordered or lost frame)")
        try:
            plaintext = self._recv.decrypt(b"\x00" * 4 + seq, frame.body[SEQ_LEN:],
                                           self._aad(seq))
        except self._invalid_tag:
            raise ProtocolError(ErrorCode.DECRYPT, "message failed authentication") from None
        self.received += 1
        return plaintext


def encode_message(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), sort_keys=True).encode("utf-8")


def decode_message(data: bytes) -> dict[str, Any]:
    try:
        message = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError(ErrorCode.MALFORMED, "message is not JSON") from None
    except RecursionError:  # not a ValueError; this codec imports nothing of gatewayd
        raise ProtocolError(ErrorCode.MALFORMED, "message nests too deeply") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError(ErrorCode.MALFORMED, "message needs a \"type\"")
    if "id" in message and len(json.dumps(message["id"], separators=(",", ":"))) > MAX_ID_LEN:
        # Its reply echoes the id and could not fit a frame: the phone would wait in vain
        # (and a pair request would have started an attempt it never hears of).
        raise ProtocolError(ErrorCode.MALFORMED, f"\"id\" is over {MAX_ID_LEN} characters "
                                                 "of JSON")
    return message


class PhoneHandshake:
    """The phone's side of the handshake (ble_client, tests, and the worked example)."""

    def __init__(self, setup_code: str, device_id: str, *, sid: bytes | None = None,
                 entropy: Callable[[int], bytes] = os.urandom) -> None:
        from spake2 import SPAKE2_A

        if sid is None:
            sid = NO_SESSION
            while sid == NO_SESSION:  # zero is reserved: draw again
                sid = os.urandom(4)
        if len(sid) != 4 or sid == NO_SESSION:
            raise ValueError("a session id is 4 bytes, not all zero")
        self.sid = sid
        self._spake = SPAKE2_A(setup_code_password(setup_code), idA=PHONE_IDENTITY,
                               idB=hub_identity(device_id), entropy_f=entropy)
        self.msg_a = b""
        self.keys: SessionKeys | None = None

    def start(self) -> Frame:
        self.msg_a = self._spake.start()
        return Frame(MsgType.PAKE_START, self.sid, bytes([PROTOCOL_VERSION]) + self.msg_a)

    def finish(self, reply: Frame) -> tuple[Frame, Channel]:
        """Check the hub's confirmation; raises ProtocolError(WRONG_CODE) if it is not the
        hub that knows this setup code."""
        if reply.type != MsgType.PAKE_REPLY or len(reply.body) != SPAKE2_MESSAGE_LEN + MAC_LEN:
            raise ProtocolError(ErrorCode.MALFORMED, "malformed handshake reply")
        msg_b, mac = reply.body[:SPAKE2_MESSAGE_LEN], reply.body[SPAKE2_MESSAGE_LEN:]
        try:
            key = self._spake.finish(msg_b)
        except Exception:
            raise ProtocolError(ErrorCode.MALFORMED, "the hub's SPAKE2 message B is not a "
                                                     "valid element from the hub's side"
                                ) from None
        keys = self.keys = SessionKeys.derive(key, self.msg_a, msg_b)
        if not hmac.compare_digest(mac, keys.confirmation("hub", self.msg_a, msg_b)):
            raise ProtocolError(ErrorCode.WRONG_CODE, "wrong setup code (the hub's "
                                                      "confirmation does not match)")
        confirm = Frame(MsgType.PAKE_CONFIRM, self.sid,
                        keys.confirmation("phone", self.msg_a, msg_b))
        return confirm, Channel(keys.phone_to_hub, keys.hub_to_phone, self.sid)
