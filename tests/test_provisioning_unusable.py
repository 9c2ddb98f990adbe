"""A platform whose approval or enrollment the hub cannot use, and how the hub gets out of it
once the platform is fixed; the simulated platform refusing a setting that would make one.

Real mosquitto and gatewayd processes against the simulated platform (ProvWorld); the
operator acts through ``gatewayctl --sim DIR platform``. Tests wait on conditions.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.provisioning_helpers import HUB_ID, ProvWorld, start, until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

NEW_OPERATION = "The hub asks again with a new operation"
TOO_SHORT = "credentials.expires_in: must be a number of seconds, at least 5"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[ProvWorld]:
    w = ProvWorld(tmp_path / "world", retry_after=0.2)
    yield w
    w.stop()


def last_error(status: dict[str, Any]) -> dict[str, Any] | None:
    return status["provisioning"]["last_error"]  # type: ignore[no-any-return]


def unusable_credentials(world: ProvWorld, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The platform issues credentials that expire in 1 s (the hub refuses them) while the
    returned set is not empty: clear it to fix the platform."""
    broken = {"broken"}
    issue = world.provisioning._issue

    def short(*args: Any, **kwargs: Any) -> dict[str, Any]:
        issued = issue(*args, **kwargs)
        if broken:
            issued["expires_in"] = 1
        return issued

    monkeypatch.setattr(world.provisioning, "_issue", short)
    return broken


def test_an_approval_the_hub_cannot_use_is_asked_again_with_a_new_operation(
        world: ProvWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the hub kept the approved operation, and the platform answers it the same way
    every time: provisioning-failed every retry_interval for good, restarts included, also
    after the platform was fixed, until a gatewayctl reset."""
    broken = unusable_credentials(world, monkeypatch)
    hub = start(world, tmp_path, "hub")
    try:
        first = until(world.pending, "the hub's operation")[0]["id"]
        world.ctl("platform", "approve", first)
        status = hub.wait(lambda s: last_error(s) is not None, "the approval refused")
        error = last_error(status)
        assert error is not None and error["code"] == "provisioning-failed", error
        assert f"{TOO_SHORT}. {NEW_OPERATION}, which needs a new approval." in error["reason"]
        assert hub.stored()["cloud"] is None
        broken.clear()  # the platform is fixed
        again = until(lambda: [op for op in world.pending() if op["id"] != first],
                      "a new operation from the hub")
        world.ctl("platform", "approve", again[0]["id"])
        status = hub.wait(lambda s: s["state"] == "online", "the hub online")
        assert last_error(status) is None
        registration = hub.stored()["registration"]
        assert registration is not None and registration.device_id == HUB_ID
        assert registration.expires_at is not None
    finally:
        hub.stop()


def test_an_enrollment_the_hub_cannot_use_is_asked_again_and_enrolls_once_revoked(
        world: ProvWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the hub kept the enrollment, answered the same way every time: revoking the
    device on the platform did not help either."""
    broken = unusable_credentials(world, monkeypatch)
    # Long enough for the failure to be seen before the next attempt replaces it.
    hub = start(world, tmp_path, "hub", "enroll", retry_interval=3)
    try:
        status = hub.wait(lambda s: last_error(s) is not None, "the enrollment refused")
        error = last_error(status)
        assert error is not None and error["code"] == "provisioning-failed", error
        assert f"{TOO_SHORT}. {NEW_OPERATION} (a platform that keeps the serial enrolled " \
               "refuses it until the device is revoked there)." in error["reason"]
        broken.clear()
        status = hub.wait(lambda s: (last_error(s) or {}).get("code") == "already-enrolled",
                          "the fresh enrollment refused as enrolled", 60)
        assert "revoke the device there" in last_error(status)["reason"]  # type: ignore[index]
        world.ctl("platform", "revoke", HUB_ID)
        status = hub.wait(lambda s: s["state"] == "online", "the hub online", 60)
        assert last_error(status) is None
        assert hub.stored()["registration"].mode == "enroll"
    finally:
        hub.stop()


def test_the_simulator_refuses_a_registration_lifetime_the_hub_would_refuse(
        world: ProvWorld, tmp_path: Path) -> None:
    """Before: any lifetime above 0 was taken, and approving with 1 s issued credentials no
    hub accepts (provisioning-failed, and the hub stuck on that operation)."""
    hub = start(world, tmp_path, "hub")
    try:
        op = until(world.pending, "the hub's operation")[0]["id"]
        world.settings(registration_lifetime=1)
        refused = world.ctl("platform", "approve", op, check=False)
        assert refused.returncode != 0
        assert (f"{world.platform.responses if world.platform else ''}: provisioning: "
                "registration_lifetime: must be a number of seconds, at least 5 and at most "
                "315360000, got 1") in refused.stdout + refused.stderr
        assert [o["state"] for o in world.operations()] == ["pending"]  # nothing changed
        world.settings(registration_lifetime=20)
        world.ctl("platform", "approve", op)
        status = hub.wait(lambda s: s["state"] == "online", "the hub online")
        assert last_error(status) is None and status["provisioning"]["attempts"] == 1
    finally:
        hub.stop()
