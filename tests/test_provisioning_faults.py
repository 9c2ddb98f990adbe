"""A provisioned hub when the platform has a bad moment: refusals it scripts (``refuse`` in
the simulated platform's settings), against real mosquitto and gatewayd processes.

The other end-to-end provisioning scenarios are tests/test_provisioning_e2e.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.provisioning_helpers import Hub, ProvWorld

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[ProvWorld]:
    w = ProvWorld(tmp_path / "world", retry_after=0.2)
    yield w
    w.stop()


def start(world: ProvWorld, tmp_path: Path, name: str, mode: str = "token",
          **preset: object) -> Hub:
    path = tmp_path / name
    path.mkdir()
    return world.start_hub(world.hub_config(path, mode, **preset))


def last_error(status: dict[str, object]) -> str | None:
    error = status["provisioning"]["last_error"]  # type: ignore[index]
    return error["code"] if error else None  # type: ignore[index,no-any-return]


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
