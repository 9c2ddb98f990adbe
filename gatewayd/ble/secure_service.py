"""The secure gatewayd BLE service: SPAKE2 keyed from the setup code, then AES-256-GCM.

It carries what Improv cannot: the complete pairing request (Wi-Fi and cloud credentials, or
cloud only) and device information, to a phone that proved it knows the setup code printed
on the hub. docs/ble-protocol.md is the specification; this module is both its hub side
(:class:`SecureService`) and the pieces the phone side shares (frames, key schedule,
:class:`PhoneHandshake`, :class:`Channel`), used by :mod:`gatewayd.ble.phone`.

Why SPAKE2 and confirmation first by the hub: the setup code has only 10^8 values, so each
session must give an attacker one guess at most and no offline test. SPAKE2 does that;
every started handshake counts as a failure until the phone's confirmation proves it right
(a phone that learns from the hub's confirmation that its guess was wrong and just leaves is
still counted). After ``max_failures`` the service refuses handshakes until the window is
opened again (the button).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gatewayd.ble.gatt import Characteristic, GattRequest, Service, remember_mtu
from gatewayd.ble.secure_messages import failure, networks_reply, pair_fields
from gatewayd.ble.secure_protocol import (
    BAD_MESSAGE_A,
    INFO_UUID,
    MAC_LEN,
    NO_SESSION,
    PHONE_IDENTITY,
    PROTOCOL_VERSION,
    RX_UUID,
    SERVICE_UUID,
    SPAKE2_MESSAGE_LEN,
    TX_UUID,
    Channel,
    ErrorCode,
    Frame,
    FrameReader,
    MsgType,
    ProtocolError,
    SessionKeys,
    chunks,
    decode_message,
    encode_message,
    error_frame,
    hub_identity,
    load_crypto,
    setup_code_password,
)
from gatewayd.onboarding.pairing import PairingError
from gatewayd.runtime.logsetup import LogBudget

log = logging.getLogger(__name__)

HANDSHAKE_SECONDS = 30.0
IDLE_SECONDS = 300.0
MAX_PHONES = 8  # phones whose partial frames are tracked at once
DEFAULT_NOTIFY_LEN = 20


class SecureHost(Protocol):
    """What the secure service needs from the hub."""

    def secure_device_info(self) -> dict[str, Any]: ...

    def secure_summary(self) -> dict[str, Any]:
        """The plaintext identity on the info characteristic (nothing secret)."""

    def setup_code(self) -> str: ...

    async def secure_pair(self, fields: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
        """Hand the request to the pairing front door (``fields`` extracts the message's
        fields once pairing is known to be open); the progress as JSON, or raises
        :class:`gatewayd.onboarding.pairing.PairingError`."""

    def secure_progress(self) -> dict[str, Any]: ...

    def secure_networks(self) -> list[dict[str, Any]]: ...


@dataclass
class _Session:
    device: str
    sid: bytes
    started: float
    last: float
    msg_a: bytes = b""
    msg_b: bytes = b""
    keys: SessionKeys | None = None
    channel: Channel | None = None
    # Its handshake is still among the failures: a correct confirmation takes it back.
    counted: bool = True

    @property
    def established(self) -> bool:
        return self.channel is not None


class SecureService:
    """Hub side: one session at a time, failure counting and lockout."""

    def __init__(self, host: SecureHost, *, device_id: str, max_failures: int,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 entropy: Callable[[int], bytes] = os.urandom) -> None:
        self.host = host
        self.entropy = entropy  # only the worked example in the docs replaces it
        self.device_id = device_id
        self.max_failures = max_failures
        self.clock, self.sleep = clock, sleep  # sleep: the session's expiry timer
        self.failures = 0
        self._timer: asyncio.Task[None] | None = None
        self._session: _Session | None = None
        self._crypto_loaded = False
        self._readers: OrderedDict[str, FrameReader] = OrderedDict()
        self._mtus: dict[str, int] = {}
        self._tx: Characteristic | None = None
        self._lock = asyncio.Lock()
        # Refusals are what any phone in range makes happen at will (junk every 20 ms).
        self._said = LogBudget(log, "BLE secure service refusals", clock=clock,
                               later=lambda delay, call:
                               asyncio.get_running_loop().call_later(delay, call))

    # ---- lifecycle -----------------------------------------------------------------------

    @property
    def locked(self) -> bool:
        return self.failures >= self.max_failures

    @property
    def attempts_left(self) -> int:
        return max(0, self.max_failures - self.failures)

    def gatt_service(self) -> Service:
        self._tx = Characteristic(TX_UUID, ["notify"])
        return Service(SERVICE_UUID, [
            Characteristic(INFO_UUID, ["read"], read=self._read_info),
            Characteristic(RX_UUID, ["write"], write=self.rx_write),
            self._tx,
        ])

    def forgive(self) -> None:
        """The button, or the window opened again: wrong setup codes forgiven."""
        if self.failures:
            log.info("BLE secure service: %d failed setup code attempt(s) forgiven",
                     self.failures)
        self.failures = 0
        if self._session is not None:
            # Forgiven with the rest: its confirmation must not take it back a second time
            # (a negative count, one more guess than max_failures).
            self._session.counted = False

    def reset(self) -> None:
        """A new window, or a factory reset: failures forgiven, sessions dropped (after
        :meth:`end_session` has told the phone, where it can)."""
        self.forgive()
        self._session = None
        if self._timer is not None:
            self._timer.cancel()
        self._readers.clear()
        self._mtus.clear()

    def forget(self, device: str) -> None:
        self._readers.pop(device, None)
        self._mtus.pop(device, None)
        if self._session is not None and self._session.device == device:
            log.info("BLE secure session with %s ended (disconnected)", device)
            self._session = None

    async def end_session(self, reason: str) -> None:
        """End the session, telling its phone why (ERROR 0x02 ``reason``) while it is
        still connected: the window closes, the hub is reset."""
        session, self._session = self._session, None
        if session is not None:
            log.info("BLE secure session with %s ended: %s", session.device, reason)
            await self._send(session.device, error_frame(
                session.sid, ErrorCode.UNEXPECTED, self.attempts_left, reason))

    async def _expire_later(self, session: _Session) -> None:
        """The session's timer: ends it, telling its phone, once it has expired."""
        while self._session is session:
            if self._expired(session, self.clock()):
                await self.end_session(_expiry(session))
                return
            # A tenth of a second past the deadline: expired is strictly past it.
            await self.sleep(max(0.0, self._deadline(session) - self.clock()) + 0.1)

    def status(self) -> dict[str, Any]:
        session = self._session
        if session is not None and self._expired(session, self.clock()):
            session = None  # its timer has yet to run
        return {"failures": self.failures, "max_failures": self.max_failures,
                "locked": self.locked,
                "session": None if session is None else {
                    "established": session.established,
                    "verification_code": session.keys.verification_code
                    if session.established and session.keys else None}}

    async def push(self, message: dict[str, Any]) -> bool:
        """Send ``message`` to the established session (progress notifications)."""
        async with self._lock:
            session = self._session
            if session is None or session.channel is None:
                return False
            return await self._send_message(session, message)

    # ---- GATT ----------------------------------------------------------------------------

    async def _read_info(self, request: GattRequest) -> bytes:
        remember_mtu(self._mtus, request)
        info = {"protocol": PROTOCOL_VERSION, **self.host.secure_summary(),
                "locked": self.locked, "attempts_left": self.attempts_left}
        return encode_message(info)

    async def rx_write(self, value: bytes, request: GattRequest) -> None:
        """The RX characteristic's write handler; never raises (errors become ERROR frames)."""
        device = request.device
        remember_mtu(self._mtus, request)
        reader = self._readers.get(device)
        if reader is None:
            reader = self._readers[device] = FrameReader(self.clock)
            while len(self._readers) > MAX_PHONES:
                self._readers.popitem(last=False)
        try:
            # Frames delimit themselves, so the pieces of a long write (offsets) and
            # separate writes are the same stream. Fed before any await: in order.
            frames = reader.feed(value)
        except ProtocolError as exc:
            await self._refuse(device, None, exc)
            return
        async with self._lock:
            for frame in frames:
                try:
                    await self._handle(device, frame)
                except ProtocolError as exc:
                    await self._refuse(device, frame.sid, exc)
                except Exception:
                    log.exception("BLE secure service: handling a frame failed")
                    await self._refuse(device, frame.sid, ProtocolError(
                        ErrorCode.UNEXPECTED, "internal error"))

    async def _refuse(self, device: str, sid: bytes | None, exc: ProtocolError) -> None:
        if self._said.allow():
            log.info("BLE secure service: %s from %s: %s", exc.code.name, device, exc.message)
        session = self._session
        if sid is None and (session is None or session.device != device):
            # A broken stream of a phone without a session: no session id to answer in,
            # and an ERROR with none goes to every subscriber, pairing phones too. Logged
            # (within the budget) only.
            return
        if session is not None and session.device == device and sid in (None, session.sid):
            sid = sid or session.sid  # a broken stream: still this phone's session
            if exc.code not in (ErrorCode.BUSY, ErrorCode.LOCKED):
                self._session = None  # any other protocol error ends the phone's session
        elif session is not None and sid == session.sid:
            # Another phone's live session id: every subscriber receives the ERROR, and its
            # owner would end a session the hub keeps.
            sid = None
        await self._send(device, error_frame(sid or NO_SESSION, exc.code, self.attempts_left,
                                             exc.message))

    async def _send_message(self, session: _Session, message: dict[str, Any]) -> bool:
        assert session.channel is not None
        plaintext = encode_message(message)
        try:
            frame = session.channel.seal(plaintext)
        except ValueError as exc:
            # The channel refused it before numbering it, so the session stays usable;
            # the phone waits in vain for this one message only.
            log.error("BLE secure service: %s message to %s not sent: %s",
                      str(message.get("type"))[:40], session.device, exc)
            return False
        await self._send(session.device, frame)
        return True

    async def _send(self, device: str, frame: Frame) -> None:
        if self._tx is None:
            return
        # Every subscribed phone receives every notification, cut by bluetoothd to its own
        # MTU: pieces for the smallest MTU known, so that each can still cut out frames.
        size = min(self._mtus.values(), default=DEFAULT_NOTIFY_LEN + 3) - 3
        try:
            for piece in chunks(frame.encode(), size):
                if not await self._tx.notify(piece):
                    log.debug("BLE secure service: nobody subscribed to notifications")
                    return
        except Exception:
            log.exception("BLE secure service: notification failed")

    # ---- protocol ------------------------------------------------------------------------

    async def _handle(self, device: str, frame: Frame) -> None:
        if frame.type == MsgType.PAKE_START and not self._crypto_loaded:
            # The first handshake since start: cryptography and spake2 are imported now,
            # off the event loop (secure_protocol's docstring says why not at start), and
            # before the session state is read, which the wait could have changed.
            reader = self._readers.get(device)
            await asyncio.to_thread(load_crypto)
            self._crypto_loaded = True
            if self._readers.get(device) is not reader:
                # The phone went away meanwhile (forget) or the window was reset: its
                # handshake would hold the service for another phone's 30 s.
                log.info("BLE secure service: %s left during its handshake", device)
                return
        now = self.clock()
        session = self._session
        if session is not None and self._expired(session, now):
            self._session = None
            if (session.device, session.sid) == (device, frame.sid) and frame.type != \
                    MsgType.PAKE_START:
                raise ProtocolError(ErrorCode.UNEXPECTED, _expiry(session))
            session = None
        if frame.type == MsgType.PAKE_START:
            await self._start(device, frame, session, now)
            return
        if session is None or session.device != device or session.sid != frame.sid:
            raise ProtocolError(ErrorCode.UNEXPECTED, "no handshake in progress for this "
                                                      "session; start with PAKE_START")
        session.last = now
        if frame.type == MsgType.PAKE_CONFIRM and not session.established:
            await self._confirm(session, frame)
        elif frame.type == MsgType.DATA and session.channel is not None:
            request = decode_message(session.channel.open(frame))
            await self._send_message(session, await self._answer(request))
        else:
            raise ProtocolError(ErrorCode.UNEXPECTED, f"frame type 0x{frame.type:02x} not "
                                                      "expected now")

    def _deadline(self, session: _Session) -> float:
        if not session.established:
            return session.started + HANDSHAKE_SECONDS
        return session.last + IDLE_SECONDS

    def _expired(self, session: _Session, now: float) -> bool:
        return now > self._deadline(session)

    async def _start(self, device: str, frame: Frame, session: _Session | None,
                     now: float) -> None:
        body = frame.body
        if frame.sid == NO_SESSION:
            raise ProtocolError(ErrorCode.MALFORMED, "session id 0 is reserved")
        if len(body) != 1 + SPAKE2_MESSAGE_LEN:
            raise ProtocolError(ErrorCode.MALFORMED, "PAKE_START is version + 33 bytes")
        if body[0] != PROTOCOL_VERSION:
            raise ProtocolError(ErrorCode.VERSION, f"this hub speaks protocol version "
                                                   f"{PROTOCOL_VERSION}")
        if self.locked:
            raise ProtocolError(ErrorCode.LOCKED, "too many wrong setup codes: press the "
                                                  "hub's button to try again")
        if session is not None and session.device != device:
            raise ProtocolError(ErrorCode.BUSY, "another phone is pairing this hub")
        msg_a = body[1:]
        from spake2 import SPAKE2_B  # imported by load_crypto (_handle): a lookup

        spake = SPAKE2_B(setup_code_password(self.host.setup_code()), idA=PHONE_IDENTITY,
                         idB=hub_identity(self.device_id), entropy_f=self.entropy)
        msg_b = spake.start()
        try:
            key = spake.finish(msg_a)
        except Exception as exc:
            # The library's words ("I'm B, but I got a message from B") are for the log.
            log.debug("BLE secure service: SPAKE2 refused message A: %s", exc)
            raise ProtocolError(ErrorCode.MALFORMED, BAD_MESSAGE_A) from None
        # Counted now, refunded on a correct confirmation: see the module docstring.
        self.failures += 1
        keys = SessionKeys.derive(key, msg_a, msg_b)
        self._session = _Session(device, frame.sid, started=now, last=now, msg_a=msg_a,
                                 msg_b=msg_b, keys=keys)
        if self._timer is not None:
            self._timer.cancel()  # one timer at a time: the session it watched is over
        self._timer = asyncio.get_running_loop().create_task(
            self._expire_later(self._session))
        log.info("BLE secure session: handshake from %s", device)
        await self._send(device, Frame(MsgType.PAKE_REPLY, frame.sid,
                                       msg_b + keys.confirmation("hub", msg_a, msg_b)))

    async def _confirm(self, session: _Session, frame: Frame) -> None:
        assert session.keys is not None
        if len(frame.body) != MAC_LEN:
            # A broken phone, not a wrong code (the attempt stays counted all the same: only
            # a correct confirmation takes it back).
            raise ProtocolError(ErrorCode.MALFORMED, f"PAKE_CONFIRM is {MAC_LEN} bytes")
        expected = session.keys.confirmation("phone", session.msg_a, session.msg_b)
        if not hmac.compare_digest(frame.body, expected):
            self._session = None
            if self.locked:
                log.warning("BLE secure service locked after %d wrong setup codes; press the "
                            "button (or gatewayctl ble-window open) to allow more",
                            self.failures)
            raise ProtocolError(ErrorCode.WRONG_CODE, "wrong setup code")
        if session.counted:
            self.failures -= 1
            session.counted = False
        session.channel = Channel(session.keys.hub_to_phone, session.keys.phone_to_hub,
                                  session.sid)
        log.info("BLE secure session with %s established (verification code %s)",
                 session.device, session.keys.verification_code)
        info = {"type": "device-info", **self.host.secure_device_info(),
                "verification_code": session.keys.verification_code}
        await self._send_message(session, info)

    async def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        kind, rid = request["type"], request.get("id")
        if kind == "pair":
            raw = request.get("fields")
            try:
                progress = await self.host.secure_pair(lambda: pair_fields(raw))
            except PairingError as exc:
                return failure(rid, exc.status, exc.code, exc.message, exc.field)
            return {"type": "pair", "id": rid, "ok": True, "progress": progress}
        if kind == "progress":
            return {"type": "progress", "id": rid, **self.host.secure_progress()}
        if kind == "networks":
            return networks_reply(rid, self.host.secure_networks())
        if kind == "device-info":
            assert self._session is not None and self._session.keys is not None
            return {"type": "device-info", "id": rid, **self.host.secure_device_info(),
                    "verification_code": self._session.keys.verification_code}
        return failure(rid, 400, "unknown-request", f"unknown request type {kind[:40]!r}",
                        reply_type=kind[:40])


def _expiry(session: _Session) -> str:
    return (f"the session was idle for over {IDLE_SECONDS:g} s" if session.established
            else f"the handshake timed out ({HANDSHAKE_SECONDS:g} s)")
