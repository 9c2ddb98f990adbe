"""Provisioning as onboarding sees it, and the keeper of what it issued.

:class:`Provisioner` is onboarding's provisioning step
(:class:`gatewayd.onboarding.steps.ProvisioningStep`): :meth:`~Provisioner.obtain` runs one
exchange with the platform (:mod:`~gatewayd.provisioning.flows`) and hands the issued
account to the cloud step; :meth:`~Provisioner.commit` stores it once the cloud step proved
it (credentials, device id and expiry in one atomic write).

Once online it keeps the registration alive: a token-mode registration is refreshed over
REQ/RES (``provisioning/refresh``) when about :data:`REFRESH_FRACTION` of its lifetime has
passed; the new token is stored, then the link reconnects quietly with it (DISCONNECT, so
no will: the retained ``ready`` stays). When the broker refuses the stored registration
(revoked, or expired while the hub was away) the hub goes back to provisioning with the
reason (:meth:`Deprovision.registration_lost`).

A hub without a real-time clock (a Raspberry Pi) boots with fake-hwclock's last saved time,
or 1970, and NTP steps its wall clock later. So the keeper times on the monotonic clock what
it can (a registration received during this run, a retry's wait), reads the wall clock only
for a registration from ``state.json``, and looks at it again at least every :data:`LOOK`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

from gatewayd.cloud.attempts import CloudOutcome, CloudResult
from gatewayd.cloud.endpoint import Opener
from gatewayd.cloud.link import CloudLink
from gatewayd.cloud.reqres import PlatformError
from gatewayd.config import Config
from gatewayd.credentials import CloudCredentials
from gatewayd.identity import Identity
from gatewayd.onboarding.conclusion import STORAGE_FAILED_REASON
from gatewayd.onboarding.progress import Progress
from gatewayd.onboarding.steps import Failure, StepResult
from gatewayd.onboarding.table import State
from gatewayd.provisioning import codec
from gatewayd.provisioning.flows import FlowProgress, Flows, Outcome, standing_max
from gatewayd.runtime.backoff import backoff_delay
from gatewayd.state import Registration, StateStore

log = logging.getLogger(__name__)

REFRESH_FRACTION = 0.5  # of the registration's lifetime, counted from its issue
# A batch approved together would otherwise refresh in the same second, every time.
REFRESH_JITTER = (0.9, 1.1)  # times REFRESH_FRACTION, drawn once per registration
REFRESH_TIMEOUT = 15.0  # at most; less when the token has less time left, down to:
# A round trip through the broker over a slow uplink (cellular, a congested Wi-Fi) takes
# seconds: a shorter wait fails every time. A registration that looks expired (stamped by
# a clock that was behind, or judged by one that is ahead) would otherwise get 1 s, and
# never be refreshed; one that really has little left gets fewer tries, each able to work.
REFRESH_TIMEOUT_FLOOR = 10.0
# The keeper looks at the wall clock at least this often. Its waits run on the monotonic
# clock, which NTP's step of the wall clock (at boot, on a hub without a real-time clock)
# does not move: a wait computed 10 h behind would otherwise end 10 h late, the token
# expired. Once a minute costs one wake-up; a registration lives minutes to days.
LOOK = 60.0
RESTART_MIN = 1.0  # the second new operation in a row waits 50-100 % of this, doubling
MIN_RETRY = 1.0  # a failed refresh is retried after 50-100 % of this, doubling, at most
# a quarter of the lifetime
# Refusals only someone's action ends: asked about less and less often (retry_delay).
STANDING = frozenset({Failure.ALREADY_ENROLLED, Failure.UNKNOWN_SERIAL, Failure.NO_SERIAL,
                      Failure.WRONG_PROVISIONING_TOKEN, Failure.WRONG_ENROLL_PASSWORD})
UNEXPECTED_REASON = ("The provisioning attempt failed unexpectedly; the hub's log has the "
                     "details (journalctl -u gatewayd).")


class Deprovision(Protocol):
    """What the keeper needs of the onboarding machine."""

    @property
    def online(self) -> bool: ...

    def subscribe(self, listener: Callable[[State, Progress], None]) -> None: ...

    async def registration_lost(self, failure: Failure, reason: str) -> None: ...


class Provisioner:
    def __init__(self, config: Config, store: StateStore, identity: Identity,
                 link: CloudLink, *, serial: str,
                 secrets_sink: Callable[..., None] = lambda *s: None,
                 rng: random.Random | None = None, opener: Opener | None = None,
                 clock: Callable[[], float] = time.time, look: float = LOOK) -> None:
        self.config = config
        self.mode = config.provisioning.mode
        self.store = store
        self.link = link
        self.serial = serial
        self._secrets = secrets_sink
        self._rng = rng or random.SystemRandom()
        self._clock = clock  # the wall clock: what registrations are stamped with
        self._look = look  # LOOK; a test's keeper looks more often
        # The channel's connections go as the link's (gatewayd.cloud.endpoint).
        self.flows = Flows(config, store, identity, serial=serial, rng=self._rng,
                           opener=opener)
        self.onboarding: Deprovision | None = None  # follow(): the machine is built later
        self._issued: codec.Issued | None = None
        self._last: Outcome | None = None  # the latest attempt's, for its retry delay
        # What status shows: the latest failure, kept until provisioning succeeds (commit).
        self._error: tuple[Failure, str] | None = None
        self._wake = asyncio.Event()
        self._lost_for: CloudCredentials | None = None  # reported once per registration
        # The registration received during this run, and when (monotonic): see _age().
        self._received: tuple[Registration, float] | None = None
        self._restarts = 0  # attempts in a row that ended "start a new operation at once"
        self._standing = 0  # attempts in a row the platform refused for a standing reason
        self.refreshes = 0
        self.refresh_failures = 0
        self.last_refresh: float | None = None
        self.attempts = 0
        link.add_listener(self._on_link)

    # ---- the onboarding step -----------------------------------------------------------------

    async def obtain(self) -> tuple[StepResult, CloudCredentials | None]:
        self.attempts += 1
        self._issued = None
        try:
            outcome = await self.flows.run()
        except OSError as exc:  # the operation could not be stored: nothing left the hub
            log.error("provisioning: cannot store the operation: %s", exc.strerror or exc)
            outcome = Outcome(failure=Failure.STORAGE_FAILED, reason=STORAGE_FAILED_REASON)
        except Exception:  # status must not show a code that nobody polls any more
            # The exception's text is a library's (or a bug's): the log has it, status not.
            log.exception("provisioning: the attempt failed")
            outcome = Outcome(failure=Failure.PROVISIONING_FAILED, reason=UNEXPECTED_REASON)
        self._last = outcome
        if outcome.issued is None:
            assert outcome.failure is not None
            self._failed(outcome.failure, outcome.reason)
            return StepResult(False, outcome.failure, outcome.reason), None
        self._secrets(outcome.issued.cloud.token)
        self._issued = outcome.issued
        return StepResult(True), outcome.issued.cloud

    def commit(self, cloud: CloudCredentials) -> None:
        issued = self._issued
        assert issued is not None and issued.cloud == cloud
        now = self._clock()
        expires = now + issued.expires_in if issued.expires_in is not None else None
        reg = Registration(self.mode, issued.device_id, now, expires)
        state = self.store.commit_provisioned(cloud, reg)
        self._received = (reg, time.monotonic())
        log.info("provisioned: %s", state.redacted())
        self.flows.progress = FlowProgress(state="registered")
        self._last = None
        self._error = None
        self._lost_for = None
        self._wake.set()

    def failed(self, result: StepResult) -> None:
        """The attempt failed after :meth:`obtain` handed over an account: the cloud step
        did not prove it, or it could not be stored. The hub is not provisioned."""
        assert result.failure is not None
        self._issued = None
        self._failed(result.failure, result.reason)

    def _failed(self, failure: Failure, reason: str) -> None:
        self._error = (failure, reason)
        self.flows.progress.state = "failed"

    def retry_delay(self) -> float:
        """How long the next attempt waits after the latest one failed."""
        interval = self.config.provisioning.retry_interval
        if self._last is not None and self._last.failure in STANDING:
            # Asking again changes nothing until someone acts (the platform frees the
            # serial, the vendor fixes the preset): not every retry_interval for days, from
            # every hub of a batch.
            self._standing += 1
            return backoff_delay(self._standing - 1, interval,
                                 standing_max(self.config.provisioning), self._rng, floor=0.75)
        self._standing = 0
        if self._last is not None and not self._last.retry:
            # A new operation at once, once: a platform that forgets every operation (or
            # expires it at once) must not be asked again and again in a tight loop.
            self._restarts += 1
            if self._restarts == 1:
                return 0.0
            return backoff_delay(self._restarts - 2, RESTART_MIN, interval, self._rng,
                                 floor=0.5)
        self._restarts = 0
        return interval * self._rng.uniform(0.75, 1.0)

    # ---- what front ends show ----------------------------------------------------------------

    @property
    def verification_code(self) -> str | None:
        """The code to compare with the platform's, while an operation waits for it."""
        p = self.flows.progress
        return p.verification_code if p.state in ("connecting", "waiting") else None

    def view(self) -> dict[str, Any]:
        """The short form BLE and the panel show: the mode, what it does, the code."""
        state = "registered" if self.store.state.registration is not None \
            else self.flows.progress.state
        return {"mode": self.mode, "state": state,
                "verification_code": self.verification_code}

    def status(self) -> dict[str, Any]:
        """``provisioning`` in ``gatewayctl status``: never a token or password."""
        p = self.flows.progress
        st = self.store.state
        reg = st.registration
        error = self._error
        return {
            "mode": self.mode, "state": "registered" if reg is not None else p.state,
            "operation": p.operation if reg is None else None,
            "verification_code": self.verification_code,
            "operation_expires_at": p.expires_at if reg is None else None,
            "serial": self.serial or None, "attempts": self.attempts,
            "last_error": ({"code": str(error[0]), "reason": error[1]}
                           if error is not None else None),
            "registration": ({"device_id": reg.device_id, "issued_at": reg.issued_at,
                              "expires_at": reg.expires_at} if reg is not None else None),
            "refreshes": self.refreshes, "refresh_failures": self.refresh_failures,
            "last_refresh": self.last_refresh,
        }

    # ---- the keeper --------------------------------------------------------------------------

    def follow(self, onboarding: Deprovision) -> None:
        """The keeper refreshes only while ``onboarding`` is online, and hears it enter
        ``online``: at boot the link connects just before that, and a refresh due then
        must not wait for the next reconnect."""
        self.onboarding = onboarding
        onboarding.subscribe(self._on_onboarding)

    def _on_onboarding(self, state: State, progress: Progress) -> None:
        del progress
        if state == State.ONLINE:  # told as it enters it: run() then finds it online
            self._wake.set()

    def _age(self, reg: Registration) -> float:
        """Seconds since ``reg`` was issued. One received during this run is timed on the
        monotonic clock, which no step of the wall clock moves; one read from state.json
        has only its wall-clock stamps, right once the clock is right both when it was
        stamped and now (a registration stamped before NTP set the clock looks older or
        younger than it is until the next refresh stamps it again)."""
        if self._received is not None and self._received[0] == reg:
            return time.monotonic() - self._received[1]
        return self._clock() - reg.issued_at

    def _on_link(self, result: CloudResult) -> None:
        if result.outcome == CloudOutcome.CONNECTED:
            self._wake.set()
            return
        st = self.store.state
        # Only a refusal of the credentials speaks of the registration; any other (a
        # client id, a server that moved, a ban) is the broker's, and the link retries.
        if not result.credentials_refused or st.registration is None \
                or self.link.credentials != st.cloud or self._lost_for == st.cloud:
            return
        self._lost_for = st.cloud
        reg = st.registration
        expired = reg.expires_at is not None \
            and self._age(reg) >= reg.expires_at - reg.issued_at
        failure = Failure.REGISTRATION_EXPIRED if expired else Failure.REGISTRATION_REVOKED
        reason = ("This hub's registration expired before it could be refreshed"
                  if expired else "The platform revoked this hub's registration")
        reason += " (the broker refused it); the hub asks to be provisioned again."
        log.warning("provisioning: %s", reason)
        self._last = Outcome(failure=failure, reason=reason, retry=False)
        self._error = (failure, reason)
        self.flows.progress = FlowProgress(state="failed")
        if self.onboarding is not None:
            asyncio.get_running_loop().create_task(
                self.onboarding.registration_lost(failure, reason), name="deprovision")

    async def run(self) -> None:
        """Refresh the registration token before it expires, for as long as the hub runs."""
        failures = 0
        # After a failed refresh (monotonic: a step of the wall clock must not move it):
        # drawn once, not again at every wake-up.
        retry_at = 0.0
        share: tuple[Registration | None, float] = (None, REFRESH_FRACTION)  # and its draw
        while True:
            self._wake.clear()
            reg = self.store.state.registration
            if reg is None or reg.expires_at is None:
                await self._wake.wait()
                continue
            if share[0] != reg:  # a new registration: its own draw, no failures yet
                share = (reg, REFRESH_FRACTION * self._rng.uniform(*REFRESH_JITTER))
                failures = 0
            lifetime = reg.expires_at - reg.issued_at
            delay = (retry_at - time.monotonic() if failures
                     else share[1] * lifetime - self._age(reg))
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(delay, self._look))
                continue  # woken (a new registration, a connect), due, or a look: again
            if not (self.link.connected and self.onboarding is not None
                    and self.onboarding.online):
                await self._wake.wait()  # refreshed on the next connect, or once online
                continue
            try:
                refreshed = await self._refresh(reg)
            except Exception:  # a bug or a library's surprise: this task must go on
                log.exception("provisioning: refreshing the registration token failed")
                self.refresh_failures += 1
                refreshed = False
            if refreshed:
                failures = 0
            else:
                failures += 1
                retry_at = time.monotonic() + backoff_delay(failures, MIN_RETRY, lifetime / 4,
                                                            self._rng, floor=0.5)

    async def _refresh(self, reg: Registration) -> bool:
        current = self.store.state.cloud
        assert current is not None
        private = codec.new_operation()[1]
        nonce = os.urandom(16)
        public = codec.public_key(private)
        data = {"public_key": codec.b64(public), "nonce": codec.b64(nonce),
                "proof": codec.refresh_proof(current.token, nonce, public)}
        try:
            left = (reg.expires_at or 0) - reg.issued_at - self._age(reg)
            # Time to try again, but never less than a slow uplink needs (above).
            timeout = min(REFRESH_TIMEOUT, max(REFRESH_TIMEOUT_FLOOR, left / 3))
            answer = await self.link.platform.request(codec.REFRESH_ENDPOINT, data,
                                                      timeout=timeout)
            box = answer.get("credentials") if isinstance(answer, dict) else None
            issued = codec.issued_from(codec.open_sealed(private, f"refresh {nonce.hex()}",
                                                         box))
            if issued.device_id != reg.device_id or issued.expires_in is None:
                raise codec.CodecError("credentials: another device id, or no expiry")
        except (PlatformError, codec.CodecError) as exc:
            self.refresh_failures += 1
            log.warning("provisioning: refreshing the registration token failed: %s", exc)
            return False
        self._secrets(issued.cloud.token)
        if self.store.state.cloud != current:
            return True  # reset or revoked meanwhile: nothing to renew any more
        now = self._clock()
        assert issued.expires_in is not None
        renewed = Registration(reg.mode, reg.device_id, now, now + issued.expires_in)
        try:
            self.store.renew_registration(issued.cloud, renewed)
        except OSError as exc:  # the current token stays valid until it expires
            self.refresh_failures += 1
            log.error("provisioning: cannot store the refreshed registration token: %s",
                      exc.strerror or type(exc).__name__)
            return False
        self._received = (renewed, time.monotonic())
        self.refreshes += 1
        self.last_refresh = now
        log.info("provisioning: registration token refreshed (valid for %.0f s); "
                 "reconnecting with it", issued.expires_in)
        # Quietly: DISCONNECT (no will, so the retained "ready" stays), then the new token.
        await self.link.stop(goodbye=False)
        if self.store.state.cloud == issued.cloud:  # not reset while stopping
            await self.link.start(issued.cloud)
        return True
