"""The reference phone for BLE commissioning (``gatewayctl ble-pair``), over bleak.

App developers run it against a hub or ``gatewayd --simulate`` to check their reading of
docs/ble-protocol.md: it scans, picks the hub (by device id or name), runs the secure
session with the setup code, sends the pairing request and follows progress; ``--improv``
does the same with Improv Wi-Fi instead.

bleak is imported only inside these functions: the daemon never needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gatewayd.ble import improv_codec as improv
from gatewayd.ble import secure_protocol as ble_secure
from gatewayd.ble.secure_protocol import (
    NO_SESSION,
    Channel,
    ErrorCode,
    Frame,
    FrameReader,
    MsgType,
    PhoneHandshake,
    ProtocolError,
)

if TYPE_CHECKING:
    from bleak import BleakClient
    from bleak.backends.device import BLEDevice
    from bleak.backends.scanner import AdvertisementData

log = logging.getLogger(__name__)

EventSink = Callable[[str, dict[str, Any]], None]
STEP_TIMEOUT = 15.0  # one request/answer over BLE
SETTLE_SECONDS = 1.5  # without --name/--device-id: time to notice a second hub in range


class BlePairError(Exception):
    """Pairing over BLE did not work; ``code`` is stable for scripts."""

    def __init__(self, message: str, code: str = "failed", **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = details


@dataclass
class Candidate:
    device: BLEDevice
    name: str
    improv_state: int | None  # from the 4677 service data, None without Improv

    @property
    def address(self) -> str:
        return str(self.device.address)


def _ignore(_kind: str, _data: dict[str, Any]) -> None:
    return None


# --- scanning -------------------------------------------------------------------------------

def _candidate(device: BLEDevice, adv: AdvertisementData) -> Candidate | None:
    uuids = {u.lower() for u in adv.service_uuids}
    if improv.SERVICE_UUID not in uuids and ble_secure.SERVICE_UUID not in uuids:
        return None
    data = adv.service_data.get(improv.SERVICE_DATA_UUID)
    return Candidate(device, adv.local_name or device.name or "",
                     data[0] if data else None)


async def find_hubs(adapter: str, *, name: str | None = None, timeout: float = 10.0,
                    settle: float = SETTLE_SECONDS, improv_only: bool = False
                    ) -> list[Candidate]:
    """Hubs in range: the one called ``name`` as soon as it shows, else all seen within
    ``settle`` seconds of the first (or ``timeout``)."""
    from bleak import BleakScanner

    found: dict[str, Candidate] = {}
    done = asyncio.Event()
    first: list[float] = []

    def detected(device: BLEDevice, adv: AdvertisementData) -> None:
        hub = _candidate(device, adv)
        if hub is None or (improv_only and hub.improv_state is None):
            return
        found[hub.address] = hub
        if not first:
            first.append(time.monotonic())
        if name is not None and hub.name.casefold() == name.casefold():
            done.set()

    # The callback goes in at construction: listening before discovery starts.
    async with BleakScanner(detected, service_uuids=[improv.SERVICE_UUID,
                                                     ble_secure.SERVICE_UUID],
                            bluez={"adapter": adapter}):
        deadline = time.monotonic() + timeout
        while not done.is_set() and time.monotonic() < deadline:
            if name is None and first and time.monotonic() - first[0] >= settle:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.1)
    hubs = list(found.values())
    if name is not None:
        hubs = [h for h in hubs if h.name.casefold() == name.casefold()]
    return hubs


@contextlib.asynccontextmanager
async def connect(hub: Candidate, adapter: str, timeout: float = 20.0
                  ) -> AsyncIterator[BleakClient]:
    from bleak import BleakClient

    async with BleakClient(hub.device, timeout=timeout, bluez={"adapter": adapter}) as client:
        yield client


def _write_size(client: BleakClient) -> int:
    # bleak on BlueZ knows the MTU only after AcquireWrite (which our characteristics do not
    # offer) and warns before falling back to 23: small writes are always safe.
    with warnings.catch_warnings(), contextlib.suppress(Exception):
        warnings.simplefilter("ignore")
        return max(20, int(client.mtu_size) - 3)
    return 20


async def read_info(client: BleakClient) -> dict[str, Any]:
    raw = await client.read_gatt_char(ble_secure.INFO_UUID)
    info = json.loads(bytes(raw).decode("utf-8"))
    if not isinstance(info, dict):
        raise BlePairError("the hub's info characteristic is not a JSON object", "protocol")
    return info


async def _pick(adapter: str, device_id: str | None, name: str | None, timeout: float,
                improv_only: bool, events: EventSink) -> Candidate:
    hubs = await find_hubs(adapter, name=name, timeout=timeout, improv_only=improv_only)
    if not hubs:
        what = f"named {name!r}" if name else "advertising gatewayd or Improv"
        raise BlePairError(f"no hub {what} found within {timeout:.0f}s on {adapter}; is its "
                           "commissioning window open?", "not-found")
    if device_id is None:
        if len(hubs) > 1:
            listed = ", ".join(f"{h.name or '?'} ({h.address})" for h in hubs)
            raise BlePairError(f"several hubs in range: {listed}; choose one with --name or "
                               "--device-id", "ambiguous")
        events("found", {"name": hubs[0].name, "address": hubs[0].address})
        return hubs[0]
    # Names end in the MAC's last four hex digits by default: try likely ones first.
    hint = device_id.replace("-", "").replace(":", "")[-4:].upper()
    for hub in sorted(hubs, key=lambda h: not h.name.upper().endswith(hint)):
        with contextlib.suppress(Exception):
            async with connect(hub, adapter) as client:
                if (await read_info(client)).get("device_id") == device_id:
                    events("found", {"name": hub.name, "address": hub.address})
                    return hub
    raise BlePairError(f"no hub with device id {device_id} in range", "not-found")


# --- the secure session ---------------------------------------------------------------------

class SecureLink:
    """Frames over the RX/TX characteristics of one connection."""

    def __init__(self, client: BleakClient) -> None:
        self.client = client
        self._reader = FrameReader()
        self._frames: asyncio.Queue[Frame] = asyncio.Queue(maxsize=256)
        self._write_size = _write_size(client)
        self.sid = NO_SESSION

    async def open(self) -> None:
        await self.client.start_notify(ble_secure.TX_UUID, self._on_notify)

    def _on_notify(self, _char: Any, data: bytearray) -> None:
        try:
            for frame in self._reader.feed(bytes(data)):
                self._frames.put_nowait(frame)
        except (ProtocolError, asyncio.QueueFull) as exc:
            log.warning("dropping notifications from the hub: %s", exc)

    async def send(self, frame: Frame) -> None:
        for piece in ble_secure.chunks(frame.encode(), self._write_size):
            await self.client.write_gatt_char(ble_secure.RX_UUID, piece, response=True)

    async def receive(self, timeout: float = STEP_TIMEOUT) -> Frame:
        """The next frame of our session (others' frames, and ERRORs with session id 0,
        are for other phones: docs/ble-protocol.md §4.2)."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self._frames.get()
                if frame.sid == self.sid:
                    if frame.type == MsgType.ERROR:
                        code, left, text = ble_secure.parse_error(frame)
                        raise _hub_error(code, left, text)
                    return frame


