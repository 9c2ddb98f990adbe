"""The two exchanges with the provisioning endpoint: a token operation, an enrollment.

Each ends in :class:`Outcome`: the issued account (opened and validated, not yet stored:
the cloud step proves it first) or a failure code from
:class:`gatewayd.onboarding.steps.Failure` with a reason a person can act on, and how long
the hub waits before the next attempt. The operation (id and key) is stored before the
first message goes out, so a hub restarted at any moment resumes the same operation.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gatewayd.cloud.attempts import CloudOutcome, CloudResult
from gatewayd.cloud.endpoint import Endpoint, Opener
from gatewayd.config import Config, ProvisioningConfig
from gatewayd.identity import Identity
from gatewayd.onboarding.steps import Failure
from gatewayd.provisioning import codec
from gatewayd.provisioning.channel import ChannelError, ProvisioningChannel
from gatewayd.state import Operation, StateStore

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 15.0  # for one answer
MAX_POLL_DELAY = 60.0
MAX_WAIT = 7 * 86400.0  # a platform that never says "expired": the hub gives up after this
BUSY_WAIT = 5.0  # after a 429 or 5xx without retry_after
MAX_SERVER_ERRORS = 5  # 5xx answers in a row that end the attempt
# A standing refusal (the serial is enrolled already) stays until someone on the platform
# frees the serial: asked again after retry_interval, doubling up to this, 75-100 % of it.
STANDING_MAX = 900.0


@dataclass(frozen=True)
class Outcome:
    issued: codec.Issued | None = None
    failure: Failure | None = None
    reason: str = ""
    # True: wait [provisioning] retry_interval before the next attempt; False: a new
    # operation at once, the first time in a row (then backing off up to retry_interval)
    retry: bool = True


@dataclass
class FlowProgress:
    """What the flow shows while it runs (status, panel, BLE, journal)."""

    state: str = "idle"  # idle, connecting, waiting, approved, registered, failed
    operation: str | None = None
    verification_code: str | None = None
    expires_at: float | None = None  # wall clock, of the operation


def standing_max(cfg: ProvisioningConfig) -> float:
    """The longest wait between attempts the platform refuses for a standing reason."""
    return max(cfg.retry_interval, STANDING_MAX)


def _fail(failure: Failure, reason: str, *, retry: bool = True) -> Outcome:
    return Outcome(failure=failure, reason=reason, retry=retry)


class Flows:
    """Runs one attempt of the configured mode (``token`` or ``enroll``)."""

    def __init__(self, config: Config, store: StateStore, identity: Identity, *,
                 serial: str, rng: random.Random | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 opener: Opener | None = None) -> None:
        self.config = config
        self._opener = opener  # for the channel's connections (gatewayd.cloud.endpoint)
        self._sleep = sleep
        self.cfg = config.provisioning
        self.store = store
        self.identity = identity
        self.serial = serial
        self.progress = FlowProgress()
        self._rng = rng or random.SystemRandom()

    def _show(self, **changes: Any) -> None:
        """What status, the panel and BLE read next time they ask."""
        for key, value in changes.items():
            setattr(self.progress, key, value)

    def _operation(self) -> Operation:
        op = self.store.state.operation
        if op is None:
            op_id, key = codec.new_operation()
            op = Operation(op_id, key, time.time())
            self.store.begin_operation(op)  # before anything leaves the hub
        return op

    def _describe_hub(self, op: Operation) -> dict[str, Any]:
        hub = self.config.hub
        return {"operation": op.id, "public_key": codec.b64(codec.public_key(op.key)),
                "device_id": self.identity.device_id, "model": hub.product,
                "firmware": {"name": hub.fw_name, "version": hub.fw_version},
                "mac": self.identity.mac, "serial": self.serial}

    async def run(self) -> Outcome:
        if self.cfg.mode == "enroll":
            return await self._enroll()
        return await self._token()

    async def _session(self, user: str, password: str, op: Operation,
                       refused: Failure) -> ProvisioningChannel | Outcome:
        tls = self.cfg.mqtts_port != 0
        endpoint = Endpoint(self.cfg.host, self.cfg.mqtts_port if tls else self.cfg.port, tls,
                            self.config.cloud.ca_file)
        channel = ProvisioningChannel(endpoint, user, password, op.id, self.config.cloud,
                                      opener=self._opener)
        self._show(state="connecting", operation=op.id)
        # As long as the cloud link would try to reach its broker ([cloud] connect_timeout).
        try:
            result = await channel.open(self.config.cloud.connect_timeout)
        except BaseException:
            # A reset or a stop cancelled the attempt: left open, the session would go on
            # reconnecting with the provisioning token, one more for every reset.
            await channel.close()
            raise
        if result.outcome == CloudOutcome.CONNECTED:
            return channel
        await channel.close()
        if result.credentials_refused:
            what = ("provisioning token" if refused == Failure.WRONG_PROVISIONING_TOKEN
                    else "template id or enroll password")
            return _fail(refused, f"The platform's provisioning endpoint {endpoint} refused "
                                  f"this hub's {what}. Check the preset in [provisioning].")
        if result.outcome == CloudOutcome.REFUSED:
            return _fail(Failure.PLATFORM_UNREACHABLE, _broker_refusal(endpoint, result))
        return _fail(Failure.PLATFORM_UNREACHABLE,
                     f"The platform's provisioning endpoint is unreachable: {result.reason}")

    # ---- token mode -------------------------------------------------------------------------

    async def _token(self) -> Outcome:
        op = self._operation()
        code = codec.verification_code(op.id, codec.public_key(op.key))
        self._show(state="connecting", operation=op.id, verification_code=code)
        session = await self._session(codec.token_user(self.cfg.token), self.cfg.token, op,
                                      Failure.WRONG_PROVISIONING_TOKEN)
        if isinstance(session, Outcome):
            return session
        try:
            return await self._operate(session, op, code)
        except ChannelError as exc:
            return _fail(Failure.PLATFORM_UNREACHABLE, f"The platform stopped answering: {exc}")
        finally:
            await session.close()

    async def _ask(self, channel: ProvisioningChannel, action: str,
                   data: dict[str, Any]) -> codec.Answer | Outcome:
        """One request, asked again while the platform says it is busy (429, 5xx): the
        operation and its code stay; :data:`MAX_SERVER_ERRORS` 5xx in a row end the
        attempt (platform-unreachable), keeping the operation for the next one."""
        errors = 0
        while True:
            answer = await channel.request(action, data, REQUEST_TIMEOUT)
            if answer.status == 1 or not (answer.code == 429 or 500 <= answer.code < 600):
                return answer
            said = (f"{answer.code} ({answer.error or 'no error code'}: "
                    f"{answer.message or 'no details'})")
            if answer.code != 429:
                errors += 1
                if errors >= MAX_SERVER_ERRORS:
                    return _fail(Failure.PLATFORM_UNREACHABLE, (
                        f"The platform answered {action!r} with {said} {errors} times in a "
                        "row; the hub asks about the same operation next time."))
            # Its retry_after, clamped, a little later for some hubs than for others.
            wait = _seconds(answer.data.get("retry_after"), BUSY_WAIT)
            log.info("provisioning: the platform answered %s %s; asking again in %.1f s",
                     action, said, wait)
            await self._sleep(wait * self._rng.uniform(1.0, 1.2))

    async def _operate(self, channel: ProvisioningChannel, op: Operation,
                       code: str) -> Outcome:
        answer: codec.Answer | Outcome = await self._ask(channel, "start",
                                                         self._describe_hub(op))
        deadline = time.monotonic() + MAX_WAIT
        polls = 0
        announced = False
        while True:
            if isinstance(answer, Outcome):
                return answer
            if answer.status != 1:
                return self._refused(answer)
            data = answer.data
            state = data.get("state")
            if state == "approved":
                return self._approved(op, data.get("credentials"))
            if state == "rejected":
                self.store.begin_operation(None)
                reason = data.get("reason") if isinstance(data.get("reason"), str) else ""
                return _fail(Failure.PROVISIONING_REJECTED,
                             "The platform rejected this hub's provisioning operation"
                             + (f": {reason[:200]}" if reason else "."))
            if state == "expired" or time.monotonic() > deadline:
                self.store.begin_operation(None)
                return _fail(Failure.OPERATION_EXPIRED, "Nobody approved the provisioning "
                             "operation in time; the hub starts a new one.", retry=False)
            if state != "pending":
                return _fail(Failure.PROVISIONING_FAILED,
                             f"The platform answered an unknown operation state {state!r}.")
            theirs = data.get("verification_code")
            if theirs is not None and theirs != code:
                # The platform holds another key than this hub's: someone in between.
                self.store.begin_operation(None)
                return _fail(Failure.PROVISIONING_FAILED, (
                    f"The platform shows the verification code {str(theirs)[:16]!r}, but "
                    f"this hub's is {code}: the operation is not this hub's. Not approved."))
            retry_after = _seconds(data.get("retry_after"), 5.0)
            if data.get("expires_in") is not None:  # null: no expiry named, as when absent
                expires_in = codec.seconds(data["expires_in"])
                if expires_in is None:  # NaN would reach status as invalid JSON
                    return _fail(Failure.PROVISIONING_FAILED, "The platform's answer is "
                                 "unusable: expires_in: must be a number of seconds.")
                self.progress.expires_at = time.time() + expires_in
            self._show(state="waiting")
            if not announced:
                log.info("provisioning: operation %s waits for approval on the platform; "
                         "verification code %s", op.id, code)
                announced = True
            await self._sleep(self._poll_delay(retry_after, polls))
            polls += 1
            answer = await self._ask(channel, "poll", {"operation": op.id})

    def _poll_delay(self, retry_after: float, polls: int) -> float:
        """The platform's retry-after, growing slowly while nothing happens, jittered so a
        batch of hubs does not poll in step."""
        ceiling = max(retry_after, min(MAX_POLL_DELAY, retry_after * 8))
        # The exponent stops where the ceiling is reached anyway (8 < 1.25 ** 10): a
        # technician who approves tomorrow is poll 3000 or so, and 1.25 ** 3180 overflows.
        return min(ceiling, retry_after * 1.25 ** min(polls, 16)) * self._rng.uniform(0.9, 1.1)

    def _approved(self, op: Operation, box: Any) -> Outcome:
        try:
            issued = codec.issued_from(codec.open_sealed(op.key, op.id, box))
        except codec.CodecError as exc:
            # Dropped, in both modes: the platform answers this operation the same way every
            # time (its sealed answer, docs/provisioning.md), so keeping it would fail for
            # good, also once the platform is fixed. A new operation is a fresh request, as
            # AWS IoT fleet provisioning or Azure DPS expect after a failed one (enroll mode:
            # "already-enrolled" until the platform frees the serial, which says so).
            self.store.begin_operation(None)
            after = (" (a platform that keeps the serial enrolled refuses it until the device "
                     "is revoked there)." if self.cfg.mode == "enroll"
                     else ", which needs a new approval.")
            return _fail(Failure.PROVISIONING_FAILED, (
                f"The platform's answer is unusable: {str(exc).rstrip('.')}. The hub asks "
                f"again with a new operation{after}"))
        if issued.device_id != self.identity.device_id:
            if self.cfg.mode == "enroll":
                # Kept: the serial is enrolled now, and only this operation gets the same
                # answer again (a new one would be "already enrolled" from now on).
                names = f"the template registered the serial {self.serial!r} under"
            else:
                self.store.begin_operation(None)
                names = "the provisioning token names"
            return _fail(Failure.PROVISIONING_FAILED, (
                f"The platform issued the device id {issued.device_id!r}, but this hub is "
                f"{self.identity.device_id!r}: preset [hub] device_id to the id {names}."))
        self._show(state="approved")
        return Outcome(issued=issued)

    def _refused(self, answer: codec.Answer) -> Outcome:
        error = answer.error
        message = answer.message or "no details"
        if error == "unknown-operation":
            self.store.begin_operation(None)
            return _fail(Failure.OPERATION_EXPIRED, "The platform no longer knows this "
                         "operation; the hub starts a new one.", retry=False)
        if error == "unknown-serial":
            self.store.begin_operation(None)
            return _fail(Failure.UNKNOWN_SERIAL, f"The platform does not know this hub's "
                                                 f"serial number {self.serial!r}: {message}")
        if error == "already-enrolled":
            self.store.begin_operation(None)
            return _fail(Failure.ALREADY_ENROLLED, (
                f"The serial number {self.serial!r} is enrolled already ({message}). It "
                "enrolls again only once the platform frees it: revoke the device there "
                "(simulator: gatewayctl --sim DIR platform revoke DEVICE). Until then the "
                f"hub asks again less and less often, at most {standing_max(self.cfg) / 60:g} "
                "min apart."))
        if error == "rejected":
            self.store.begin_operation(None)
            return _fail(Failure.PROVISIONING_REJECTED, f"The platform rejected this hub: "
                                                        f"{message}")
        # Whatever the platform holds against this operation (an id taken under another
        # token, say), the next attempt starts a new one rather than repeating it.
        self.store.begin_operation(None)
        error = error or "no error code"
        return _fail(Failure.PROVISIONING_FAILED, f"The platform refused the request "
                                                  f"(code {answer.code}, {error}): {message}")

    # ---- enroll mode ------------------------------------------------------------------------

    async def _enroll(self) -> Outcome:
        if not self.serial:
            return _fail(Failure.NO_SERIAL, "This hub has no serial number to enroll with: "
                         "/proc/cpuinfo has none; set [provisioning] serial.")
        op = self._operation()
        session = await self._session(codec.enroll_user(self.cfg.template),
                                      self.cfg.enroll_password, op,
                                      Failure.WRONG_ENROLL_PASSWORD)
        if isinstance(session, Outcome):
            return session
        try:
            data = {**self._describe_hub(op), "template": self.cfg.template}
            answer = await self._ask(session, "enroll", data)
        except ChannelError as exc:
            return _fail(Failure.PLATFORM_UNREACHABLE, f"The platform stopped answering: {exc}")
        finally:
            await session.close()
        if isinstance(answer, Outcome):
            return answer
        if answer.status != 1:
            return self._refused(answer)
        return self._approved(op, answer.data.get("credentials"))


def _broker_refusal(endpoint: Endpoint, result: CloudResult) -> str:
    """A refusal that is not of the token or password, said for the provisioning session
    (the cloud link's words name its own settings, not this session's)."""
    if "client id" in result.reason:
        # The operation id is the client id: 32 characters, and MQTT only obliges a broker
        # to take 23 (docs/provisioning.md, "Limits").
        return (f"The platform's provisioning endpoint {endpoint} refused the operation id "
                "as MQTT client id (32 characters; MQTT obliges a broker to accept 23 only): "
                "the endpoint must accept it. The hub tries again.")
    detail = result.reason.removeprefix(f"broker {endpoint} ")
    return (f"The platform's provisioning endpoint {endpoint} {detail}; the hub tries "
            "again.")


def _seconds(value: Any, default: float) -> float:
    number = codec.seconds(value)
    return default if number is None else min(max(number, 0.05), MAX_POLL_DELAY)
