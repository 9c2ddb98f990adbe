"""The simulated platform's provisioning side, asked as a hub asks it: the hub's own
provisioning channel against the real provisioning endpoint (mosquitto), and a simulated
hub reset in enroll mode (``gatewayd --simulate --provisioning enroll``).

The hub's behaviour against it is tests/test_provisioning_e2e.py.
"""

from __future__ import annotations

import json
import os
import signal
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gatewayd.cloud.attempts import CloudOutcome
from gatewayd.cloud.endpoint import Endpoint
from gatewayd.config import CloudConfig
from gatewayd.provisioning import codec
from gatewayd.provisioning.channel import ProvisioningChannel
from gatewayd.simulator.broker import Broker
from gatewayd.simulator.provisioning import SimProvisioning
from gatewayd.simulator.provisioning_model import (
    SIM_ENROLL_PASSWORD,
    SIM_SERIALS,
    SIM_TEMPLATE,
    SIM_TOKEN,
)
from gatewayd.simulator.world import SIM_ACCOUNT
from gatewayd.state import parse_state
from tests.fakes import FakeClock
from tests.helpers import ctl, run_async
from tests.provisioning_helpers import HUB_ID, ProvWorld, until
from tests.test_e2e_simulator import Sim

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[ProvWorld]:
    w = ProvWorld(tmp_path / "world", retry_after=0.2)
    yield w
    w.stop()


def hub_request(op: str, key: bytes, **extra: str) -> dict[str, Any]:
    return {"operation": op, "public_key": codec.b64(codec.public_key(key)),
            "device_id": HUB_ID, "model": "gatewayd hub", "serial": SIM_SERIALS[0], **extra}


class Asking:
    """One hub's provisioning session with the simulated endpoint (the hub's channel)."""

    def __init__(self, world: ProvWorld, user: str, password: str, op: str) -> None:
        prov = world.provisioning
        self.channel = ProvisioningChannel(Endpoint(prov.broker.host, prov.broker.port, False),
                                           user, password, op, CloudConfig())

    async def __aenter__(self) -> Asking:
        result = await self.channel.open(10)
        assert result.outcome == CloudOutcome.CONNECTED, result
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()

    async def ask(self, action: str, data: dict[str, Any]) -> codec.Answer:
        return await self.channel.request(action, data, 10)


def test_an_enrollment_asked_again_gets_its_answer_again_under_the_factory_device_id(
        world: ProvWorld) -> None:
    """Before: the platform looked the registration up by the hub's device id, not the
    one the factory registered the serial under, and answered the repeat 500 internal."""
    world.provisioning.templates[SIM_TEMPLATE].device_ids[SIM_SERIALS[0]] = "factory-id-1"
    op, key = codec.new_operation()

    async def enroll_three_times() -> list[codec.Answer]:
        async with Asking(world, codec.enroll_user(SIM_TEMPLATE), SIM_ENROLL_PASSWORD,
                          op) as hub:
            return [await hub.ask("enroll", hub_request(op, key, template=SIM_TEMPLATE))
                    for _ in range(3)]

    answers = run_async(enroll_three_times())
    assert [(a.status, a.code, a.data["state"]) for a in answers] == [(1, 200, "approved")] * 3
    issued = [codec.issued_from(codec.open_sealed(key, op, a.data["credentials"]))
              for a in answers]
    assert {i.device_id for i in issued} == {"factory-id-1"}
    assert len({i.cloud.token for i in issued}) == 1  # the same registration, not a new one
    assert [o["state"] for o in world.operations()] == ["approved"]


def test_a_poll_that_changes_nothing_leaves_the_registry_file_alone(world: ProvWorld) -> None:
    """Before: every request rewrote registry.json (2.4 MB with 5000 waiting operations),
    so a fleet polling fell behind its timeout. A hard link keeps the old file's inode:
    a rewrite (a rename over it) shows as another file."""
    registry = world.provisioning.registry
    kept = registry.with_name("kept.json")
    op, key = codec.new_operation()

    def rewritten() -> bool:
        return not os.path.samefile(registry, kept)

    async def scenario() -> list[codec.Answer]:
        async with Asking(world, codec.token_user(SIM_TOKEN), SIM_TOKEN, op) as hub:
            started = await hub.ask("start", hub_request(op, key))
            os.link(registry, kept)  # the operation is in it: the answer comes after saving
            polls = [await hub.ask("poll", {"operation": op}) for _ in range(5)]
            assert not rewritten(), "a poll rewrote the registry"
            world.ctl("platform", "reject", op, "--reason", "not this one")
            rejected = await hub.ask("poll", {"operation": op})
            return [started, *polls, rejected]

    answers = run_async(scenario())
    assert [a.data["state"] for a in answers] == ["pending"] * 6 + ["rejected"]
    assert rewritten()  # the change was written
    assert op in kept.read_text() and "not this one" not in kept.read_text()
    assert "not this one" in registry.read_text()


