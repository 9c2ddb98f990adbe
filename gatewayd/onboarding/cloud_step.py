"""Onboarding's cloud step, on top of the cloud link."""

from __future__ import annotations

import logging

from gatewayd.cloud.link import CloudLink
from gatewayd.cloud.net import CloudOutcome
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


class CloudLinkStep:
    """Connects the link with new credentials and reports the outcome onboarding needs.

    Transient failures (DNS, TCP, TLS) are retried within the attempt's time: the
    network may have come up a moment ago. The reason reported is the latest one.
    """

    def __init__(self, link: CloudLink, store: StateStore, ownership: Ownership) -> None:
        self.link = link
        self.store = store
        self.ownership = ownership

    async def connect(self, creds: CloudCredentials, timeout: float) -> StepResult:
        pending = self.store.state.release
        if pending is not None:
            # A reset while offline left the old account to release; the successful
            # pairing that follows drops it from the state, released or not.
            await self.ownership.release_pending(pending, creds)
        await self.link.stop()
        await self.link.start(creds)
        result = await self.link.wait_result(timeout, first_only=False)
        if result.outcome == CloudOutcome.CONNECTED:
            return StepResult(True)
        await self.link.stop()
        return StepResult(False, _FAILURES[result.outcome], result.reason)

    async def disconnect(self) -> None:
        await self.link.stop()