def _hub_error(code: int, attempts_left: int, text: str) -> BlePairError:
    names = {ErrorCode.WRONG_CODE: "wrong-setup-code", ErrorCode.LOCKED: "locked",
             ErrorCode.BUSY: "busy", ErrorCode.VERSION: "version"}
    name = names.get(code, "protocol")  # type: ignore[call-overload]
    message = f"the hub refused: {text}"
    if code == ErrorCode.WRONG_CODE:
        message += f" ({attempts_left} attempt(s) left before the hub locks)"
    return BlePairError(message, name, attempts_left=attempts_left, hub_code=code)


class SecureSession:
    """An established session: requests with ids, and pushed progress."""

    def __init__(self, link: SecureLink, channel: Channel, device_info: dict[str, Any]) -> None:
        self.link = link
        self.channel = channel
        self.device_info = device_info
        self.pushed: list[dict[str, Any]] = []
        self._next_id = 1

    @classmethod
    async def establish(cls, client: BleakClient, setup_code: str,
                        device_id: str) -> SecureSession:
        link = SecureLink(client)
        await link.open()
        handshake = PhoneHandshake(setup_code, device_id)
        link.sid = handshake.sid
        await link.send(handshake.start())
        try:
            confirm, channel = handshake.finish(await link.receive())
        except ProtocolError as exc:
            if exc.code == ErrorCode.WRONG_CODE:
                raise BlePairError("wrong setup code: the hub could not prove it knows it",
                                   "wrong-setup-code") from None
            raise BlePairError(f"handshake failed: {exc.message}", "protocol") from None
        await link.send(confirm)
        session = cls(link, channel, {})
        session.device_info = await session.next_message()
        return session

    async def next_message(self, timeout: float = STEP_TIMEOUT) -> dict[str, Any]:
        frame = await self.link.receive(timeout)
        try:
            return ble_secure.decode_message(self.channel.open(frame))
        except ProtocolError as exc:
            raise BlePairError(f"bad message from the hub: {exc.message}", "protocol") from None

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        rid = self._next_id
        self._next_id += 1
        await self.link.send(self.channel.seal(ble_secure.encode_message({**message, "id": rid})))
        while True:
            reply = await self.next_message()
            if reply.get("id") == rid:
                return reply
            self.pushed.append(reply)

    async def follow(self, attempt: str | None, timeout: float, events: EventSink
                     ) -> dict[str, Any]:
        """Progress until the attempt ends: the final progress."""
        deadline = time.monotonic() + timeout
        while True:
            if self.pushed:
                message = self.pushed.pop(0)
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BlePairError(f"no result within {timeout:.0f}s", "timeout")
                message = await self.next_message(remaining)
            if message.get("type") != "progress":
                continue
            events("progress", message)
            current = (message.get("attempt") or {}).get("id")
            if attempt is not None and current not in (None, attempt):
                continue
            if message.get("state") == "online":
                return message
            if message.get("state") != "connecting" and message.get("last_failure"):
                return message


