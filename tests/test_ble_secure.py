"""The secure gatewayd BLE service (issue 8): the documented worked example, wrong codes and
lockout, replay and tampering, robustness, and pairing over BlueZoo at MTU 23 with the
reference client and ``gatewayctl ble-pair``."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatewayd.ble import secure_protocol, secure_service
from gatewayd.ble.gatt import GattRequest
from gatewayd.ble.hosts import HubView, SecureHubHost
from gatewayd.ble.secure_messages import networks_reply
from gatewayd.ble.secure_protocol import (
    Channel,
    ErrorCode,
    Frame,
    FrameReader,
    MsgType,
    PhoneHandshake,
    SessionKeys,
)
from gatewayd.ble.secure_service import MAX_PHONES, SecureService
from gatewayd.onboarding.machine import Onboarding
from gatewayd.onboarding.pairing import InvalidRequest, PairingService
from gatewayd.onboarding.table import State as HubState
from gatewayd.simulator.nm_mock import NetworkManagerMock
from gatewayd.state import StateStore
from tests.fakes import FakeClock, FakeWifi, StubCloud
from tests.test_ble_commission import (
    HUB_NAME,
    IDENTITY,
    PHONE,
    STEP,
    HubThread,
    World,
    hub_config,
    nm,
    run,
    running_hub,
    scan_for,
    world_fixture,
)

DOC = (Path(__file__).resolve().parent.parent / "docs" / "ble-protocol.md").read_text()
CODE = "12345678"
DEVICE_ID = "dc-a6-32-12-34-56"
PHONE_A = "/org/bluez/hci0/dev_00_AA_01_00_00_02"
PHONE_B = "/org/bluez/hci0/dev_00_AA_01_00_00_03"
FIELDS = {"ssid": "HomeNet", "psk": "supersecret", "wsp": "user@example.com",
          "token": "user-token", "host": "127.0.0.1", "brport": "1883"}
world = world_fixture(23)  # every BLE test here runs at the ATT minimum MTU
__all__ = ["nm", "world"]


def doc_vector(name: str) -> str:
    match = re.search(rf"^{re.escape(name)}\s+([0-9a-f]+)$", DOC, re.MULTILINE)
    assert match, f"{name} missing from docs/ble-protocol.md"
    return match.group(1)


# --- an in-memory hub -----------------------------------------------------------------------

class FakeTx:
    """Collects the hub's notifications as a phone subscribed to TX would."""

    def __init__(self) -> None:
        self.reader = FrameReader()
        self.frames: list[Frame] = []
        self.sizes: list[int] = []
        self._arrived: asyncio.Condition | None = None

    async def notify(self, value: bytes) -> bool:
        self.sizes.append(len(value))
        self.frames += self.reader.feed(value)
        async with self.arrived:
            self.arrived.notify_all()
        return True

    @property
    def arrived(self) -> asyncio.Condition:
        if self._arrived is None:
            self._arrived = asyncio.Condition()
        return self._arrived

    async def frame(self, index: int) -> Frame:
        """The ``index``-th frame notified, once it is there (bounded wait)."""
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: len(self.frames) > index),
                                   10)
        return self.frames[index]


