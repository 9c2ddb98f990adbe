"""The registration keeper on a hub whose wall clock is wrong at boot.

A Raspberry Pi has no real-time clock: it boots with fake-hwclock's last saved time (or
1970), and NTP steps the clock once it reaches a time server. The keeper must refresh the
registration token before it expires all the same, and name what the broker refused
rightly. In-process with a wall clock the test steps (the keeper's ``clock``), and one
gatewayd process against the simulated platform (tests/provisioning_helpers.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatewayd.cloud.attempts import CloudOutcome, CloudResult
from gatewayd.cloud.reqres import PlatformError
from gatewayd.onboarding.steps import Failure
from gatewayd.provisioning import codec
from gatewayd.provisioning.service import Provisioner
from gatewayd.state import Registration, StateStore
from tests.helpers import run_async
from tests.provisioning_helpers import HUB_ID, ProvWorld, start
from tests.test_provisioning_recovery import (
    ACCOUNT,
    Online,
    OnlineLink,
    RefreshingPlatform,
    setup,
)

pytestmark = pytest.mark.timeout(240)

HOUR = 3600.0


class WallClock:
    """The hub's wall clock, ``offset`` seconds off the true time; the test steps it as NTP
    does. ``read`` is set whenever someone reads it."""

    def __init__(self, offset: float) -> None:
        self.offset = offset
        self.read = asyncio.Event()

    def __call__(self) -> float:
        self.read.set()
        return time.time() + self.offset


class AskedPlatform(RefreshingPlatform):
    """Tells when it was asked; answers only a request that waits ``latency`` seconds or
    more (a slow uplink: one that waits less gets no answer in time)."""

    def __init__(self, *faults: BaseException, latency: float = 0.0) -> None:
        super().__init__(*faults)
        self.latency = latency
        self.was_asked = asyncio.Event()

    async def request(self, endpoint: str, data: dict[str, Any],
                      timeout: float) -> dict[str, Any]:
        self.was_asked.set()
        if timeout < self.latency:
            self.asked += 1
            raise PlatformError(endpoint, f"no answer within {timeout:g} s")
        return await super().request(endpoint, data, timeout)


class ListenedLink(OnlineLink):
    """An online hub's link whose outcomes the test reports, as the real link does."""

    def add_listener(self, listener: Any) -> None:
        self.listener = listener


class Recorder(Online):
    def __init__(self) -> None:
        self.lost: list[Failure] = []

    async def registration_lost(self, failure: Failure, reason: str) -> None:
        self.lost.append(failure)


def keeper(tmp_path: Path, platform: RefreshingPlatform, clock: WallClock, *,
           issued: float, lifetime: float
           ) -> tuple[Provisioner, StateStore, ListenedLink]:
    """A hub online with a registration stamped ``issued`` (its own wall clock's time)."""
    cfg, store, identity = setup(tmp_path)
    store.commit_provisioned(ACCOUNT, Registration("token", HUB_ID, issued, issued + lifetime))
    link = ListenedLink(platform)
    provisioner = Provisioner(cfg, store, identity, link,  # type: ignore[arg-type]
                              serial="", clock=clock, look=0.05)
    provisioner.onboarding = Recorder()
    return provisioner, store, link


def renewed(provisioner: Provisioner, store: StateStore, platform: RefreshingPlatform
            ) -> None:
    """What status and state.json show of one successful refresh, the platform's latest
    answer (RefreshingPlatform issues tokens valid for 100 s)."""
    status = provisioner.status()
    assert (status["refreshes"], status["last_error"]) == (1, None)
    assert store.state.cloud is not None
    assert store.state.cloud.token == f"reg-token-{platform.asked + 1}"
    reg = store.state.registration
    assert reg is not None and reg.expires_at is not None
    assert reg.expires_at - reg.issued_at == 100