async def pair_secure(*, adapter: str, setup_code: str, fields: dict[str, Any],
                      device_id: str | None = None, name: str | None = None,
                      scan_timeout: float = 10.0, timeout: float = 120.0,
                      events: EventSink = _ignore) -> dict[str, Any]:
    """Pair a hub through the secure service; returns the outcome (raises BlePairError)."""
    hub = await _pick(adapter, device_id, name, scan_timeout, False, events)
    async with connect(hub, adapter) as client:
        info = await read_info(client)
        if info.get("locked"):
            raise BlePairError("the hub is locked after too many wrong setup codes: press "
                               "its button, then try again", "locked")
        session = await SecureSession.establish(client, setup_code, str(info["device_id"]))
        events("session", {"verification_code": session.device_info.get("verification_code"),
                           "device_id": session.device_info.get("device_id")})
        reply = await session.request({"type": "pair", "fields": fields})
        if not reply.get("ok"):
            raise BlePairError(str(reply.get("message")), str(reply.get("code", "refused")),
                               field=reply.get("field"), status=reply.get("status"))
        attempt = ((reply.get("progress") or {}).get("attempt") or {}).get("id")
        events("accepted", reply.get("progress") or {})
        final = await session.follow(attempt, timeout, events)
    result = {"ok": final.get("state") == "online", "hub": {"name": hub.name,
                                                            "address": hub.address},
              "device": session.device_info, "progress": final}
    if not result["ok"]:
        failure = final.get("last_failure") or {}
        raise BlePairError(f"pairing failed: {failure.get('reason') or failure.get('code')}",
                           str(failure.get("code") or "failed"), result=result)
    return result


# --- Improv ---------------------------------------------------------------------------------

class _ImprovLink:
    def __init__(self, client: BleakClient) -> None:
        self.client = client
        self.states: asyncio.Queue[int] = asyncio.Queue(maxsize=64)
        self.errors: asyncio.Queue[int] = asyncio.Queue(maxsize=64)
        self.results: asyncio.Queue[bytes] = asyncio.Queue(maxsize=16)
        self._result = bytearray()

    async def open(self) -> None:
        await self.client.start_notify(improv.STATE_UUID,
                                       lambda _c, d: self._put(self.states, d[0]))
        await self.client.start_notify(improv.ERROR_UUID,
                                       lambda _c, d: self._put(self.errors, d[0]))
        await self.client.start_notify(improv.RPC_RESULT_UUID, self._on_result)

    @staticmethod
    def _put(queue: asyncio.Queue[Any], item: Any) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait(item)

    def _on_result(self, _char: Any, data: bytearray) -> None:
        frame = _gather(self._result, bytes(data))
        if frame is not None:
            self._put(self.results, frame)

    async def send(self, command: improv.Command, strings: list[str]) -> None:
        frame = improv.encode_frame(command, improv.encode_strings(
            [s.encode("utf-8") for s in strings]))
        # Pieces at offset 0, as ESPHome-style devices expect frames longer than a packet.
        for piece in ble_secure.chunks(frame, _write_size(self.client)):
            await self.client.write_gatt_char(improv.RPC_COMMAND_UUID, piece, response=True)


