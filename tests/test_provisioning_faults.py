"""A provisioned hub when the platform or a broker has a bad moment: refusals the simulated
platform scripts (``refuse`` in its settings), against real mosquitto and gatewayd
processes; and CONNACK refusals mosquitto cannot be made to give (a strict MQTT 3.1.1
broker's "identifier rejected"), from a broker that answers CONNECT and nothing else.

The other end-to-end provisioning scenarios are tests/test_provisioning_e2e.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gatewayd.config import Config, with_overrides
from gatewayd.credentials import CloudCredentials
from gatewayd.identity import Identity
from gatewayd.onboarding.steps import Failure
from gatewayd.provisioning.flows import Flows
from gatewayd.provisioning.service import Provisioner
from gatewayd.simulator.provisioning_model import SIM_SERIALS, SIM_TEMPLATE, SIM_TOKEN
from gatewayd.state import Registration, StateStore
from tests.cloud_helpers import fast_config, make_link
from tests.helpers import run_async
from tests.provisioning_helpers import HUB_ID, ProvWorld, start, until

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[ProvWorld]:
    w = ProvWorld(tmp_path / "world", retry_after=0.2)
    yield w
    w.stop()


def last_error(status: dict[str, object]) -> str | None:
    error = status["provisioning"]["last_error"]  # type: ignore[index]
    return error["code"] if error else None  # type: ignore[index,no-any-return]


@pytest.mark.slow
def test_a_failed_refresh_is_tried_again_and_the_registration_renewed(
        world: ProvWorld, tmp_path: Path) -> None:
    """Before: the retry's deadline was drawn again at every wake-up, so a refresh that
    failed once was never tried again; the token expired and the hub was deprovisioned."""
    world.settings(registration_lifetime=10, auto_approve=True,
                   refuse={"refresh": {"code": 503, "times": 1}})
    hub = start(world, tmp_path, "hub")
    try:
        hub.wait(lambda s: s["state"] == "online", "the hub online")
        first = hub.stored()["registration"]
        status = hub.wait(lambda s: s["provisioning"]["refreshes"] >= 1
                          or last_error(s) is not None, "the second refresh request", 30)
        assert world.provisioning.refused == {"refresh": 1}
        assert last_error(status) is None, status["provisioning"]
        assert status["provisioning"]["refresh_failures"] == 1
        assert status["state"] == "online"
        renewed = hub.stored()["registration"]
        assert renewed.expires_at > first.expires_at
    finally:
        hub.stop()


@pytest.mark.slow
def test_a_busy_platform_is_waited_out_with_the_same_operation(
        world: ProvWorld, tmp_path: Path) -> None:
    """Before: a 429 or a 5xx made the hub forget its operation and start a new one, with a
    new verification code for the technician to find."""
    world.settings(refuse={"poll": {"code": 429, "error": "throttled", "retry_after": 0.3,
                                    "times": 3}})
    hub = start(world, tmp_path, "hub")
    try:
        code = hub.code()
        until(lambda: world.provisioning.refused.get("poll") == 3, "three throttled polls")
        # Then the platform fails for a while: five 5xx in a row end the attempt, the
        # operation kept for the next one.
        world.settings(refuse={"poll": {"code": 503, "error": "unavailable", "retry_after": 0.1,
                                        "times": 8}})
        failure = hub.failure()
        assert failure["code"] == "platform-unreachable"
        assert "503 (unavailable" in failure["reason"] and "5 times in a row" in failure["reason"]
        assert world.provisioning.refused == {"poll": 8}
        assert [op["verification_code"] for op in world.operations()] == [code]
        world.ctl("platform", "approve", world.pending()[0]["id"])
        hub.wait(lambda s: s["state"] == "online", "the hub online")
        assert len(world.operations()) == 1
    finally:
        hub.stop()


@pytest.mark.slow
def test_a_platform_that_forgets_every_operation_is_not_asked_in_a_tight_loop(
        world: ProvWorld, tmp_path: Path) -> None:
    """Before: "unknown operation" (and "expired") started the next operation at once, every
    time: a platform that kept answering so was asked hundreds of times a second."""
    world.settings(refuse={"start": {"code": 404, "error": "unknown-operation", "times": 4}})
    hub = start(world, tmp_path, "hub")
    try:
        # The fifth operation waits for approval: the platform knows it again. (The code
        # shows from the start of each attempt, so it says nothing about which one.)
        hub.wait(lambda s: s["provisioning"]["state"] == "waiting", "an operation waiting")
        assert world.provisioning.refused == {"start": 4}
        # The first new operation at once, the next three after a wait each.
        waits = re.findall(r"provisioning: next attempt in ([0-9.]+) s", hub.proc.output())
        assert len(waits) == 3 and all(float(w) > 0 for w in waits), waits
        assert hub.status()["provisioning"]["attempts"] == 5
    finally:
        hub.stop()


@pytest.mark.slow
def test_a_technician_who_approves_after_thousands_of_polls_still_gets_the_hub_online(
        world: ProvWorld, tmp_path: Path) -> None:
    """Before: the poll delay's growth (1.25 ** polls) overflowed at poll 3180 (14 h at the
    simulator's retry_after of 2 s) and the attempt ended in an internal error. The waits
    between polls take no time here; the polls are real, against the simulated platform."""
    prov = world.provisioning.endpoint()
    cfg, store, identity = setup(tmp_path, prov["port"])
    cfg = with_overrides(cfg, provisioning={"token": SIM_TOKEN})
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3200:
            op = store.state.operation
            assert op is not None
            await asyncio.to_thread(world.provisioning.approve, op.id)
        await asyncio.sleep(0)

    outcome = run_async(Flows(cfg, store, identity, serial="", sleep=no_wait).run(),
                        timeout=200)
    assert outcome.issued is not None, outcome
    assert outcome.issued.device_id == HUB_ID
    assert len(waits) >= 3200 and max(waits) <= 0.2 * 8 * 1.1  # retry_after 0.2, at most 8x


def test_an_operation_that_cannot_be_stored_fails_the_attempt_and_shows_no_code(
        tmp_path: Path) -> None:
    """Before: the storage error escaped the provisioning step, and status went on showing
    the state of an attempt that no longer ran."""
    cfg, store, identity = setup(tmp_path, 1883)
    # A directory where the state file goes: the store's rename fails for real.
    store.path.unlink()
    store.path.mkdir()
    (store.path / "keep").write_text("")
    provisioner = Provisioner(cfg, store, identity, make_link(fast_config()), serial="")
    result, cloud = run_async(provisioner.obtain())
    assert cloud is None and result.failure == Failure.STORAGE_FAILED
    status = provisioner.status()
    assert status["state"] == "failed" and status["verification_code"] is None
    assert status["last_error"]["code"] == "storage-failed"


@pytest.mark.slow
def test_a_registration_too_short_to_refresh_is_refused_and_named(
        world: ProvWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: any positive expires_in was taken (NaN and Infinity too): a millisecond
    registration was refreshed in a tight loop. (The simulator's settings refuse such a
    lifetime now: a platform that issues one all the same.)"""
    issue = world.provisioning._issue

    def short(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {**issue(*args, **kwargs), "expires_in": 0.001}

    monkeypatch.setattr(world.provisioning, "_issue", short)
    world.settings(auto_approve=True)
    hub = start(world, tmp_path, "hub")
    try:
        failure = hub.failure()
        assert failure["code"] == "provisioning-failed"
        assert "credentials.expires_in: must be a number of seconds, at least 5" in \
            failure["reason"]
        stored = hub.stored()
        assert stored["cloud"] is None and stored["registration"] is None
    finally:
        hub.stop()


@pytest.mark.slow
def test_a_pending_answer_that_names_no_expiry_is_waited_on(
        world: ProvWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A platform that writes "expires_in": null for "no expiry" (Python's None): after the
    finite-number check, every attempt failed on it, the operation kept, for good."""
    plain = world.provisioning._state_of

    def no_expiry(op: Any, settings: dict[str, Any]) -> dict[str, Any]:
        answer = plain(op, settings)
        if answer["state"] == "pending":
            answer["expires_in"] = None
        return answer

    monkeypatch.setattr(world.provisioning, "_state_of", no_expiry)
    hub = start(world, tmp_path, "hub")
    try:
        hub.wait(lambda s: s["provisioning"]["state"] == "waiting", "the hub waiting")
        world.ctl("platform", "approve", world.pending()[0]["id"])
        status = hub.wait(lambda s: s["state"] == "online", "the hub online")
        assert status["provisioning"]["attempts"] == 1
    finally:
        hub.stop()


@pytest.mark.slow
def test_an_enrolled_hub_with_another_device_id_keeps_its_operation_and_is_told_why(
        world: ProvWorld, tmp_path: Path) -> None:
    """Before: the hub forgot the operation, so every later attempt was "already enrolled",
    and the advice named a provisioning token, which enroll mode has none of."""
    world.provisioning.templates[SIM_TEMPLATE].device_ids[SIM_SERIALS[0]] = "factory-id-1"
    hub = start(world, tmp_path, "hub", "enroll")
    try:
        status = hub.wait(lambda s: s["provisioning"]["attempts"] >= 3, "a third attempt")
        error = status["provisioning"]["last_error"]
        assert error["code"] == "provisioning-failed", error
        assert "'factory-id-1'" in error["reason"]
        assert f"the template registered the serial '{SIM_SERIALS[0]}' under" in error["reason"]
        assert hub.stored()["operation"] is not None
    finally:
        hub.stop()


# ---- CONNACK refusals -------------------------------------------------------------------------

IDENTIFIER_REJECTED, NOT_AUTHORIZED = 2, 5  # MQTT 3.1.1 CONNACK return codes


class RefusingBroker:
    """Answers every MQTT 3.1.1 CONNECT with one refusal; counts the CONNECTs."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.connects = 0
        self.changed = asyncio.Condition()
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readexactly(2)  # CONNECT's fixed header; the rest is not read
            async with self.changed:
                self.connects += 1
                self.changed.notify_all()
            writer.write(bytes([0x20, 0x02, 0x00, self.code]))
            await writer.drain()
        writer.close()

    async def wait_connects(self, count: int) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: self.connects >= count), 20)


@contextlib.asynccontextmanager
async def refusing(code: int) -> AsyncIterator[RefusingBroker]:
    broker = RefusingBroker(code)
    server = await asyncio.start_server(broker._serve, "127.0.0.1", 0)
    broker.port = server.sockets[0].getsockname()[1]
    try:
        yield broker
    finally:
        server.close()


def setup(tmp_path: Path, port: int) -> tuple[Config, StateStore, Identity]:
    cfg = with_overrides(Config(), hub={"state_dir": str(tmp_path / "state")},
                         cloud={"connect_timeout": 2.0, "reconnect_min": 0.05,
                                "reconnect_max": 0.2},
                         provisioning={"mode": "token", "host": "127.0.0.1", "port": port,
                                       "token": "a-batch-token"})
    store = StateStore(cfg.state_dir)
    store.open(device_id=HUB_ID, mac="02:00:00:00:00:01")
    return cfg, store, Identity(HUB_ID, "02:00:00:00:00:01", "hub")


@pytest.mark.parametrize(("code", "failure", "said"), [
    (NOT_AUTHORIZED, Failure.WRONG_PROVISIONING_TOKEN, "refused this hub's provisioning token"),
    (IDENTIFIER_REJECTED, Failure.PLATFORM_UNREACHABLE, "refused the operation id as MQTT "
                                                        "client id (32 characters"),
])
def test_only_a_refused_password_is_a_wrong_provisioning_token(
        tmp_path: Path, code: int, failure: Failure, said: str) -> None:
    """Before: every CONNACK refusal of the provisioning endpoint was reported as a wrong
    provisioning token, and never tried again within the attempt."""

    async def scenario() -> None:
        async with refusing(code) as broker:
            cfg, store, identity = setup(tmp_path, broker.port)
            outcome = await Flows(cfg, store, identity, serial="").run()
            assert outcome.failure == failure
            assert said in outcome.reason
            if code == NOT_AUTHORIZED:
                assert broker.connects == 1  # a wrong password: asking again helps nobody
            else:
                assert broker.connects >= 2  # the broker's refusal: tried again
                assert store.state.operation is not None  # the same operation next time

    run_async(scenario(), timeout=30)


class Recorder:
    online = True

    def __init__(self) -> None:
        self.lost: list[Failure] = []

    async def registration_lost(self, failure: Failure, reason: str) -> None:
        self.lost.append(failure)


@pytest.mark.parametrize("code", [IDENTIFIER_REJECTED, NOT_AUTHORIZED])
def test_only_a_refused_password_revokes_the_registration(tmp_path: Path, code: int) -> None:
    """Before: any CONNACK refusal of the stored registration (a client id, a server that
    moved) made the hub forget it and ask to be provisioned again."""

    async def scenario() -> None:
        async with refusing(code) as broker:
            cfg, store, identity = setup(tmp_path, 1883)
            cloud = CloudCredentials("developer@example.com", "reg-token", "127.0.0.1",
                                     broker.port, mqtt_user="reg-1")
            store.commit_provisioned(cloud, Registration("token", HUB_ID, 1.0, None))
            link = make_link(fast_config())
            provisioner = Provisioner(cfg, store, identity, link, serial="")
            onboarding = Recorder()
            provisioner.onboarding = onboarding  # type: ignore[assignment]
            await link.start(cloud)
            try:
                # The third CONNECT comes after the link took in the first two refusals.
                await broker.wait_connects(3)
                await asyncio.sleep(0)  # let a deprovisioning task it made start
            finally:
                await link.stop(goodbye=False)
            status = provisioner.status()
            if code == NOT_AUTHORIZED:
                assert onboarding.lost == [Failure.REGISTRATION_REVOKED]
                assert status["last_error"]["code"] == "registration-revoked"
            else:
                assert onboarding.lost == [] and status["last_error"] is None
                assert status["state"] == "registered"

    run_async(scenario(), timeout=30)


def test_the_provisioning_channel_goes_through_the_opener_the_hub_was_given(
        tmp_path: Path) -> None:
    """`gatewayd --simulate` gives its daemon the simulated uplink's opener for the hub's
    broker connections: the provisioning endpoint is behind that uplink as the cloud is. An
    uplink without a route: the endpoint hears nothing and the hub says why."""
    opened: list[tuple[str, int]] = []

    def no_route(address: tuple[str, int], timeout: float | None,
                 source: tuple[str, int] | None) -> socket.socket:
        opened.append(address)
        raise OSError(errno.ENETUNREACH, os.strerror(errno.ENETUNREACH))

    async def scenario() -> None:
        async with refusing(NOT_AUTHORIZED) as broker:
            cfg, store, identity = setup(tmp_path, broker.port)
            provisioner = Provisioner(cfg, store, identity, make_link(fast_config()),
                                      serial="", opener=no_route)
            result, cloud = await provisioner.obtain()
            assert not result.ok and cloud is None
            assert broker.connects == 0  # not a wrong token: the endpoint was never reached
            assert opened and set(opened) == {("127.0.0.1", broker.port)}
            error = provisioner.status()["last_error"]
            assert error["code"] == "platform-unreachable", error
            assert "Network is unreachable" in error["reason"], error

    run_async(scenario(), timeout=30)