def test_a_release_before_the_registration_went_out_leaves_it(tmp_path: Path) -> None:
    """A release comes from whoever holds a token of the device's registration; one that
    arrives before the broker took the new registration's token (the previous
    registration's, late) must not end the new one. The request handler alone: nothing
    reaches a broker, so the enrollment's token never goes out."""
    accounts = Broker(tmp_path / "broker")
    settings = tmp_path / "platform.json"
    settings.write_text("{}")
    sim = SimProvisioning(tmp_path / "prov", accounts, accounts.add_account(*SIM_ACCOUNT),
                          settings, clock=FakeClock())
    user = codec.enroll_user(SIM_TEMPLATE)

    def enroll() -> tuple[int, int]:
        op, key = codec.new_operation()
        status, code, _ = sim._handle(user, op, "enroll",
                                      hub_request(op, key, template=SIM_TEMPLATE))
        return status, code

    assert enroll() == (1, 200)
    sim.release(HUB_ID, {"event": "released", "device_id": HUB_ID, "children": []})
    assert enroll() == (0, 409)  # still enrolled
    registration = sim.listing()["registrations"][0]
    assert (registration["revoked"], registration["tokens"]) == (False, 1)


def test_a_bad_provisioning_setting_is_answered_500_naming_it_and_changes_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Before: read_settings checked nothing. "two" seconds was a ValueError traceback and a
    500 "platform error" for every poll; a bad lifetime with auto_approve failed the start
    after recording the operation (pending for good); "false" was true; a platform.json
    that was not JSON silently gave the defaults. The request handler alone, no broker."""
    accounts = Broker(tmp_path / "broker")
    settings = tmp_path / "platform.json"
    sim = SimProvisioning(tmp_path / "prov", accounts, accounts.add_account(*SIM_ACCOUNT),
                          settings, clock=FakeClock())
    answers: list[dict[str, Any]] = []
    hub = types.SimpleNamespace(publish=lambda _t, body, qos: answers.append(json.loads(body)))
    op, key = codec.new_operation()

    def start() -> dict[str, Any]:
        msg = mqtt.MQTTMessage(
            topic=codec.request_topic(codec.token_user(SIM_TOKEN), op, "start").encode())
        msg.payload = codec.request_body("r1", hub_request(op, key)).encode()
        sim._on_message(hub, None, msg)  # type: ignore[arg-type]
        return answers[-1]

    at_most = "must be a number of seconds above 0 and at most 315360000, got"
    problems = {
        '{"provisioning": {"retry_after": "two"}}': f"retry_after: {at_most} 'two'",
        '{"provisioning": {"auto_approve": true, "registration_lifetime": -1}}':
            "registration_lifetime: must be a number of seconds, at least 5 and at most "
            "315360000, got -1",
        '{"provisioning": {"auto_approve": "false"}}':
            "auto_approve: must be true or false, got 'false'",
        '{"provisioning": {"refuse": {"start": {"times": "x"}}}}':
            "refuse: start: times: must be a whole number (0 or more), got 'x'",
        '{"provisioning": {"refuse": {"start": {"code": 200}}}}':
            "refuse: start: code: must be an integer from 400 to 599, got 200"}
    for text, problem in problems.items():
        settings.write_text(text)
        for _ in range(2):  # logged once, answered every time
            answer = start()
            assert (answer["status"], answer["code"], answer["data"]) == (
                0, 500, {"error": "internal", "message": f"{settings}: provisioning: {problem}"})
    settings.write_text('{"provisioning": ')
    assert start()["data"]["message"].startswith(f"{settings}: not JSON (")
    assert sim.listing()["operations"] == [] and sim.refused == {}  # nothing happened
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("gatewayd")]
    assert len(warnings) == len(problems) + 1 and not any(r.exc_info for r in caplog.records)
    settings.write_text('{"provisioning": {"retry_after": 3, "auto_approve": false}}')
    assert start()["data"]["retry_after"] == 3.0


@pytest.mark.slow
def test_a_reset_enrolled_hub_enrolls_again_and_its_old_token_is_refused(
        tmp_path: Path) -> None:
    """Before: the serial stayed enrolled after the hub's reset released its account, so
    the hub was answered "already-enrolled" for good."""
    sim = Sim(tmp_path / "sim", "--provisioning", "enroll")
    try:
        until(lambda: sim.status()["state"] == "online", "the enrolled hub online", 60)
        state = Path(sim.info["state_dir"]) / "state.json"
        old = parse_state(state, state.read_bytes()).cloud
        assert old is not None
        ctl("--sim", str(sim.workdir), "reset")
        until(lambda: sim.status()["state"] == "online"
              and (new := parse_state(state, state.read_bytes()).cloud) is not None
              and new.username != old.username, "online again with a new registration", 60)
        new = parse_state(state, state.read_bytes()).cloud
        assert new is not None and new.token != old.token
        status = sim.status()
        assert status["provisioning"]["last_error"] is None, status["provisioning"]
        mqtt_info = sim.info["mqtt"]
        assert _connack(mqtt_info["host"], mqtt_info["port"], old.username,
                        old.token) in (134, 135)  # bad user name or password
        assert _connack(mqtt_info["host"], mqtt_info["port"], new.username, new.token) == 0
    finally:
        assert sim.proc.stop(signal.SIGINT, timeout=30) == 0, sim.proc.output()[-3000:]


def _connack(host: str, port: int, user: str, password: str) -> int:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{time.time_ns()}")
    client.username_pw_set(user, password)
    codes: list[int] = []
    client.on_connect = lambda c, u, f, rc, p: codes.append(rc.value)
    client.connect(host, port)
    client.loop_start()
    try:
        until(lambda: codes, "a CONNACK", 5)
        return codes[0]
    finally:
        client.disconnect()
        client.loop_stop()
