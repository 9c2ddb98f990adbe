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
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol

from gatewayd.ble.gatt import Characteristic, GattRequest, Service, remember_mtu
from gatewayd.ble.improv_codec import (
    CAPABILITIES_UUID,
    ERROR_UUID,
    HOSTNAME,
    MAX_DATA,
    RPC_COMMAND_UUID,
    RPC_RESULT_UUID,
    SERVICE_UUID,
    STATE_UUID,
    Capability,
    Command,
    Error,
    FrameError,
    Reassembler,
    RpcCommand,
    State,
    encode_result,
    parse_command,
)
from gatewayd.onboarding.pairing import PairingError

log = logging.getLogger(__name__)
MAX_WRITERS = 8  # phones whose partial writes are tracked at once
DEFAULT_NOTIFY_LEN = 20  # ATT_MTU 23 - 3: safe when a phone's MTU is not known yet
RESULT_OVERHEAD = 3  # a result frame's command, length and checksum bytes


class ImprovRefused(Exception):
    """Raised by an :class:`ImprovHost` to answer a command with an Improv error."""

    def __init__(self, error: Error, reason: str, *,
                 refusal: PairingError | None = None) -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason
        # The pairing front door's refusal behind it, when there is one: Improv's error
        # codes cannot carry it, the log and the tests can.
        self.refusal = refusal


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
        self._attempt_device: str | None = None  # the phone whose Wi-Fi settings are pending
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
        self._attempt_pending, self._attempt_device = False, None
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
        if device == self._attempt_device:
            self._attempt_device = None  # nobody watches its attempt: errors are anyone's

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
            await self._send_result(Command.WIFI_SETTINGS,
                                    [redirect_url] if redirect_url else [], self._attempt_device)
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
        remember_mtu(self._mtus, request)
        return bytes([self._state])

    async def _read_error(self, request: GattRequest) -> bytes:
        return bytes([self._error])

    async def _read_result(self, request: GattRequest) -> bytes:
        return self._result

    async def _read_capabilities(self, request: GattRequest) -> bytes:
        return bytes([int(self.host.improv_capabilities)])

    def _notify_len(self) -> int:
        """The longest notification every subscriber we know of receives whole."""
        return min((m - 3 for m in self._mtus.values()), default=DEFAULT_NOTIFY_LEN)

    async def _notify(self, uuid: str, value: bytes, whole_within: int | None = None) -> None:
        """Notify ``value`` in one piece if it fits ``whole_within`` bytes (the requester's
        payload; by default what every subscriber receives whole), else in pieces."""
        char = self._chars.get(uuid)
        if char is None:
            return
        try:
            limit = self._notify_len() if whole_within is None else whole_within
            if len(value) <= limit:
                # Improv clients (Home Assistant's) take every notification of the result
                # as one frame: the phone that asked must get it in one piece, even if a
                # phone with a smaller MTU then receives it cut short (it can read it).
                await char.notify(value)
                return
            # Longer than the requester's own payload: consecutive pieces that a client
            # reassembles by the length byte, cut so that every subscriber gets them whole;
            # the whole value can also be read.
            size = self._notify_len()
            for start in range(0, len(value), size):
                await char.notify(value[start:start + size])
        except Exception:
            log.exception("Improv notification failed")

    async def _send_result(self, command: Command, strings: Sequence[str],
                           device: str | None) -> None:
        self._result = encode_result(command, strings)
        mtu = self._mtus.get(device) if device is not None else None
        await self._notify(RPC_RESULT_UUID, self._result,
                           mtu - 3 if mtu is not None else None)

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
        device = request.device
        remember_mtu(self._mtus, request)
        try:
            frame = self._writer(device).feed(value, request.offset)
        except FrameError as exc:
            log.info("Improv: %s", exc.reason)
            await self._refuse(device, exc.error)
            return
        if frame is None:
            return
        async with self._lock:
            try:
                command = parse_command(frame)
            except FrameError as exc:
                log.info("Improv: %s", exc.reason)
                await self._refuse(device, exc.error)
                return
            # The spec's clients treat a new command as clearing the previous error.
            await self._set_error(Error.NONE)
            try:
                await self._dispatch(command, device)
            except (ImprovRefused, FrameError) as exc:
                log.info("Improv %s refused: %s", command.command.name, exc.reason)
                await self._refuse(device, exc.error)
            except Exception:
                log.exception("Improv %s failed", command.command.name)
                await self._refuse(device, Error.UNKNOWN)

    async def _refuse(self, device: str, error: Error) -> None:
        """Publish the error a write from ``device`` caused, unless another phone's Wi-Fi
        settings are pending: every phone reads the one error characteristic, and the
        phone watching its attempt (Home Assistant's client, ours) would take this error
        for its attempt failing. ESPHome ignores writes while provisioning, for the same
        reason."""
        if self._attempt_pending and self._attempt_device not in (None, device):
            log.info("Improv: error %s for %s not published: another phone's attempt is "
                     "pending", error.name, device)
            return
        await self._set_error(error)

    async def _dispatch(self, cmd: RpcCommand, device: str) -> None:
        caps = self.host.improv_capabilities
        if cmd.command == Command.WIFI_SETTINGS:
            await self._wifi_settings(cmd.strings[0], cmd.strings[1], device)
        elif cmd.command == Command.IDENTIFY:
            if not caps & Capability.IDENTIFY:
                raise ImprovRefused(Error.UNKNOWN_RPC, "identify is not supported")
            await self.host.improv_identify()
        elif cmd.command == Command.DEVICE_INFO:
            await self._send_result(cmd.command, self.host.improv_device_info(), device)
        elif cmd.command == Command.SCAN_WIFI:
            await self._send_result(cmd.command, self._scan_strings(device), device)
        elif cmd.command == Command.HOSTNAME:
            if not caps & Capability.HOSTNAME:
                raise ImprovRefused(Error.UNKNOWN_RPC, "hostname is not supported")
            new = self._require_authorized_text(cmd, always=True)
            if new is not None and not HOSTNAME.fullmatch(new):  # "$" lets a "\n" end it
                raise ImprovRefused(Error.BAD_HOSTNAME, "not an RFC 1123 host name")
            value = await self.host.improv_hostname(new)
            self._renew_after_set(new)
            await self._send_result(cmd.command, [value], device)
        elif cmd.command == Command.DEVICE_NAME:
            new = self._require_authorized_text(cmd, always=False)
            value = await self.host.improv_device_name(new)
            self._renew_after_set(new)
            await self._send_result(cmd.command, [value], device)

    def _require_authorized_text(self, cmd: RpcCommand, *, always: bool) -> str | None:
        """The optional string of a get/set command; setting (and for the hostname, also
        getting) needs authorization."""
        new = _text(cmd.strings[0]) if cmd.strings else None
        if (always or new is not None) and self._state != State.AUTHORIZED:
            raise ImprovRefused(Error.NOT_AUTHORIZED, f"{cmd.command.name} needs authorization")
        return new

    def _renew_after_set(self, new: str | None) -> None:
        """A set the host accepted restarts the authorization timeout. Only then: a refused
        one (the daemon refuses every device-name set) would let anyone in range keep the
        hub authorized, open to Wi-Fi settings, by writing one every minute."""
        # Still authorized, checked after the host's answer: a set that outlasted the
        # authorization must not bring it back without a press.
        if new is not None and self._authorized_until is not None and self._authorized():
            self._authorized_until = self.clock() + self.authorization_seconds
            self._schedule_lapse()

    async def _wifi_settings(self, raw_ssid: bytes, raw_psk: bytes, device: str) -> None:
        if self._state != State.AUTHORIZED:
            raise ImprovRefused(Error.NOT_AUTHORIZED, f"Wi-Fi settings in state "
                                                      f"{self._state.name}")
        ssid, psk = _text(raw_ssid), _text(raw_psk)
        log.info("Improv: Wi-Fi settings for %r", ssid)  # never the passphrase
        await self.host.improv_wifi(ssid, psk)
        self._attempt_pending, self._attempt_device = True, device
        await self._refresh()

    def _scan_strings(self, device: str) -> list[str]:
        """The strongest networks that fit one result (255 bytes of data) and, when the
        asking phone's MTU is known, one notification to it: Improv clients (Home
        Assistant's) take each notification as a whole frame. When not even one network
        fits that notification, the list goes in pieces, as any long result does."""
        entries = [[ssid, str(rssi), auth] for ssid, rssi, auth in self.host.improv_networks()]
        sizes = [sum(1 + len(s.encode("utf-8")) for s in entry) for entry in entries]
        room = MAX_DATA
        mtu = self._mtus.get(device)
        if mtu is not None and sizes and sizes[0] <= mtu - 3 - RESULT_OVERHEAD:
            room = min(room, mtu - 3 - RESULT_OVERHEAD)
        strings: list[str] = []
        used = 0
        for entry, size in zip(entries, sizes, strict=True):
            if used + size > room:
                break  # the strongest networks come first
            strings += entry
            used += size
        return strings


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(Error.INVALID_RPC, "strings must be UTF-8") from None
