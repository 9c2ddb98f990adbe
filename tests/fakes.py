"""Test doubles shared by the suite: stand-ins at our own boundaries, never in the package."""

from __future__ import annotations

from gatewayd.credentials import CloudCredentials
from gatewayd.onboarding.steps import StepResult


class StubCloud:
    """Stands in for the cloud link: succeeds unless told to fail (tests, early simulator)."""

    def __init__(self) -> None:
        self.next_failure: StepResult | None = None
        self.connected: CloudCredentials | None = None

    async def connect(self, creds: CloudCredentials, timeout: float) -> StepResult:
        if self.next_failure is not None:
            return self.next_failure
        self.connected = creds
        return StepResult(ok=True)

    async def disconnect(self) -> None:
        self.connected = None
