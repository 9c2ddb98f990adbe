"""Improv Wi-Fi over BLE (spec 2.x, https://www.improv-wifi.com/ble/): codec and service.

Home Assistant, the Improv web SDK and any other Improv client can give the hub Wi-Fi with
this. The module has two halves:

- the codec (``encode_frame``/``parse_command``/``Reassembler``): RPC frames are
  ``command, length, data..., checksum`` with a one-byte sum checksum; ``data`` is a list of
  length-prefixed UTF-8 strings;
- :class:`ImprovService`: the five characteristics, the state and error machine and the
  authorization that lapses. Everything hub-specific (pairing, scan cache, identify) goes
  through an :class:`ImprovHost`, which :mod:`gatewayd.ble_commission` implements.

Nothing a phone writes can raise out of the write handler: malformed input becomes an Improv
error state, as the spec wants, and the GATT write itself succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from gatewayd.ble_gatt import Characteristic, GattRequest, Service

log = logging.getLogger(__name__)

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
MAX_WRITERS = 8  # phones whose partial writes are tracked at once
DEFAULT_NOTIFY_LEN = 20  # ATT_MTU 23 - 3: safe when a phone's MTU is not known yet
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


class ImprovRefused(Exception):
    """Raised by an :class:`ImprovHost` to answer a command with an Improv error."""

    def __init__(self, error: Error, reason: str) -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason


# --- codec ----------------------------------------------------------------------------------

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


# --- the service ----------------------------------------------------------------------------

class ImprovHost(Protocol):
    """What the Improv service needs from the hub."""

    @property
    def improv_capabilities(self) -> Capability: ...

    async def improv_wifi(self, ssid: str, psk: str) -> None:
        """Start connecting (return at once) or raise :class:`ImprovRefused`; the outcome is
        reported later through :meth:`ImprovService.attempt_finished`."""

    def improv_device_info(self) -> list[str]: ...

    def improv_networks(self) -> list[tuple[str, int, str]]:
        """(ssid, rssi in dBm, auth type as the spec spells it)."""

    async def improv_identify(self) -> None: ...

    async def improv_hostname(self, new: str | None) -> str: ...

    async def improv_device_name(self, new: str | None) -> str: ...


StateListener = Callable[[State], None]


class ImprovService:
    """The Improv GATT service and its state machine (one per hub, rebuilt GATT per window)."""

    def __init__(self, host: ImprovHost, *, authorization_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.host = host
        self.authorization_seconds = authorization_seconds
        self.clock = clock
        self.requires_authorization = True
        self.on_state: StateListener | None = None  # the advertisement follows the state
        self._state = State.AUTHORIZATION_REQUIRED
        self._error = Error.NONE
        self._result = b""
        self._authorized_until: float | None = None
        self._hub_busy = False
        self._hub_provisioned = False
        self._attempt_pending = False
        self._writers: OrderedDict[str, Reassembler] = OrderedDict()
        self._mtus: dict[str, int] = {}
        self._lapse: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._chars: dict[str, Characteristic] = {}
        self._lock = asyncio.Lock()

    # ---- observation ---------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def error(self) -> Error:
        return self._error

    @property
    def result(self) -> bytes:
        """The last RPC result frame (what a read of the result characteristic returns)."""
        return self._result

    def service_data(self) -> bytes:
        """The 4677 service data: state, capabilities, four reserved zero bytes."""
        return bytes([self._state, int(self.host.improv_capabilities), 0, 0, 0, 0])

    def status(self) -> dict[str, object]:
        left = None
        if self._authorized_until is not None:
            left = max(0.0, round(self._authorized_until - self.clock(), 1))
        return {"state": self._state.name.lower().replace("_", "-"),
                "error": self._error.name.lower().replace("_", "-"),
                "authorization_required": self.requires_authorization,
                "authorized_for": left}

    # ---- lifecycle (called by the commissioning window) -----------------------------------

    def gatt_service(self) -> Service:
        """Fresh GATT objects for a new registration (sdbus exports an object only once)."""
        chars = {
            STATE_UUID: Characteristic(STATE_UUID, ["read", "notify"], read=self._read_state),
            ERROR_UUID: Characteristic(ERROR_UUID, ["read", "notify"], read=self._read_error),
            # The Improv web SDK writes without response, Home Assistant with.
            RPC_COMMAND_UUID: Characteristic(RPC_COMMAND_UUID,
                                             ["write", "write-without-response"],
                                             write=self.rpc_write),
            RPC_RESULT_UUID: Characteristic(RPC_RESULT_UUID, ["read", "notify"],
                                            read=self._read_result),
            CAPABILITIES_UUID: Characteristic(CAPABILITIES_UUID, ["read"],
                                              read=self._read_capabilities),
        }
        self._chars = chars
        return Service(SERVICE_UUID, list(chars.values()))

    def open(self, *, requires_authorization: bool, busy: bool, provisioned: bool) -> None:
        """Start over for a new window."""
        self.requires_authorization = requires_authorization
        self._cancel_lapse()
        self._authorized_until = None
        self._attempt_pending = False
        self._error = Error.NONE
        self._result = b""
        self._writers.clear()
        self._mtus.clear()
        self._hub_busy, self._hub_provisioned = busy, provisioned
        self._state = self._compute_state()

    async def close(self) -> None:
        self._cancel_lapse()
        self._authorized_until = None
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._chars = {}

    def forget(self, device: str) -> None:
        """A phone disconnected: drop its half-written frame."""
        self._writers.pop(device, None)
        self._mtus.pop(device, None)

    async def authorize(self) -> None:
        """The button was pressed: authorized for ``authorization_seconds``."""
        self._authorized_until = self.clock() + self.authorization_seconds
        self._schedule_lapse()
        await self._refresh()

    async def hub_changed(self, *, busy: bool, provisioned: bool) -> None:
        """Onboarding moved: an attempt runs (from any source), or the hub needs no Wi-Fi."""
        self._hub_busy, self._hub_provisioned = busy, provisioned
        await self._refresh()

    async def attempt_finished(self, ok: bool, redirect_url: str | None = None) -> None:
        """The outcome of the attempt our Wi-Fi settings started."""
        if not self._attempt_pending:
            return
        self._attempt_pending = False
        if ok:
            self._hub_provisioned = True
            await self._refresh()
            await self._send_result(Command.WIFI_SETTINGS, [redirect_url] if redirect_url else [])
            return
        await self._set_error(Error.UNABLE_TO_CONNECT)
        if self._authorized_until is not None:
            # The spec: after a failed attempt the authorization timeout starts over.
            self._authorized_until = self.clock() + self.authorization_seconds
            self._schedule_lapse()
        await self._refresh()

    # ---- state ---------------------------------------------------------------------------

    def _authorized(self) -> bool:
        if not self.requires_authorization:
            return True
        return self._authorized_until is not None and self.clock() < self._authorized_until

    def _compute_state(self) -> State:
        if self._hub_provisioned:
            return State.PROVISIONED
        if self._hub_busy or self._attempt_pending:
            return State.PROVISIONING
        return State.AUTHORIZED if self._authorized() else State.AUTHORIZATION_REQUIRED

    async def _refresh(self) -> None:
        state = self._compute_state()
        if state == self._state:
            return
        log.info("Improv state %s -> %s", self._state.name, state.name)
        self._state = state
        if self.on_state is not None:
            self.on_state(state)
        await self._notify(STATE_UUID, bytes([state]))

    async def _set_error(self, error: Error) -> None:
        if error == self._error:
            return
        self._error = error
        await self._notify(ERROR_UUID, bytes([error]))

    def _schedule_lapse(self) -> None:
        self._cancel_lapse()
        loop = asyncio.get_running_loop()
        self._lapse = loop.call_later(self.authorization_seconds + 0.01, self._spawn_refresh)

    def _cancel_lapse(self) -> None:
        if self._lapse is not None:
            self._lapse.cancel()
            self._lapse = None

    def _spawn_refresh(self) -> None:
        task = asyncio.get_running_loop().create_task(self._refresh(), name="improv-lapse")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- GATT ----------------------------------------------------------------------------

    async def _read_state(self, request: GattRequest) -> bytes:
        self._mtus[request.device] = request.mtu
        return bytes([self._state])

    async def _read_error(self, request: GattRequest) -> bytes:
        return bytes([self._error])

    async def _read_result(self, request: GattRequest) -> bytes:
        return self._result

    async def _read_capabilities(self, request: GattRequest) -> bytes:
        return bytes([int(self.host.improv_capabilities)])

    def _notify_len(self) -> int:
        # Notifications go to every subscriber: cut for the smallest MTU we know of.
        return min((m - 3 for m in self._mtus.values()), default=DEFAULT_NOTIFY_LEN)

    async def _notify(self, uuid: str, value: bytes) -> None:
        char = self._chars.get(uuid)
        if char is None:
            return
        try:
            if len(value) <= self._notify_len():
                await char.notify(value)
                return
            # Longer than one notification (an RPC result at a small MTU): consecutive
            # pieces that a client reassembles by the length byte; the whole value can
            # also be read.
            size = self._notify_len()
            for start in range(0, len(value), size):
                await char.notify(value[start:start + size])
        except Exception:
            log.exception("Improv notification failed")

    async def _send_result(self, command: Command, strings: Sequence[str]) -> None:
        self._result = encode_result(command, strings)
        await self._notify(RPC_RESULT_UUID, self._result)

    def _writer(self, device: str) -> Reassembler:
        writer = self._writers.get(device)
        if writer is None:
            writer = self._writers[device] = Reassembler(self.clock)
            while len(self._writers) > MAX_WRITERS:
                self._writers.popitem(last=False)
        return writer

    async def rpc_write(self, value: bytes, request: GattRequest) -> None:
        """The RPC command characteristic's write handler; never raises."""
        # Feed before the first await: writes without response may be handled concurrently
        # and their pieces must stay in order.
        self._mtus[request.device] = request.mtu
        try:
            frame = self._writer(request.device).feed(value, request.offset)
        except FrameError as exc:
            log.info("Improv: %s", exc.reason)
            await self._set_error(exc.error)
            return
        if frame is None:
            return
        async with self._lock:
            try:
                command = parse_command(frame)
            except FrameError as exc:
                log.info("Improv: %s", exc.reason)
                await self._set_error(exc.error)
                return
            # The spec's clients treat a new command as clearing the previous error.
            await self._set_error(Error.NONE)
            try:
                await self._dispatch(command)
            except (ImprovRefused, FrameError) as exc:
                log.info("Improv %s refused: %s", command.command.name, exc.reason)
                await self._set_error(exc.error)
            except Exception:
                log.exception("Improv %s failed", command.command.name)
                await self._set_error(Error.UNKNOWN)

    async def _dispatch(self, cmd: RpcCommand) -> None:
        caps = self.host.improv_capabilities
        if cmd.command == Command.WIFI_SETTINGS:
            await self._wifi_settings(cmd.strings[0], cmd.strings[1])
        elif cmd.command == Command.IDENTIFY:
            if not caps & Capability.IDENTIFY:
                raise ImprovRefused(Error.UNKNOWN_RPC, "identify is not supported")
            await self.host.improv_identify()
        elif cmd.command == Command.DEVICE_INFO:
            await self._send_result(cmd.command, self.host.improv_device_info())
        elif cmd.command == Command.SCAN_WIFI:
            await self._send_result(cmd.command, self._scan_strings())
        elif cmd.command == Command.HOSTNAME:
            if not caps & Capability.HOSTNAME:
                raise ImprovRefused(Error.UNKNOWN_RPC, "hostname is not supported")
            new = self._require_authorized_text(cmd, always=True)
            if new is not None and not HOSTNAME.match(new):
                raise ImprovRefused(Error.BAD_HOSTNAME, "not an RFC 1123 host name")
            await self._send_result(cmd.command, [await self.host.improv_hostname(new)])
        elif cmd.command == Command.DEVICE_NAME:
            new = self._require_authorized_text(cmd, always=False)
            await self._send_result(cmd.command, [await self.host.improv_device_name(new)])

    def _require_authorized_text(self, cmd: RpcCommand, *, always: bool) -> str | None:
        """The optional string of a get/set command; setting (and for the hostname, also
        getting) needs authorization, and a set restarts the authorization timeout."""
        new = _text(cmd.strings[0]) if cmd.strings else None
        if (always or new is not None) and self._state != State.AUTHORIZED:
            raise ImprovRefused(Error.NOT_AUTHORIZED, f"{cmd.command.name} needs authorization")
        if new is not None and self._authorized_until is not None:
            self._authorized_until = self.clock() + self.authorization_seconds
            self._schedule_lapse()
        return new

    async def _wifi_settings(self, raw_ssid: bytes, raw_psk: bytes) -> None:
        if self._state != State.AUTHORIZED:
            raise ImprovRefused(Error.NOT_AUTHORIZED, f"Wi-Fi settings in state "
                                                      f"{self._state.name}")
        ssid, psk = _text(raw_ssid), _text(raw_psk)
        log.info("Improv: Wi-Fi settings for %r", ssid)  # never the passphrase
        await self.host.improv_wifi(ssid, psk)
        self._attempt_pending = True
        await self._refresh()

    def _scan_strings(self) -> list[str]:
        strings: list[str] = []
        used = 0
        for ssid, rssi, auth in self.host.improv_networks():
            entry = [ssid, str(rssi), auth]
            size = sum(1 + len(s.encode("utf-8")) for s in entry)
            if used + size > MAX_DATA:
                break  # one RPC result holds 255 bytes: the strongest networks come first
            strings += entry
            used += size
        return strings


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(Error.INVALID_RPC, "strings must be UTF-8") from None