class FakeHost:
    def __init__(self) -> None:
        self.paired: list[dict[str, Any]] = []

    def secure_summary(self) -> dict[str, Any]:
        return {"device_id": DEVICE_ID, "product": "Acme Hub", "name": HUB_NAME,
                "pairing_open": True}

    def secure_device_info(self) -> dict[str, Any]:
        return {**self.secure_summary(), "wifi": True, "presets": []}

    def setup_code(self) -> str:
        return CODE

    async def secure_pair(self, extract: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
        fields = dict(extract())  # what the pairing front door does once pairing is open
        if not fields.get("wsp"):
            raise InvalidRequest("wsp: is required: the account e-mail", "wsp")
        self.paired.append(fields)
        return {"state": "connecting"}

    def secure_progress(self) -> dict[str, Any]:
        return {"state": "connecting", "step": "wifi"}

    def secure_networks(self) -> list[dict[str, Any]]:
        return [{"ssid": "HomeNet", "signal": 82, "security": "wpa2"}]


class Hub:
    def __init__(self, max_failures: int = 3, **kwargs: Any) -> None:
        self.host = FakeHost()
        self.service = SecureService(self.host, device_id=DEVICE_ID, max_failures=max_failures,
                                     **kwargs)
        self.service.gatt_service()
        self.tx = self.service._tx = FakeTx()  # type: ignore[assignment]

    async def write(self, data: bytes, device: str = PHONE_A, mtu: int = 23) -> None:
        for start in range(0, len(data), mtu - 3):
            await self.service.rx_write(data[start:start + mtu - 3],
                                        GattRequest(device=device, mtu=mtu))

    async def send(self, frame: Frame, device: str = PHONE_A) -> Frame:
        """Write a frame, return the hub's answer."""
        before = len(self.tx.frames)
        await self.write(frame.encode(), device)
        assert len(self.tx.frames) == before + 1, "expected exactly one answer"
        return self.tx.frames[-1]

    async def session(self, code: str = CODE, device: str = PHONE_A
                      ) -> tuple[Channel, dict[str, Any]]:
        phone = PhoneHandshake(code, DEVICE_ID)
        confirm, channel = phone.finish(await self.send(phone.start(), device))
        info = secure_protocol.decode_message(channel.open(await self.send(confirm, device)))
        return channel, info


def error_of(frame: Frame) -> tuple[int, int, str]:
    assert frame.type == MsgType.ERROR, frame
    return secure_protocol.parse_error(frame)


# --- the worked example ---------------------------------------------------------------------

def test_worked_example_matches_the_document_byte_for_byte() -> None:
    sid = bytes.fromhex("0a0b0c0d")
    phone = PhoneHandshake(CODE, DEVICE_ID, sid=sid, entropy=lambda n: b"\x11" * n)
    hub = Hub(entropy=lambda n: b"\x22" * n)

    async def scenario() -> None:
        start = phone.start()
        assert start.encode().hex() == doc_vector("PAKE_START")
        assert phone.msg_a.hex() == doc_vector("message A")
        reply = await hub.send(start)
        assert reply.encode().hex() == doc_vector("PAKE_REPLY")
        confirm, channel = phone.finish(reply)
        assert confirm.encode().hex() == doc_vector("PAKE_CONFIRM")
        keys = phone.keys
        assert keys is not None
        assert keys.confirm_phone.hex() == doc_vector("k_confirm_phone")
        assert keys.confirm_hub.hex() == doc_vector("k_confirm_hub")
        assert keys.phone_to_hub.hex() == doc_vector("k_phone_to_hub")
        assert keys.hub_to_phone.hex() == doc_vector("k_hub_to_phone")
        assert keys.verification_code == doc_vector("verification")

        info = secure_protocol.decode_message(channel.open(await hub.send(confirm)))
        assert info["type"] == "device-info" and info["verification_code"] == "256123"
        assert hub.service.status()["session"] == {"established": True,
                                                   "verification_code": "256123"}
        pair = {"type": "pair", "id": 1, "fields": {"ssid": "HomeNet", "psk": "supersecret"}}
        data = channel.seal(secure_protocol.encode_message(pair))
        assert data.encode().hex() in DOC

    run(scenario())

    # The SPAKE2 key, recomputed independently of the classes above.
    from spake2 import SPAKE2_B

    b = SPAKE2_B(b"12345678", idA=b"gatewayd-ble-v1 phone",
                 idB=b"gatewayd-ble-v1 hub dc-a6-32-12-34-56", entropy_f=lambda n: b"\x22" * n)
    assert b.start().hex() == doc_vector("message B")
    key = b.finish(bytes.fromhex(doc_vector("message A")))
    assert key.hex() == doc_vector("SPAKE2 key")
    keys = SessionKeys.derive(key, bytes.fromhex(doc_vector("message A")),
                              bytes.fromhex(doc_vector("message B")))
    assert keys.verification_code == "256123"


# --- sessions, failures, lockout ------------------------------------------------------------

def test_session_carries_requests_and_pushes_with_chunked_notifications() -> None:
    async def scenario() -> None:
        hub = Hub()
        channel, info = await hub.session()
        assert info["device_id"] == DEVICE_ID and len(info["verification_code"]) == 6
        assert max(hub.tx.sizes) <= 20  # MTU 23

        async def ask(message: dict[str, Any]) -> dict[str, Any]:
            reply = await hub.send(channel.seal(secure_protocol.encode_message(message)))
            return secure_protocol.decode_message(channel.open(reply))

        reply = await ask({"type": "pair", "id": 7, "fields": FIELDS})
        assert reply == {"type": "pair", "id": 7, "ok": True, "progress": {"state": "connecting"}}
        assert hub.host.paired == [FIELDS]
        reply = await ask({"type": "pair", "id": 8, "fields": {"ssid": "x", "psk": "y"}})
        assert reply["ok"] is False and reply["status"] == 400 and reply["field"] == "wsp"
        reply = await ask({"type": "pair", "id": 9, "fields": {"bogus": "1"}})
        assert reply["ok"] is False and reply["field"] == "bogus"
        assert (await ask({"type": "progress", "id": 10}))["step"] == "wifi"
        assert (await ask({"type": "networks", "id": 11}))["networks"][0]["ssid"] == "HomeNet"
        assert (await ask({"type": "nonsense", "id": 12}))["code"] == "unknown-request"

        assert await hub.service.push({"type": "progress", "state": "online"})
        pushed = secure_protocol.decode_message(channel.open(hub.tx.frames[-1]))
        assert pushed == {"type": "progress", "state": "online"}
        assert hub.service.failures == 0

    run(scenario())


def test_a_handshake_forgiven_midway_is_not_taken_back_twice() -> None:
    """The in-memory twin of the BlueZoo test below: a press between PAKE_START and a
    correct PAKE_CONFIRM leaves every attempt, never one more than max_failures."""
    async def scenario() -> None:
        hub = Hub(max_failures=3)
        hub.service.reset()  # a window opened before anyone paired: nothing to end
        phone = PhoneHandshake(CODE, DEVICE_ID)
        confirm, channel = phone.finish(await hub.send(phone.start()))
        assert hub.service.attempts_left == 2
        hub.service.forgive()  # the button
        info = secure_protocol.decode_message(channel.open(await hub.send(confirm)))
        assert info["type"] == "device-info" and hub.service.attempts_left == 3

    run(scenario())


def test_wrong_codes_are_counted_and_lock_the_service_until_reset() -> None:
    async def scenario() -> None:
        hub = Hub(max_failures=3)
        # 1: the phone finds out from the hub's confirmation and sends its (wrong) one.
        phone = PhoneHandshake("87654321", DEVICE_ID)
        reply = await hub.send(phone.start())
        with pytest.raises(secure_protocol.ProtocolError) as caught:
            phone.finish(reply)
        assert caught.value.code == ErrorCode.WRONG_CODE
        keys = SessionKeys.derive(b"\x00" * 32, phone.msg_a, reply.body[:33])
        wrong = Frame(MsgType.PAKE_CONFIRM, phone.sid,
                      keys.confirmation("phone", phone.msg_a, reply.body[:33]))
        code, left, text = error_of(await hub.send(wrong))
        assert (code, left) == (ErrorCode.WRONG_CODE, 2) and "wrong setup code" in text
        # 2: a phone that just leaves after the hub's confirmation still used an attempt.
        await hub.send(PhoneHandshake("11111111", DEVICE_ID).start())
        hub.service.forget(PHONE_A)
        assert hub.service.attempts_left == 1
        # 3: the right code still works and costs nothing ...
        await hub.session()
        assert hub.service.attempts_left == 1
        # ... but one more wrong one locks.
        await hub.send(PhoneHandshake("22222222", DEVICE_ID).start())
        hub.service.forget(PHONE_A)
        assert hub.service.locked
        code, left, _ = error_of(await hub.send(PhoneHandshake(CODE, DEVICE_ID).start()))
        assert (code, left) == (ErrorCode.LOCKED, 0)
        assert json.loads(await hub.service._read_info(GattRequest(PHONE_A, 23)))["locked"]

        hub.service.reset()  # the button re-opened the window
        await hub.session()

    run(scenario())


def test_a_phone_gone_while_the_first_handshake_imports_leaves_no_session(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The first PAKE_START waits for cryptography's import in a thread; a phone that
    disconnects meanwhile gets no session, costs no attempt and holds nobody up."""
    started, release = threading.Event(), threading.Event()

    def slow_import() -> None:  # the import, held until the phone has gone
        started.set()
        release.wait(30)

    monkeypatch.setattr(secure_service, "load_crypto", slow_import)

    async def scenario() -> None:
        hub = Hub()
        write = asyncio.create_task(hub.write(PhoneHandshake(CODE, DEVICE_ID).start().encode()))
        assert await asyncio.to_thread(started.wait, 30)
        hub.service.forget(PHONE_A)  # BlueZ: the phone disconnected
        release.set()
        await write
        assert hub.tx.frames == [] and hub.service.status()["session"] is None
        assert hub.service.failures == 0
        _, info = await hub.session(device=PHONE_B)  # not BUSY
        assert info["type"] == "device-info"

    run(scenario())


def test_the_crypto_is_imported_once_and_a_failed_import_refuses_only_that_handshake(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def flaky_import() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ImportError("simulated: no cryptography")
        secure_protocol.load_crypto()

    monkeypatch.setattr(secure_service, "load_crypto", flaky_import)

    async def scenario() -> None:
        hub = Hub()
        code, _, text = error_of(await hub.send(PhoneHandshake(CODE, DEVICE_ID).start()))
        assert code == ErrorCode.UNEXPECTED and "cryptography" not in text  # no raw text
        assert hub.service.failures == 0 and hub.service.status()["session"] is None
        await hub.session()
        hub.service.forget(PHONE_A)
        await hub.session()
        assert len(calls) == 2  # the failed import and the one that worked; none after

    run(scenario())


def test_replay_tampering_and_strangers_end_the_session() -> None:
    async def scenario() -> None:
        hub = Hub()
        channel, _info = await hub.session()
        request = channel.seal(secure_protocol.encode_message({"type": "progress", "id": 1}))
        channel.open(await hub.send(request))
        code, _, _ = error_of(await hub.send(request))  # the same frame again
        assert code == ErrorCode.DECRYPT
        assert hub.service.status()["session"] is None

        channel, _info = await hub.session()
        sealed = channel.seal(b'{"type":"progress"}')
        tampered = Frame(sealed.type, sealed.sid, sealed.body[:-1] + bytes([sealed.body[-1] ^ 1]))
        assert error_of(await hub.send(tampered))[0] == ErrorCode.DECRYPT

        channel, _info = await hub.session()
        # A second phone may not barge in while the first has a session ...
        code, _, _ = error_of(await hub.send(PhoneHandshake(CODE, DEVICE_ID).start(), PHONE_B))
        assert code == ErrorCode.BUSY
        # ... nor talk to it; the first phone's session survives both.
        stranger = Frame(MsgType.DATA, channel.sid, bytes(30))
        assert error_of(await hub.send(stranger, PHONE_B))[0] == ErrorCode.UNEXPECTED
        reply = await hub.send(channel.seal(b'{"type":"progress","id":2}'))
        assert secure_protocol.decode_message(channel.open(reply))["id"] == 2
        # Once it disconnects, the second phone is welcome.
        hub.service.forget(PHONE_A)
        await hub.session(device=PHONE_B)

        version = PhoneHandshake(CODE, DEVICE_ID).start()
        bad = Frame(version.type, version.sid, b"\x02" + version.body[1:])
        assert error_of(await hub.send(bad, PHONE_B))[0] == ErrorCode.VERSION
        not_a_point = Frame(MsgType.PAKE_START, version.sid, b"\x01A" + bytes(32))
        assert error_of(await hub.send(not_a_point, PHONE_B))[0] == ErrorCode.MALFORMED
        assert hub.service.failures == 0  # malformed handshakes are not guesses

    run(scenario())


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=80), st.sampled_from([PHONE_A, PHONE_B])),
                max_size=10))
def test_write_path_never_crashes_and_recovers(writes: list[tuple[bytes, str]]) -> None:
    async def scenario() -> None:
        hub = Hub(max_failures=100)
        for value, device in writes:
            await hub.service.rx_write(value, GattRequest(device=device, mtu=23))
            for frame in hub.tx.frames:
                assert frame.type in (MsgType.ERROR, MsgType.PAKE_REPLY)
        # Whatever came before: a phone that reconnects gets a working session.
        for device in (PHONE_A, PHONE_B):
            hub.service.forget(device)
        await hub.session()

    asyncio.run(scenario())


@given(st.binary(max_size=200))
def test_frame_reader_is_bounded(data: bytes) -> None:
    reader = FrameReader()
    try:
        for frame in reader.feed(data):
            assert len(frame.sid) == 4
    except secure_protocol.ProtocolError as exc:
        assert exc.code == ErrorCode.MALFORMED
    assert len(reader._buffer) < 2 + secure_protocol.MAX_FRAME_LEN


def test_setup_code_forms() -> None:
    assert secure_protocol.setup_code_password("1234-5678") == b"12345678"
    assert secure_protocol.setup_code_password(" 1234 5678 ") == b"12345678"
    for bad in ("1234567", "123456789", "abcdefgh", ""):
        with pytest.raises(ValueError):
            secure_protocol.setup_code_password(bad)


# --- over BlueZoo, MTU 23 -------------------------------------------------------------------

@pytest.mark.slow
def test_reference_client_pairs_cloud_only_with_the_right_code_and_locks_on_wrong_ones(
        world: World, nm: NetworkManagerMock, tmp_path: Path) -> None:
    from gatewayd.ble import phone as ble_client

    cfg = hub_config(tmp_path, ble={"max_failures": 2})

    async def scenario() -> None:
        async with running_hub(cfg) as hub:
            ble = hub.commissioner
            for left in (1, 0):
                with pytest.raises(ble_client.BlePairError) as caught:
                    await ble_client.pair_secure(adapter=PHONE, name=HUB_NAME,
                                                 setup_code="00000000", fields=FIELDS)
                assert caught.value.code == "wrong-setup-code"
                # Counted when the hub answered the handshake, before the phone found out.
                assert ble.secure.attempts_left == left
            with pytest.raises(ble_client.BlePairError) as caught:
                await ble_client.pair_secure(adapter=PHONE, name=HUB_NAME,
                                             setup_code=hub.store.state.setup_code,
                                             fields=FIELDS)
            assert caught.value.code == "locked" and "button" in caught.value.message
            assert ble.status()["secure"]["locked"]

            await ble.authorize()  # the button: a new window, failures forgiven
            codes: list[str] = []
            nm.set_ethernet_carrier(True)  # "No Wi-Fi" pairing needs a network: the cable
            cloud_only = {k: v for k, v in FIELDS.items() if k not in ("ssid", "psk")}
            outcome = await ble_client.pair_secure(
                adapter=PHONE, device_id=IDENTITY.device_id,
                setup_code=hub.store.state.setup_code, fields=cloud_only,
                events=lambda kind, data: codes.append(data.get("verification_code", ""))
                if kind == "session" else None)
            assert outcome["ok"] and outcome["progress"]["state"] == "online"
            assert outcome["device"]["verification_code"] == codes[0]
            assert hub.onboarding.state == HubState.ONLINE
            assert hub.cloud.connected is not None
            assert (hub.cloud.connected.wsp, hub.cloud.connected.token) == (
                "user@example.com", "user-token")
            assert hub.store.state.paired and hub.store.state.wifi is None  # "No Wi-Fi" pairing
            await ble.wait_for(lambda: not ble.window_open, STEP)

    run(scenario())


@pytest.mark.slow
def test_a_button_press_forgives_wrong_codes_and_keeps_the_session_under_way(
        world: World, nm: NetworkManagerMock, tmp_path: Path) -> None:
    """A press while the window is open extends it and forgives wrong setup codes (§1); it
    does not end the session of a phone that is pairing (§7 lists when one ends), which
    would hear nothing more. A factory reset does end it."""
    from bleak import BleakClient

    from gatewayd.ble import phone as ble_client

    async def scenario() -> None:
        async with running_hub(hub_config(tmp_path)) as hub:
            ble = hub.commissioner
            with pytest.raises(ble_client.BlePairError):
                await ble_client.pair_secure(adapter=PHONE, name=HUB_NAME,
                                             setup_code="00000000", fields=FIELDS)
            assert ble.secure.attempts_left == 4
            seen = await scan_for(HUB_NAME, STEP)
            assert seen is not None
            async with BleakClient(seen[0], bluez={"adapter": PHONE}) as client:
                session = await ble_client.SecureSession.establish(
                    client, hub.store.state.setup_code, IDENTITY.device_id)
                await ble.authorize()  # the button
                assert ble.secure.attempts_left == 5
                reply = await session.request({"type": "progress"})
                assert reply["type"] == "progress" and reply["state"] == "unpaired"

                # A factory reset as Hub.reset runs it: the state, then its hooks in order.
                hub.store.reset()
                await hub.onboarding.reset(False)
                await ble.on_hub_reset(False)
                with pytest.raises(ble_client.BlePairError) as ended:
                    for _ in range(5):  # progress pushed on the reset, then the end
                        await session.next_message()  # told, without asking
                assert ended.value.details["hub_code"] == ErrorCode.UNEXPECTED
                assert str(ended.value) == "the hub refused: the hub was reset"

            # A window that closes mid-session tells the phone why before it goes.
            async with BleakClient(seen[0], bluez={"adapter": PHONE}) as client:
                session = await ble_client.SecureSession.establish(
                    client, hub.store.state.setup_code, IDENTITY.device_id)
                await ble.close_window()
                with pytest.raises(ble_client.BlePairError) as ended:
                    for _ in range(5):  # progress pushed on the close, then the end
                        await session.next_message()
                assert "the pairing window closed" in str(ended.value)
                assert ble.status()["secure"]["session"] is None

    run(scenario())


@pytest.mark.slow
def test_a_press_during_a_handshake_forgives_it_once_not_twice(
        world: World, nm: NetworkManagerMock, tmp_path: Path) -> None:
    """A press between a phone's PAKE_START and its correct PAKE_CONFIRM forgives that
    handshake with the other failures (§7): its confirmation takes nothing back a second
    time, so a phone never sees more attempts left than ``[ble] max_failures``."""
    from bleak import BleakClient

    from gatewayd.ble import phone as ble_client

    async def scenario() -> None:
        async with running_hub(hub_config(tmp_path, ble={"max_failures": 5})) as hub:
            ble = hub.commissioner
            seen = await scan_for(HUB_NAME, STEP)
            assert seen is not None
            async with BleakClient(seen[0], bluez={"adapter": PHONE}) as client:
                link = ble_client.SecureLink(client)
                await link.open()
                phone = PhoneHandshake(hub.store.state.setup_code, IDENTITY.device_id)
                link.sid = phone.sid
                await link.send(phone.start())
                confirm, channel = phone.finish(await link.receive())
                assert (await ble_client.read_info(client))["attempts_left"] == 4
                await ble.authorize()  # the button, mid-handshake
                assert (await ble_client.read_info(client))["attempts_left"] == 5
                await link.send(confirm)
                info = secure_protocol.decode_message(channel.open(await link.receive()))
                assert info["type"] == "device-info"
                assert (await ble_client.read_info(client))["attempts_left"] == 5
                assert ble.status()["secure"]["failures"] == 0

    run(scenario())


@pytest.mark.slow
def test_gatewayctl_ble_pair_pairs_the_hub(world: World, nm: NetworkManagerMock, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from gatewayd.ctl.ble import add_ble_commands

    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--sim")
    add_ble_commands(parser.add_subparsers(dest="command"))

    class NoDaemon:
        def request(self, *_args: Any) -> Any:
            raise AssertionError("--setup-code was given: no control socket needed")

    with HubThread(hub_config(tmp_path)) as hub:
        code = hub.store.state.setup_code
        wrong = "00000000" if code != "00000000" else "11111111"
        base = ["--json", "ble-pair", "--name", HUB_NAME, "--adapter", PHONE, "--ssid",
                "HomeNet", "--wsp", "user@example.com", "--token", "user-token"]
        args = parser.parse_args([*base, "--setup-code", wrong])
        assert args.func(args, NoDaemon()) == 1
        failed = json.loads(capsys.readouterr().out)
        assert failed["ok"] is False and failed["error"]["code"] == "wrong-setup-code"

        # No --psk: from the environment, so it stays out of `ps`.
        monkeypatch.setenv("GATEWAYD_BLE_PSK", "supersecret")
        args = parser.parse_args([*base, "--setup-code", code])
        assert args.func(args, NoDaemon()) == 0
        paired = json.loads(capsys.readouterr().out)
        assert paired["ok"] and paired["progress"]["state"] == "online"
        assert paired["device"]["device_id"] == IDENTITY.device_id
        assert [e["event"] for e in paired["events"]][:3] == ["found", "session", "accepted"]
        text = json.dumps(paired)
        assert "supersecret" not in text and "user-token" not in text and code not in text
        assert hub.onboarding.state == HubState.ONLINE


# --- the front door and session lifetimes ----------------------------------------------------

def real_hub(tmp_path: Path, cloud: StubCloud, **kwargs: Any) -> tuple[Hub, Onboarding]:
    """The secure service over the hub's own host, pairing service and onboarding machine
    (on a FakeWifi): what a phone reaches, without BlueZ."""
    cfg = hub_config(tmp_path, cloud={"wsp": "", "token": "", "host": ""},
                     hotspot={"offline_grace": 3600.0, "retry_interval": 3600.0})
    store = StateStore(cfg.state_dir)
    store.open(device_id=IDENTITY.device_id, mac=IDENTITY.mac)
    onboarding = Onboarding(cfg, store, FakeWifi({"HomeNet": "supersecret"}), cloud)
    pairing = PairingService(onboarding, cfg.cloud)
    host = SecureHubHost(HubView(cfg, IDENTITY, store, onboarding, pairing, HUB_NAME))
    hub = Hub(**kwargs)
    hub.host = host  # type: ignore[assignment]
    hub.service.host = host
    return hub, onboarding


def test_a_second_pair_request_during_an_attempt_is_busy_not_already_paired(
        tmp_path: Path) -> None:
    """409 "busy" while an attempt runs (the phone waits for the result), never 403 "not in
    pairing mode": the hub is not paired, it is pairing."""
    cloud = StubCloud()
    cloud.gate = asyncio.Event()  # the attempt stays in its cloud step

    async def scenario() -> None:
        hub, onboarding = real_hub(tmp_path, cloud)
        await onboarding.start()
        try:
            channel, _ = await hub.session(code=onboarding.store.state.setup_code)

            async def ask(message: dict[str, Any]) -> dict[str, Any]:
                reply = await hub.send(channel.seal(secure_protocol.encode_message(message)))
                return secure_protocol.decode_message(channel.open(reply))

            first = await ask({"type": "pair", "id": 1, "fields": FIELDS})
            assert first["ok"] and first["progress"]["state"] == "connecting"
            second = await ask({"type": "pair", "id": 2, "fields": FIELDS})
            assert (second["ok"], second["status"], second["code"]) == (False, 409, "busy")
            cloud.gate.set()
            await onboarding.wait_for(lambda: onboarding.state == HubState.ONLINE
                                      and not onboarding.busy, STEP)
            third = await ask({"type": "pair", "id": 3, "fields": FIELDS})
            assert (third["status"], third["code"]) == (403, "not-in-pairing-mode")
        finally:
            cloud.gate.set()
            await onboarding.stop()

    run(scenario())


def test_a_handshake_expires_after_30_seconds() -> None:
    clock = FakeClock()

    async def scenario() -> None:
        hub = Hub(clock=clock)
        phone = PhoneHandshake(CODE, DEVICE_ID)
        confirm, _ = phone.finish(await hub.send(phone.start()))
        clock.advance(30.0)  # exactly the limit: still in time
        phone_b = PhoneHandshake(CODE, DEVICE_ID)
        assert error_of(await hub.send(phone_b.start(), PHONE_B))[0] == ErrorCode.BUSY
        clock.advance(0.1)  # past it: the half-open session is gone, and the phone told so
        assert hub.service.status()["session"] is None
        assert error_of(await hub.send(confirm))[::2] == (ErrorCode.UNEXPECTED,
                                                          "the handshake timed out (30 s)")

        # A phone that completes in time gets its session.
        phone = PhoneHandshake(CODE, DEVICE_ID)
        confirm, _ = phone.finish(await hub.send(phone.start()))
        clock.advance(29.9)
        assert (await hub.send(confirm)).type == MsgType.DATA

        # Another phone's frame meeting an expired handshake is answered as its own.
        phone = PhoneHandshake(CODE, DEVICE_ID)
        phone.finish(await hub.send(phone.start()))
        clock.advance(30.1)
        stray = Frame(MsgType.PAKE_CONFIRM, b"\x01\x02\x03\x04", bytes(32))
        assert error_of(await hub.send(stray, PHONE_B))[2] == (
            "no handshake in progress for this session; start with PAKE_START")

    run(scenario())


def test_a_session_that_expires_tells_its_phone_without_waiting_for_a_frame() -> None:
    """The session's timer ends it at its deadline and notifies the phone (ERROR 0x02 with
    the reason), handshake or idle; a phone that asks later is not left guessing."""
    clock = FakeClock()

    async def scenario() -> None:
        hub = Hub(clock=clock, sleep=clock.sleep)
        phone = PhoneHandshake(CODE, DEVICE_ID)
        phone.finish(await hub.send(phone.start()))
        await clock.sleeps(1)  # the session's timer waits
        count = len(hub.tx.frames)
        clock.advance(30.2)
        error = await hub.tx.frame(count)
        assert error.sid == phone.sid
        assert error_of(error) == (ErrorCode.UNEXPECTED, 2, "the handshake timed out (30 s)")
        assert hub.service.status()["session"] is None

        channel, _ = await hub.session()
        await clock.sleeps(2)
        count = len(hub.tx.frames)
        clock.advance(300.2)  # idle too long: the timer wakes and ends it
        error = await hub.tx.frame(count)
        assert error.sid == channel.sid
        assert error_of(error)[::2] == (ErrorCode.UNEXPECTED,
                                        "the session was idle for over 300 s")

    run(scenario())


def test_an_idle_session_expires_after_300_seconds_and_each_request_renews_it() -> None:
    clock = FakeClock()

    async def scenario() -> None:
        hub = Hub(clock=clock)
        channel, _ = await hub.session()

        async def progress(rid: int) -> Frame:
            return await hub.send(channel.seal(secure_protocol.encode_message(
                {"type": "progress", "id": rid})))

        clock.advance(300.0)  # idle exactly the limit: still open
        assert secure_protocol.decode_message(channel.open(await progress(1)))["id"] == 1
        clock.advance(200.0)  # 200 s since the last request, 500 s since the handshake
        assert secure_protocol.decode_message(channel.open(await progress(2)))["id"] == 2
        # Another phone is turned away while the session lives ...
        assert error_of(await hub.send(PhoneHandshake(CODE, DEVICE_ID).start(),
                                       PHONE_B))[0] == ErrorCode.BUSY
        clock.advance(300.1)  # ... and welcome once it has been idle too long
        assert (await hub.send(PhoneHandshake(CODE, DEVICE_ID).start(),
                               PHONE_B)).type == MsgType.PAKE_REPLY
        assert error_of(await progress(3))[0] == ErrorCode.UNEXPECTED  # the old one is gone

    run(scenario())


# --- what each answer says, exactly -----------------------------------------------------------

def test_every_request_gets_its_exact_answer() -> None:
    async def scenario() -> None:
        hub = Hub()
        channel, info = await hub.session()
        code = info["verification_code"]
        assert info == {"type": "device-info", **hub.host.secure_device_info(),
                        "verification_code": code}

        async def ask(message: Any) -> dict[str, Any]:
            reply = await hub.send(channel.seal(secure_protocol.encode_message(message)))
            return secure_protocol.decode_message(channel.open(reply))

        assert await ask({"type": "progress", "id": 1}) == {
            "type": "progress", "id": 1, "state": "connecting", "step": "wifi"}
        assert await ask({"type": "networks", "id": "n"}) == {
            "type": "networks", "id": "n", "networks": hub.host.secure_networks(),
            "truncated": False}
        assert await ask({"type": "device-info", "id": 3}) == {
            "type": "device-info", "id": 3, **hub.host.secure_device_info(),
            "verification_code": code}
        long_kind = "x" * 50
        assert await ask({"type": long_kind, "id": 4}) == {
            "type": "x" * 40, "id": 4, "ok": False, "status": 400, "code": "unknown-request",
            "message": f"unknown request type {'x' * 40!r}", "field": None}
        assert await ask({"type": "pair", "id": 5, "fields": {"ssid": "x", "psk": "y"}}) == {
            "type": "pair", "id": 5, "ok": False, "status": 400, "code": "invalid",
            "message": "wsp: is required: the account e-mail", "field": "wsp"}
        for fields, message, field in (
                ("HomeNet", "fields: must be an object", None),
                ({"ssid": "HomeNet", "zz": "1", "aa": "2"}, "aa: unknown field", "aa"),
                ({"ssid": "HomeNet", "psk": ["x"], "wsp": {}},
                 "psk: must be a string, number or boolean", "psk")):
            reply = await ask({"type": "pair", "id": 6, "fields": fields})
            assert (reply["message"], reply["field"], reply["status"]) == (message, field, 400)
        assert hub.host.paired == []

    run(scenario())


def test_status_and_info_show_the_lock_and_never_a_secret() -> None:
    async def scenario() -> None:
        hub = Hub(max_failures=2)
        assert hub.service.status() == {"failures": 0, "max_failures": 2, "locked": False,
                                        "session": None}
        info = json.loads(await hub.service._read_info(GattRequest(PHONE_A, 185)))
        assert info == {"protocol": 1, **hub.host.secure_summary(), "locked": False,
                        "attempts_left": 2}
        await hub.send(PhoneHandshake("11111111", DEVICE_ID).start())  # a guess, not confirmed
        assert hub.service.status() == {"failures": 1, "max_failures": 2, "locked": False,
                                        "session": {"established": False,
                                                    "verification_code": None}}
        hub.service.forget(PHONE_A)
        await hub.send(PhoneHandshake("22222222", DEVICE_ID).start())
        hub.service.forget(PHONE_A)
        info = json.loads(await hub.service._read_info(GattRequest(PHONE_A, 23)))
        assert (info["locked"], info["attempts_left"]) == (True, 0)
        assert hub.service.status()["locked"] and hub.service.attempts_left == 0
        hub.service.reset()
        assert hub.service.status() == {"failures": 0, "max_failures": 2, "locked": False,
                                        "session": None}

    run(scenario())


def test_notifications_fit_the_mtu_each_phone_reported() -> None:
    async def scenario() -> None:
        hub = Hub()
        await hub.service._read_info(GattRequest(PHONE_A, 100))
        await hub.service.rx_write(PhoneHandshake(CODE, DEVICE_ID).start().encode(),
                                   GattRequest(PHONE_A, 100))
        assert hub.tx.sizes == [72]  # the whole 72-byte reply in one notification (MTU 100)
        hub.service.forget(PHONE_A)
        hub.tx.sizes.clear()
        await hub.send(PhoneHandshake(CODE, DEVICE_ID).start(), PHONE_B)  # MTU 23
        assert max(hub.tx.sizes) == 20 and sum(hub.tx.sizes) == 72

    run(scenario())


class PhonesTx:
    """TX as each subscribed phone receives it: bluetoothd cuts a notification to the MTU
    - 3 of each phone's connection."""

    def __init__(self, mtus: dict[str, int]) -> None:
        self.mtus = mtus
        self.readers = {device: FrameReader() for device in mtus}
        self.frames: dict[str, list[Frame]] = {device: [] for device in mtus}

    async def notify(self, value: bytes) -> bool:
        for device, mtu in self.mtus.items():
            self.frames[device] += self.readers[device].feed(value[:mtu - 3])
        return True


def test_every_subscribed_phone_can_cut_the_notifications_into_frames() -> None:
    """§4.2: every phone subscribed to TX receives every notification and must be able to
    cut the stream into frames, so pieces fit the smallest MTU the hub knows, not only the
    session's phone's: a phone waiting its turn at MTU 23 must not lose step."""
    async def scenario() -> None:
        hub = Hub()
        tx = hub.service._tx = PhonesTx({PHONE_A: 185, PHONE_B: 23})  # type: ignore[assignment]
        await hub.service._read_info(GattRequest(PHONE_B, 23))  # B read INFO and waits
        phone = PhoneHandshake(CODE, DEVICE_ID)
        await hub.write(phone.start().encode(), PHONE_A, 185)
        confirm, channel = phone.finish(tx.frames[PHONE_A][-1])
        await hub.write(confirm.encode(), PHONE_A, 185)
        assert channel.open(tx.frames[PHONE_A][-1])
        assert tx.frames[PHONE_B] == tx.frames[PHONE_A]  # B saw the same frames

        hub.service.forget(PHONE_A)  # A paired and left: B's turn
        phone = PhoneHandshake(CODE, DEVICE_ID)
        await hub.write(phone.start().encode(), PHONE_B, 23)
        confirm, channel = phone.finish(tx.frames[PHONE_B][-1])
        await hub.write(confirm.encode(), PHONE_B, 23)
        info = secure_protocol.decode_message(channel.open(tx.frames[PHONE_B][-1]))
        assert info["type"] == "device-info"

    run(scenario())


def test_push_reaches_only_an_established_session() -> None:
    async def scenario() -> None:
        hub = Hub()
        assert not await hub.service.push({"type": "progress"})  # nobody there
        phone = PhoneHandshake(CODE, DEVICE_ID)
        confirm, channel = phone.finish(await hub.send(phone.start()))
        before = len(hub.tx.frames)
        assert not await hub.service.push({"type": "progress"})  # still handshaking
        assert len(hub.tx.frames) == before
        await hub.send(confirm)
        channel.open(hub.tx.frames[-1])  # device info
        assert await hub.service.push({"type": "progress", "state": "online"})
        assert secure_protocol.decode_message(channel.open(hub.tx.frames[-1])) == {
            "type": "progress", "state": "online"}
        hub.service.forget(PHONE_B)  # another phone leaving changes nothing
        assert hub.service.status()["session"]["established"]
        hub.service.forget(PHONE_A)
        assert not await hub.service.push({"type": "progress"})

    run(scenario())


def test_a_message_nested_too_deep_is_answered_malformed() -> None:
    # json.loads raises RecursionError (not a ValueError) for a few thousand '[': it
    # escaped the codec instead of becoming the documented error.
    async def scenario() -> None:
        hub = Hub()
        channel, _ = await hub.session()
        code, _, message = error_of(await hub.send(channel.seal(b"[" * 2000)))
        assert code == ErrorCode.MALFORMED and message == "message nests too deeply"

    run(scenario())


def test_a_broken_stream_is_answered_in_the_phones_session() -> None:
    async def scenario() -> None:
        hub = Hub()
        channel, _ = await hub.session()
        await hub.service.rx_write(b"\xff\xff", GattRequest(PHONE_A, 23))  # known at once
        error = hub.tx.frames[-1]
        assert error.type == MsgType.ERROR and error.sid == channel.sid
        assert error_of(error)[0] == ErrorCode.MALFORMED
        assert hub.service.status()["session"] is None  # and the session is over
        # A stranger's broken stream is not answered: it has no session id to answer in,
        # and every subscribed phone would receive the ERROR.
        before = len(hub.tx.frames)
        await hub.service.rx_write(b"\x00\x01", GattRequest(PHONE_B, 23))
        assert len(hub.tx.frames) == before

    run(scenario())


def test_a_frame_in_another_phones_session_is_refused_outside_that_session() -> None:
    """Every subscribed phone receives every ERROR: one carrying phone A's live session id
    because of what phone B wrote would end A's session at A (its client takes the error as
    its own) while the hub keeps it. B is answered with session id 0."""
    async def scenario() -> None:
        hub = Hub()
        channel, _ = await hub.session()
        start = PhoneHandshake(CODE, DEVICE_ID).start()
        for frame, code in ((Frame(MsgType.DATA, channel.sid, bytes(30)), ErrorCode.UNEXPECTED),
                            (Frame(MsgType.PAKE_START, channel.sid, start.body), ErrorCode.BUSY),
                            (Frame(MsgType.PAKE_CONFIRM, channel.sid, bytes(32)),
                             ErrorCode.UNEXPECTED)):
            answer = await hub.send(frame, PHONE_B)
            assert answer.sid == secure_protocol.NO_SESSION and error_of(answer)[0] == code
        assert all(f.sid != channel.sid for f in hub.tx.frames if f.type == MsgType.ERROR)
        reply = await hub.send(channel.seal(b'{"type":"progress","id":1}'))
        assert secure_protocol.decode_message(channel.open(reply))["id"] == 1

    run(scenario())


def test_a_stray_frame_of_the_phones_old_session_leaves_its_new_session_alone() -> None:
    """A late frame of a session the phone gave up on is answered in that old session and
    the phone's new session goes on."""
    async def scenario() -> None:
        hub = Hub()
        old, _ = await hub.session()
        channel, _ = await hub.session()  # the same phone starts again
        for frame in (old.seal(b'{"type":"progress","id":1}'),
                      Frame(MsgType.PAKE_CONFIRM, old.sid, bytes(32))):
            answer = await hub.send(frame)
            assert answer.sid == old.sid and error_of(answer)[0] == ErrorCode.UNEXPECTED
        reply = await hub.send(channel.seal(b'{"type":"progress","id":2}'))
        assert secure_protocol.decode_message(channel.open(reply))["id"] == 2
        assert hub.service.status()["session"]["established"] is True

    run(scenario())


class WiredPhone:
    """A bleak client for the reference phone client, wired to an in-memory hub: what the
    phone writes goes to the hub as ``device``, every notification comes back to it.
    ``meanwhile`` runs after each write (another phone's doings)."""

    mtu_size = 23

    def __init__(self, hub: Hub, device: str = PHONE_A,
                 meanwhile: Callable[[], Any] | None = None) -> None:
        self.hub, self.device, self.meanwhile = hub, device, meanwhile
        self.tx = hub.tx
        self.on_notify: Callable[[Any, bytearray], None] | None = None

    async def start_notify(self, _uuid: str, callback: Callable[[Any, bytearray], None]
                           ) -> None:
        self.on_notify = callback
        notify = self.tx.notify

        async def both(value: bytes) -> bool:
            assert self.on_notify is not None
            self.on_notify(None, bytearray(value))
            return await notify(value)

        self.tx.notify = both  # type: ignore[method-assign]

    async def write_gatt_char(self, _uuid: str, data: bytes, response: bool = True) -> None:
        await self.hub.service.rx_write(bytes(data), GattRequest(self.device, 23))
        if self.meanwhile is not None:
            await self.meanwhile()


def test_another_phones_junk_neither_aborts_a_pairing_nor_costs_it_an_attempt() -> None:
    """Phone B without a session writes an impossible length while phone A handshakes: the
    hub answers B nothing (an ERROR without a session id reaches every phone), and phone A,
    which ignores ERRORs with session id 0 (§4.2), pairs with all its attempts left."""
    from gatewayd.ble import phone as ble_client

    async def scenario() -> None:
        hub = Hub(max_failures=5)

        async def junk() -> None:
            before = len(hub.tx.frames)
            await hub.service.rx_write(b"\xff\xff\x00", GattRequest(PHONE_B, 23))
            assert len(hub.tx.frames) == before  # nothing notified for B's junk
            # ... and an ERROR with session id 0 (another phone's) is not A's own either.
            error = secure_protocol.error_frame(secure_protocol.NO_SESSION,
                                                ErrorCode.MALFORMED, 5, "not yours")
            await hub.tx.notify(error.encode())

        client = WiredPhone(hub, meanwhile=junk)
        session = await ble_client.SecureSession.establish(
            client, CODE, DEVICE_ID)  # type: ignore[arg-type]
        assert session.device_info["type"] == "device-info"
        assert hub.service.status()["failures"] == 0
        assert hub.service.attempts_left == 5

    run(scenario())


def test_a_phone_writing_junk_cannot_flood_the_log(caplog: pytest.LogCaptureFixture) -> None:
    """3 junk bytes every 20 ms for 12 s: 10 lines a minute, then one line saying how many
    more there were."""
    clock = FakeClock()
    later: list[tuple[float, Callable[[], None]]] = []

    async def scenario() -> None:
        hub = Hub(clock=clock)
        loop = asyncio.get_running_loop()
        loop.call_later = lambda delay, call: later.append((delay, call))  # type: ignore
        for _ in range(600):
            await hub.service.rx_write(b"\xff\xff\x00", GattRequest(PHONE_B, 23))
            clock.advance(0.02)
        refusals = [r for r in caplog.records if "MALFORMED from" in r.getMessage()]
        assert len(refusals) == 10
        assert len(later) == 1 and later[0][0] == pytest.approx(60 - 10 * 0.02)
        later[0][1]()
        assert "590 more BLE secure service refusals in the last 60 s" in caplog.text

    with caplog.at_level("INFO", logger="gatewayd.ble.secure_service"):
        run(scenario())


def test_a_message_that_is_not_a_request_is_refused_by_name_and_ends_the_session() -> None:
    async def scenario() -> None:
        hub = Hub()
        for body, text in ((b"{not json", "message is not JSON"),
                           (b'["pair"]', 'message needs a "type"'),
                           (b'{"id": 1}', 'message needs a "type"')):
            channel, _ = await hub.session()
            answer = await hub.send(channel.seal(body))
            assert answer.sid == channel.sid
            assert error_of(answer) == (ErrorCode.MALFORMED, 3, text)
            assert hub.service.status()["session"] is None

    run(scenario())


class FaultyHost(FakeHost):
    def secure_networks(self) -> list[dict[str, Any]]:
        raise RuntimeError("scan result unreadable: /org/freedesktop/NetworkManager/AP/7")


def test_a_fault_in_the_hub_is_an_internal_error_in_the_phones_session() -> None:
    """No traceback text reaches the phone, and the phone's session ends (not the
    service): a new handshake works."""
    async def scenario() -> None:
        hub = Hub()
        hub.host = hub.service.host = FaultyHost()  # type: ignore[assignment]
        channel, _ = await hub.session()
        request = secure_protocol.encode_message({"type": "networks", "id": 1})
        answer = await hub.send(channel.seal(request))
        assert answer.sid == channel.sid
        assert error_of(answer) == (ErrorCode.UNEXPECTED, 3, "internal error")
        assert hub.service.status()["session"] is None
        channel, info = await hub.session()
        assert info["device_id"] == DEVICE_ID

    run(scenario())


def test_the_largest_frame_passes_and_one_byte_more_is_refused() -> None:
    largest = Frame(MsgType.DATA, b"\x00\x00\x00\x07",
                    bytes(secure_protocol.MAX_FRAME_LEN - 5))
    data = largest.encode()
    assert FrameReader().feed(data) == [largest]
    with pytest.raises(ValueError):
        Frame(MsgType.DATA, largest.sid, largest.body + b"x").encode()
    too_long = (secure_protocol.MAX_FRAME_LEN + 1).to_bytes(2, "big") + data[2:] + b"x"
    with pytest.raises(secure_protocol.ProtocolError) as refused:
        FrameReader().feed(too_long)
    assert refused.value.code == ErrorCode.MALFORMED


# --- messages longer than a frame -----------------------------------------------------------

class CrowdedHost(FakeHost):
    """A full scan cache (64 networks) of 32-byte names, weakest first: 4.9 KB."""

    def secure_networks(self) -> list[dict[str, Any]]:
        return [{"ssid": f"Apartment {n:02d} Wireless Network+", "signal": 20 + n,
                 "security": "wpa2/wpa3"} for n in range(64)]


def test_a_full_scan_of_long_names_is_cut_to_the_strongest_that_fit() -> None:
    async def scenario() -> None:
        hub = Hub()
        hub.host = hub.service.host = CrowdedHost()  # type: ignore[assignment]
        scan = hub.host.secure_networks()
        assert len(secure_protocol.encode_message({"networks": scan})) > \
            secure_protocol.MAX_MESSAGE_LEN
        channel, _ = await hub.session()

        async def ask(message: dict[str, Any]) -> dict[str, Any]:
            reply = await hub.send(channel.seal(secure_protocol.encode_message(message)))
            return secure_protocol.decode_message(channel.open(reply))

        strongest = sorted(scan, key=lambda n: -n["signal"])
        reply = await ask({"type": "networks", "id": 1})
        count = len(reply["networks"])
        assert 40 < count < 64 and reply["truncated"] is True
        assert reply == {"type": "networks", "id": 1, "networks": strongest[:count],
                         "truncated": True}
        one_more = {**reply, "networks": strongest[:count + 1]}
        assert len(secure_protocol.encode_message(one_more)) > secure_protocol.MAX_MESSAGE_LEN
        # The session is still in step: the next requests are answered and decrypt.
        assert (await ask({"type": "progress", "id": 2}))["step"] == "wifi"
        assert await ask({"type": "networks", "id": 3}) == {**reply, "id": 3}
        assert hub.service.status()["session"]["established"]

    run(scenario())


def test_a_message_too_long_for_a_frame_is_logged_and_the_session_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    """A notification no frame can carry (JSON \\u escapes: 2 bytes of text become 6) is
    not sent and takes no sequence number: the session goes on."""
    async def scenario() -> None:
        hub = Hub()
        channel, _ = await hub.session()
        before = len(hub.tx.frames)
        assert not await hub.service.push({"type": "progress", "state": "\u00e9" * 2000})
        assert len(hub.tx.frames) == before  # nothing sent, not even an error
        assert re.search(f"progress message to {PHONE_A} not sent: message of 12[0-9]{{3}} "
                         "bytes exceeds 4067", caplog.text)
        assert hub.service.status()["session"]["established"]
        reply = await hub.send(channel.seal(secure_protocol.encode_message(
            {"type": "progress", "id": 2})))
        assert secure_protocol.decode_message(channel.open(reply))["id"] == 2

    run(scenario())


def test_a_request_whose_id_its_reply_could_not_carry_is_refused_and_nothing_done() -> None:
    """The reply echoes the id: one over 256 characters of JSON could make a reply no frame
    carries, so the phone would wait in vain while its pairing attempt ran. It is refused
    with a malformed ERROR that names the id, before anything is done."""
    async def scenario() -> None:
        hub = Hub()
        channel, _ = await hub.session()
        rid = "\u00e9" * 100  # 100 characters sent, 600 in the escaped reply
        request = json.dumps({"type": "pair", "id": rid, "fields": FIELDS},
                             ensure_ascii=False).encode()
        code, _, message = error_of(await hub.send(channel.seal(request)))
        assert code == ErrorCode.MALFORMED and message == '"id" is over 256 characters of JSON'
        assert hub.host.paired == []
        assert hub.service.status()["session"] is None  # a malformed message ends it
        # An id of 256 characters of JSON is taken and echoed.
        channel, _ = await hub.session()
        rid = "x" * 254
        reply = await hub.send(channel.seal(secure_protocol.encode_message(
            {"type": "progress", "id": rid})))
        assert secure_protocol.decode_message(channel.open(reply))["id"] == rid

    run(scenario())


def test_a_message_too_long_to_seal_uses_no_sequence_number() -> None:
    keys = SessionKeys.derive(b"k" * 32, b"a" * 33, b"b" * 33)
    sid = b"\x01\x02\x03\x04"
    hub = Channel(keys.hub_to_phone, keys.phone_to_hub, sid)
    phone = Channel(keys.phone_to_hub, keys.hub_to_phone, sid)
    largest = hub.seal(bytes(secure_protocol.MAX_MESSAGE_LEN))
    assert len(largest.encode()) == 2 + secure_protocol.MAX_FRAME_LEN
    assert phone.open(largest) == bytes(secure_protocol.MAX_MESSAGE_LEN)
    with pytest.raises(ValueError, match="message of 4068 bytes exceeds 4067"):
        hub.seal(bytes(secure_protocol.MAX_MESSAGE_LEN + 1))
    assert hub.sent == 1
    assert phone.open(hub.seal(b"next")) == b"next"


def test_requests_written_back_to_back_are_each_answered_in_order() -> None:
    async def scenario() -> None:
        hub = Hub()
        channel, _ = await hub.session()
        before = len(hub.tx.frames)
        await hub.write(b"".join(
            channel.seal(secure_protocol.encode_message({"type": "progress", "id": n})).encode()
            for n in (1, 2)))
        answers = [secure_protocol.decode_message(channel.open(frame))
                   for frame in hub.tx.frames[before:]]
        assert [answer["id"] for answer in answers] == [1, 2]

    run(scenario())


def test_a_phone_that_left_mid_frame_starts_afresh_when_it_returns() -> None:
    async def scenario() -> None:
        hub = Hub()
        start = PhoneHandshake(CODE, DEVICE_ID).start().encode()
        await hub.write(start[:7])  # then the phone disconnects
        hub.service.forget(PHONE_A)
        phone = PhoneHandshake(CODE, DEVICE_ID)
        assert (await hub.send(phone.start())).type == MsgType.PAKE_REPLY

    run(scenario())


def test_a_half_frame_followed_by_5_s_of_silence_is_abandoned() -> None:
    """A phone announced 4096 bytes, wrote 100 and gave up: its next PAKE_START, 5 s later,
    is answered. Within 5 s of silence the pieces of one frame still join up."""
    clock = FakeClock()

    async def scenario() -> None:
        hub = Hub(clock=clock)
        start = PhoneHandshake(CODE, DEVICE_ID).start().encode()
        await hub.write(start[:7])
        clock.advance(5.0)  # exactly the limit: the rest still completes the frame
        before = len(hub.tx.frames)
        await hub.write(start[7:])
        assert hub.tx.frames[before:][0].type == MsgType.PAKE_REPLY
        hub.service.forget(PHONE_A)  # a new connection, a fresh stream
        await hub.write((4096).to_bytes(2, "big") + bytes(98))  # 100 bytes of 4098
        clock.advance(5.1)
        phone = PhoneHandshake(CODE, DEVICE_ID)
        assert (await hub.send(phone.start())).type == MsgType.PAKE_REPLY

    run(scenario())


def test_partial_frames_are_kept_for_the_latest_phones_only() -> None:
    async def scenario() -> None:
        hub = Hub(max_failures=5)
        phones = [f"AA:BB:CC:00:00:{n:02X}" for n in range(MAX_PHONES + 1)]
        starts = {p: PhoneHandshake(CODE, DEVICE_ID).start() for p in phones}
        for p in phones:
            await hub.write(starts[p].encode()[:7], p)
        # The newest MAX_PHONES keep their half frames: each completes its own.
        for p in (phones[-1], phones[1]):
            before = len(hub.tx.frames)
            await hub.write(starts[p].encode()[7:], p)
            assert [f.type for f in hub.tx.frames[before:]] == [MsgType.PAKE_REPLY]
            hub.service.forget(p)
        # The oldest one's was let go: its next frame is read from a clean start.
        phone = PhoneHandshake(CODE, DEVICE_ID)
        assert (await hub.send(phone.start(), phones[0])).type == MsgType.PAKE_REPLY

    run(scenario())


def test_an_established_session_refuses_a_frame_type_it_does_not_expect() -> None:
    async def scenario() -> None:
        hub = Hub()
        channel, _ = await hub.session()
        answer = await hub.send(Frame(0x42, channel.sid, bytes(40)))
        assert answer.sid == channel.sid
        assert error_of(answer) == (ErrorCode.UNEXPECTED, 3, "frame type 0x42 not expected now")

    run(scenario())


def test_each_protocol_error_tells_the_phone_what_went_wrong() -> None:
    """The error frames' codes, attempts left and texts, as a phone shows them."""
    async def scenario() -> None:
        hub = Hub(max_failures=4)
        start = PhoneHandshake(CODE, DEVICE_ID).start()
        cases = [
            (Frame(MsgType.PAKE_START, secure_protocol.NO_SESSION, start.body),
             (ErrorCode.MALFORMED, 4, "session id 0 is reserved")),
            (Frame(MsgType.PAKE_START, start.sid, start.body[:-1]),
             (ErrorCode.MALFORMED, 4, "PAKE_START is version + 33 bytes")),
            (Frame(MsgType.PAKE_START, start.sid, b"\x07" + start.body[1:]),
             (ErrorCode.VERSION, 4, "this hub speaks protocol version 1")),
            # the hub's own side ("I'm B, but I got a message from B"), and not a point
            (Frame(MsgType.PAKE_START, start.sid, b"\x01B" + start.body[2:]),
             (ErrorCode.MALFORMED, 4, secure_protocol.BAD_MESSAGE_A)),
            (Frame(MsgType.PAKE_START, start.sid, b"\x01A" + b"\xff" * 32),
             (ErrorCode.MALFORMED, 4, secure_protocol.BAD_MESSAGE_A)),
            (Frame(MsgType.DATA, start.sid, bytes(40)),
             (ErrorCode.UNEXPECTED, 4, "no handshake in progress for this session; start "
                                       "with PAKE_START")),
        ]
        for frame, expected in cases:
            assert error_of(await hub.send(frame)) == expected
        # After a handshake (an attempt counts until confirmed): a frame not expected now.
        phone = PhoneHandshake(CODE, DEVICE_ID)
        phone.finish(await hub.send(phone.start()))
        assert error_of(await hub.send(Frame(0x42, phone.sid, b""))) == (
            ErrorCode.UNEXPECTED, 3, "frame type 0x42 not expected now")
        # A wrong confirmation.
        phone = PhoneHandshake(CODE, DEVICE_ID)
        phone.finish(await hub.send(phone.start()))
        assert error_of(await hub.send(Frame(MsgType.PAKE_CONFIRM, phone.sid, bytes(32)))) == (
            ErrorCode.WRONG_CODE, 2, "wrong setup code")
        # Another phone during a handshake.
        await hub.send(PhoneHandshake(CODE, DEVICE_ID).start())
        stranger = PhoneHandshake(CODE, DEVICE_ID).start()
        busy = await hub.send(stranger, PHONE_B)
        assert busy.sid == stranger.sid  # answered in its own session id
        assert error_of(busy) == (ErrorCode.BUSY, 1, "another phone is pairing this hub")
        hub.service.forget(PHONE_A)
        assert (await hub.send(PhoneHandshake(CODE, DEVICE_ID).start())).type == \
            MsgType.PAKE_REPLY  # the last attempt
        hub.service.forget(PHONE_A)
        assert error_of(await hub.send(PhoneHandshake(CODE, DEVICE_ID).start())) == (
            ErrorCode.LOCKED, 0, "too many wrong setup codes: press the hub's button to try "
                                 "again")

    run(scenario())


def test_a_confirmation_of_the_wrong_size_is_malformed_not_a_wrong_code() -> None:
    """§7: a wrong body size is 0x01 malformed. Told 0x03, the user would be asked to check
    a setup code that was right."""
    async def scenario() -> None:
        hub = Hub(max_failures=5)
        for cut, left in ((slice(0, 31), 4), (slice(0, 0), 3), (slice(0, 33), 2)):
            phone = PhoneHandshake(CODE, DEVICE_ID)
            confirm, _ = phone.finish(await hub.send(phone.start()))
            wrong_size = Frame(MsgType.PAKE_CONFIRM, phone.sid, (confirm.body + b"\0")[cut])
            assert error_of(await hub.send(wrong_size)) == (
                ErrorCode.MALFORMED, left, "PAKE_CONFIRM is 32 bytes")
            assert hub.service.status()["session"] is None
        await hub.session()  # the right code, sent right, still works

    run(scenario())


def test_the_channel_refuses_short_replayed_and_forged_frames_by_name() -> None:
    keys = SessionKeys.derive(b"k" * 32, b"a" * 33, b"b" * 33)
    sid = b"\x01\x02\x03\x04"
    phone = Channel(keys.phone_to_hub, keys.hub_to_phone, sid)
    hub = Channel(keys.hub_to_phone, keys.phone_to_hub, sid)
    first = phone.seal(b"one")
    assert hub.open(first) == b"one" and (phone.sent, hub.received) == (1, 1)

    def refused(frame: Frame) -> tuple[ErrorCode, str]:
        with pytest.raises(secure_protocol.ProtocolError) as caught:
            hub.open(frame)
        assert str(caught.value) == caught.value.message
        return caught.value.code, caught.value.message

    sealed = phone.seal(b"two")
    assert refused(Frame(MsgType.DATA, sid, sealed.body[:23])) == (
        ErrorCode.MALFORMED, "short data frame")
    assert refused(Frame(MsgType.PAKE_CONFIRM, sid, sealed.body)) == (
        ErrorCode.MALFORMED, "short data frame")
    assert refused(first) == (ErrorCode.DECRYPT, "unexpected sequence number (replayed, "
                                                 "reordered or lost frame)")
    forged = sealed.body[:-1] + bytes([sealed.body[-1] ^ 1])
    assert refused(Frame(MsgType.DATA, sid, forged)) == (
        ErrorCode.DECRYPT, "message failed authentication")
    assert hub.received == 1  # nothing refused moved the sequence on
    assert hub.open(sealed) == b"two" and hub.received == 2
    assert hub.open(phone.seal(b"")) == b""  # the shortest frame: sequence and tag only


def test_error_frames_carry_a_bounded_text_and_count() -> None:
    frame = secure_protocol.error_frame(b"\x01\x02\x03\x04", ErrorCode.LOCKED, 300, "é" * 150)
    code, left, text = secure_protocol.parse_error(frame)
    assert (code, left) == (ErrorCode.LOCKED, 255)
    assert len(frame.body) == 2 + 200 and text == "é" * 100  # 200 bytes of UTF-8
    assert secure_protocol.parse_error(secure_protocol.error_frame(
        b"\x01\x02\x03\x04", ErrorCode.BUSY, 255, "x" * 201))[1:] == (255, "x" * 200)
    assert secure_protocol.parse_error(secure_protocol.error_frame(
        b"\x01\x02\x03\x04", ErrorCode.BUSY, -3, ""))[:2] == (ErrorCode.BUSY, 0)
    assert secure_protocol.parse_error(Frame(MsgType.ERROR, b"\x00" * 4, b"\x04")) == (
        ErrorCode.MALFORMED, 0, "malformed error frame")
    assert secure_protocol.parse_error(Frame(MsgType.ERROR, b"\x00" * 4, b"\x04\x01")) == (
        ErrorCode.LOCKED, 1, "")
    assert secure_protocol.parse_error(Frame(MsgType.ERROR, b"\x00" * 4, b"\x04\x01\xff")) == (
        ErrorCode.LOCKED, 1, "\ufffd")


def test_the_networks_reply_holds_as_many_of_the_strongest_as_one_frame_carries() -> None:
    """At every size around the limit: the reply fits, and if it was cut, the next
    strongest network would not have fitted; a network without a signal comes last."""
    for name_len in range(1, 33):
        networks = [{"ssid": f"{i:02d}" + "n" * (name_len - 2 if name_len > 2 else 0),
                     "signal": 100 - i, "security": "wpa2"} for i in range(64)]
        reply = networks_reply(7, networks)
        size = len(secure_protocol.encode_message(reply))
        assert size <= secure_protocol.MAX_MESSAGE_LEN
        kept = reply["networks"]
        assert kept == networks[:len(kept)]  # the strongest, in order
        if reply["truncated"]:
            more = {**reply, "networks": networks[:len(kept) + 1]}
            assert len(secure_protocol.encode_message(more)) > secure_protocol.MAX_MESSAGE_LEN
        else:
            assert len(kept) == 64
    # exactly at the limit: not cut
    base = len(secure_protocol.encode_message(networks_reply(7, [])))
    pad = secure_protocol.MAX_MESSAGE_LEN - base - len('{"ssid":""}')
    exact = [{"ssid": "x" * pad}]
    assert networks_reply(7, exact)["truncated"] is False
    assert len(secure_protocol.encode_message(networks_reply(7, exact))) == \
        secure_protocol.MAX_MESSAGE_LEN
    unknown = [{"ssid": "b"}, {"ssid": "a", "signal": 0}]
    assert [n["ssid"] for n in networks_reply(7, unknown)["networks"]] == ["a", "b"]