async def pair_improv(*, adapter: str, ssid: str, psk: str, device_id: str | None = None,
                      name: str | None = None, scan_timeout: float = 10.0,
                      authorization_timeout: float = 120.0, timeout: float = 120.0,
                      events: EventSink = _ignore) -> dict[str, Any]:
    """Give the hub Wi-Fi with Improv; waits for the button if authorization is required."""
    hub = await _pick(adapter, device_id, name, scan_timeout, True, events)
    async with connect(hub, adapter) as client:
        link = _ImprovLink(client)
        await link.open()
        state = (await client.read_gatt_char(improv.STATE_UUID))[0]
        if state == improv.State.PROVISIONED:
            raise BlePairError("the hub is already provisioned", "provisioned")
        if state == improv.State.AUTHORIZATION_REQUIRED:
            events("authorize", {"message": "press the button on the hub"})
            async with asyncio.timeout(authorization_timeout):
                while state != improv.State.AUTHORIZED:
                    state = await link.states.get()
        await link.send(improv.Command.WIFI_SETTINGS, [ssid, psk])
        async with asyncio.timeout(timeout):
            url = await _provisioned(link, events)
    return {"ok": True, "hub": {"name": hub.name, "address": hub.address},
            "redirect_url": url}


async def _provisioned(link: _ImprovLink, events: EventSink) -> str | None:
    """Wait for the Wi-Fi settings result; raises on an Improv error."""
    while True:
        getters = {asyncio.ensure_future(q.get()): kind for kind, q in
                   (("state", link.states), ("error", link.errors), ("result", link.results))}
        done, pending = await asyncio.wait(getters, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in done:
            kind, value = getters[task], task.result()
            if kind == "error" and value != improv.Error.NONE:
                assert isinstance(value, int)
                name = _enum_name(improv.Error, value)
                raise BlePairError(f"the hub answered Improv error {name}", name)
            if kind == "state":
                assert isinstance(value, int)
                events("improv-state", {"state": _enum_name(improv.State, value)})
            if kind == "result":
                assert isinstance(value, bytes)
                command, data = improv.decode_frame(value)
                if command == improv.Command.WIFI_SETTINGS:
                    strings = improv.decode_strings(data)
                    return strings[0].decode("utf-8") if strings else None


def _gather(held: bytearray, piece: bytes) -> bytes | None:
    """The result frame that ``piece`` completes, gathering pieces in ``held``.

    A result longer than one notification comes in pieces, cut by its length byte, and the
    hub never puts two frames in one notification. ``held`` may also start with bytes that
    lead nowhere: the first part of a result sent whole to a phone with a larger MTU, which
    bluetoothd cut to ours. So a piece that is a whole frame is one, and once the gathered
    bytes run past the frame they announce, the frame is the one that ends with this piece.
    """
    if _whole_frame(piece):
        held.clear()
        return piece
    held += piece
    del held[:-2 * improv.MAX_FRAME]
    # Every start, not only the first: the stale bytes' length byte may announce more than
    # the frame that follows them (a few hundred bytes at most, a cheap scan).
    for start in range(len(held) - 2):
        if _whole_frame(held[start:]):
            frame = bytes(held[start:])
            held.clear()
            return frame
    return None


def _whole_frame(data: bytes | bytearray) -> bool:
    return (len(data) >= 3 and len(data) == data[1] + 3
            and improv.checksum(bytes(data[:-1])) == data[-1])


def _enum_name(kind: type[improv.Error] | type[improv.State], value: int) -> str:
    try:
        return kind(value).name.lower().replace("_", "-")
    except ValueError:
        return f"0x{value:02x}"