def test_a_refresh_hidden_by_a_clock_behind_comes_once_ntp_steps_it(tmp_path: Path) -> None:
    """Before: booted 10 h behind, the keeper waited until its refresh looked due: 10 h on
    the monotonic clock, which NTP's step does not shorten. The token expired meanwhile
    and the hub needed a technician's approval again."""
    clock = WallClock(-10 * HOUR)
    platform = AskedPlatform()
    now = time.time()  # the true time: the refresh is due (60 % of its lifetime passed)
    provisioner, store, link = keeper(tmp_path, platform, clock, issued=now - 60, lifetime=100)

    async def scenario() -> None:
        task = asyncio.create_task(provisioner.run())
        try:
            await asyncio.wait_for(clock.read.wait(), 10)  # the keeper looked, and waits
            assert platform.asked == 0  # not due yet by the clock it read
            clock.offset = 0.0  # NTP
            await asyncio.wait_for(link.restarted.wait(), 10)
        finally:
            task.cancel()

    run_async(scenario(), timeout=30)
    renewed(provisioner, store, platform)


def test_a_failed_refresh_is_tried_again_when_the_clock_steps_back(tmp_path: Path) -> None:
    """Before: the retry of a failed refresh was set for a wall-clock time, so NTP stepping
    back a clock an hour ahead put it off by that hour."""
    clock = WallClock(0.0)
    platform = AskedPlatform(PlatformError(codec.REFRESH_ENDPOINT, "busy"))
    now = time.time()
    provisioner, store, link = keeper(tmp_path, platform, clock, issued=now - 60, lifetime=100)

    async def scenario() -> None:
        task = asyncio.create_task(provisioner.run())
        try:
            await asyncio.wait_for(platform.was_asked.wait(), 10)  # refused: the retry waits
            clock.offset = -HOUR
            await asyncio.wait_for(link.restarted.wait(), 10)
        finally:
            task.cancel()

    run_async(scenario(), timeout=30)
    assert provisioner.status()["refresh_failures"] == 1
    renewed(provisioner, store, platform)


def test_a_registration_that_looks_expired_gets_time_for_its_answer(tmp_path: Path) -> None:
    """Before: a registration stamped while the clock was 3 years behind looked expired,
    and its refresh got 1 s for the answer: over an uplink slower than that, no refresh
    ever succeeded, and the token expired."""
    clock = WallClock(0.0)
    platform = AskedPlatform(latency=3.0)
    issued = time.time() - 3 * 365 * 24 * HOUR
    provisioner, store, link = keeper(tmp_path, platform, clock, issued=issued,
                                      lifetime=24 * HOUR)

    async def scenario() -> None:
        task = asyncio.create_task(provisioner.run())
        try:
            await asyncio.wait_for(link.restarted.wait(), 10)
        finally:
            task.cancel()

    run_async(scenario(), timeout=30)
    assert provisioner.status()["refresh_failures"] == 0
    renewed(provisioner, store, platform)


def test_a_registration_revoked_after_ntp_stepped_the_clock_is_named_revoked(
        tmp_path: Path) -> None:
    """Before: a hub booted in 1970 refreshed its token (stamped 1970 + 100 s); NTP then
    stepped the clock, and when the platform revoked the registration the hub said it had
    expired."""
    clock = WallClock(-(time.time() - 86400))  # 2 January 1970
    platform = AskedPlatform()
    issued = clock() - 60
    provisioner, _, link = keeper(tmp_path, platform, clock, issued=issued, lifetime=100)

    async def scenario() -> None:
        task = asyncio.create_task(provisioner.run())
        try:
            await asyncio.wait_for(link.restarted.wait(), 10)
        finally:
            task.cancel()
        clock.offset = 0.0  # NTP; then the platform revokes, and the broker refuses
        link.listener(CloudResult(CloudOutcome.REFUSED, "broker refused the credentials "
                                  "(not authorized)", credentials_refused=True))
        await asyncio.sleep(0)  # the deprovisioning task it started runs

    run_async(scenario(), timeout=30)
    assert isinstance(provisioner.onboarding, Recorder)
    assert provisioner.onboarding.lost == [Failure.REGISTRATION_REVOKED]
    error = provisioner.status()["last_error"]
    assert error["code"] == "registration-revoked"
    assert error["reason"].startswith("The platform revoked this hub's registration")


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
