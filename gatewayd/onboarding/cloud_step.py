"""Onboarding's cloud step, on top of the cloud link."""

from __future__ import annotations

import asyncio
import logging
import time

from gatewayd.cloud.attempts import CloudOutcome
from gatewayd.cloud.link import CloudLink
from gatewayd.cloud.ownership import Ownership
from gatewayd.credentials import CloudCredentials
from gatewayd.onboarding.steps import Failure, StepResult
from gatewayd.state import StateStore

log = logging.getLogger(__name__)

_FAILURES = {
    CloudOutcome.REFUSED: Failure.BROKER_REFUSED,
    CloudOutcome.UNREACHABLE: Failure.BROKER_UNREACHABLE,
    CloudOutcome.TIMEOUT: Failure.TIMEOUT,
}


# How long the hub waits to see its own first message come back through the broker.
PROOF_SECONDS = 10.0


class CloudLinkStep:
    """Connects the link with new credentials and reports the outcome onboarding needs.

    Transient failures (DNS, TCP, TLS) are retried within the attempt's time: the
    network may have come up a moment ago. The reason reported is the latest one. For an
    account a person has just typed in, a port that stays closed is an answer before that
    (a mistyped port); for any other it is a broker starting up, and waited out.

    A CONNACK is not enough: a broker whose ACL does not cover the root topic accepts the
    connection and silently drops everything the hub publishes. So the step succeeds only
    once the hub's own ``$state`` has come back to it live (subscribed before it was
    published, so a retained copy from another session cannot pass for it).
    """

    def __init__(self, link: CloudLink, store: StateStore, ownership: Ownership) -> None:
        self.link = link
        self.store = store
        self.ownership = ownership

    async def connect(self, creds: CloudCredentials, timeout: float, *,
                      typed_in: bool = False) -> StepResult:
        pending = self.store.state.release
        if pending is not None:
            # A reset while offline left the old account to release; the successful
            # pairing that follows drops it from the state, released or not.
            await self.ownership.release_pending(pending, creds)
        await self.link.stop()
        started = time.monotonic()
        await self.link.start(creds)
        echoed = asyncio.Event()
        state_topic = f"sweet-home/{self.link.hub.id}/$state"

        def echo(_topic: str, _payload: bytes, retained: bool) -> None:
            if not retained:
                echoed.set()

        # Before the connection is up: on_connected subscribes taps ahead of the announce.
        self.link.tap(state_topic, echo)
        try:
            result = await self.link.wait_result(timeout, first_only=False,
                                                 closed_is_answer=typed_in)
            if result.outcome != CloudOutcome.CONNECTED:
                await self.link.stop()
                return StepResult(False, _FAILURES[result.outcome], result.reason)
            left = max(1.0, min(PROOF_SECONDS, timeout - (time.monotonic() - started)))
            try:
                await asyncio.wait_for(echoed.wait(), left)
            except TimeoutError:
                log.warning("cloud link: connected, but nothing published under %r came "
                            "back within %g s", creds.root, left)
                await self.link.stop(goodbye=False)
                return StepResult(False, Failure.ROOT_TOPIC_REFUSED, (
                    f"The cloud broker accepted the account but not the hub's messages under "
                    f"the root topic \u201c{creds.root}\u201d. Check the root topic (rootTopic) "
                    "of the account, or leave it out."))
            return StepResult(True)
        finally:
            self.link.tap(state_topic, None)

    async def disconnect(self) -> None:
        await self.link.stop()
