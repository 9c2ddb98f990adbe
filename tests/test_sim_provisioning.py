"""The simulated platform's provisioning side, asked as a hub asks it: the hub's own
provisioning channel against the real provisioning endpoint (mosquitto).

The hub's behaviour against it is tests/test_provisioning_e2e.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatewayd.cloud.attempts import CloudOutcome
from gatewayd.cloud.net import Endpoint
from gatewayd.config import CloudConfig
from gatewayd.provisioning import codec
from gatewayd.provisioning.channel import ProvisioningChannel
from gatewayd.simulator.provisioning_model import (
    SIM_ENROLL_PASSWORD,
    SIM_SERIALS,
    SIM_TEMPLATE,
    SIM_TOKEN,
)
from tests.helpers import run_async
from tests.provisioning_helpers import HUB_ID, ProvWorld

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
