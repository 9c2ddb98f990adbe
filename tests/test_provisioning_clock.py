"""The registration keeper on a hub that starts with its refresh due: one gatewayd process
against the simulated platform (tests/provisioning_helpers.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.provisioning_helpers import ProvWorld, start

pytestmark = pytest.mark.timeout(240)

HOUR = 3600.0


# ---- end to end: a refresh due when the hub starts --------------------------------------------

@pytest.fixture
def world(tmp_path: Path) -> Iterator[ProvWorld]:
    w = ProvWorld(tmp_path / "world", retry_after=0.2)
    yield w
    w.stop()


@pytest.mark.slow
def test_a_refresh_due_at_start_comes_without_a_reconnect(world: ProvWorld,
                                                          tmp_path: Path) -> None:
    """Before: the keeper was woken when the link connected, just before onboarding went
    online; not online yet, it waited for the next connect. On a stable link the token
    expired, and the hub needed a technician's approval again."""
    lifetime = 24 * HOUR
    world.settings(registration_lifetime=lifetime, auto_approve=True)
    hub = start(world, tmp_path, "hub")
    hub.wait(lambda s: s["state"] == "online", "the hub online")
    hub.stop()
    # Off for 60 % of the registration's lifetime (by the clock it was stamped with):
    # its refresh is due when the hub starts again.
    path = hub.state_dir / "state.json"
    data = json.loads(path.read_text())
    reg = data["provisioning"]["registration"]
    reg["issued_at"] -= 0.6 * lifetime
    reg["expires_at"] -= 0.6 * lifetime
    path.write_text(json.dumps(data))
    token = hub.stored()["cloud"].token

    hub = world.start_hub(hub.config)
    try:
        status = hub.wait(lambda s: s["provisioning"]["refreshes"] == 1,
                          "the refresh due at start", 30)
        assert status["provisioning"]["refresh_failures"] == 0
        assert status["provisioning"]["attempts"] == 0  # no new operation, no approval
        stored = hub.stored()
        assert stored["cloud"].token != token
        assert stored["registration"].expires_at > reg["expires_at"] + 0.5 * lifetime
        assert world.pending() == []
    finally:
        hub.stop()
