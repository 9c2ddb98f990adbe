"""The onboarding machine of a hub whose account comes from the platform (token, enroll).

Same states, same table, same credential store as a paired hub
(:mod:`gatewayd.onboarding.machine`); what differs is who starts the cloud part. Whenever
the hub is ``unpaired`` with a network (Ethernet, or the Wi-Fi a person gave it through
Improv or the portal), it starts an attempt of its own, source ``provisioning``: step
``provisioning`` asks the platform (:class:`~gatewayd.onboarding.steps.ProvisioningStep`),
step ``cloud`` proves the issued account exactly as for a pairing, and only then is the
account committed, in one write. A failed attempt ends ``unpaired`` with its reason, and
the next one starts after the step's retry delay. When the broker later refuses the issued
registration (revoked, expired), the hub forgets it and is ``unpaired`` again: provisioning
starts over.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable

from gatewayd.config import Config
from gatewayd.credentials import CloudCredentials, WifiCredentials
from gatewayd.onboarding.conclusion import committed
from gatewayd.onboarding.machine import Onboarding
from gatewayd.onboarding.progress import LastFailure
from gatewayd.onboarding.steps import (
    CloudStep,
    Failure,
    ProvisioningStep,
    StepResult,
    WifiControl,
)
from gatewayd.onboarding.table import Event, State
from gatewayd.state import StateStore

log = logging.getLogger(__name__)

UPLINK_CHECK = 5.0  # unpaired without a network: look for a cable this often
LOST_WAIT = 120.0  # a running attempt ends (it may be the one the broker refused) first


class ProvisioningOnboarding(Onboarding):
    def __init__(self, config: Config, store: StateStore, wifi: WifiControl | None,
                 cloud: CloudStep, provider: ProvisioningStep, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(config, store, wifi, cloud, clock=clock)
        self.provider = provider
        self._provisioning = False  # the running attempt asks the platform
        self._provided: CloudCredentials | None = None
        self._delay = 0.0  # before the next provisioning attempt
        self._driver: asyncio.Task[None] | None = None

    @property
    def online(self) -> bool:
        return self.state == State.ONLINE and not self.busy

    async def start(self) -> None:
        await super().start()
        self._driver = asyncio.create_task(self._drive(), name="provisioning")

    async def stop(self) -> None:
        if self._driver is not None:
            self._driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._driver
        await super().stop()

    async def _drive(self) -> None:
        """Unpaired and idle with a network: ask the platform (after the retry delay)."""
        while True:
            async with self.changed:
                await self.changed.wait_for(
                    lambda: self.state == State.UNPAIRED and not self.busy)
            if self._delay > 0:
                delay, self._delay = self._delay, 0.0
                log.info("provisioning: next attempt in %.1f s", delay)
                with contextlib.suppress(TimeoutError):
                    await self.wait_for(lambda: self.state != State.UNPAIRED, delay)
                continue
            if not await self._uplink_known():
                with contextlib.suppress(TimeoutError):
                    await self.wait_for(lambda: self.state != State.UNPAIRED or self.busy,
                                        UPLINK_CHECK)
                continue
            with contextlib.suppress(RuntimeError):  # a person's request came first
                await self.begin_provisioning()

    async def begin_provisioning(self) -> None:
        async with self._lock:
            if self.state != State.UNPAIRED or self.busy or self.store.state.paired:
                raise RuntimeError(f"not provisioning in state {self.state}")
            await self._fire(Event.PROVISION)
            self._begin_attempt(None, None, source="provisioning")

    def _begin_attempt(self, wifi: WifiCredentials | None, cloud: CloudCredentials | None,
                       source: str, saved: bool = False) -> None:
        self._provisioning = source == "provisioning"
        self._provided = None
        super()._begin_attempt(wifi, cloud, source, saved)
        if self._provisioning and self.attempt is not None:
            self.attempt = dataclasses.replace(self.attempt, cloud=True)

    async def _attempt(self, wifi: WifiCredentials | None, cloud: CloudCredentials | None,
                       timeout: float, saved: bool
                       ) -> tuple[StepResult, WifiCredentials | None]:
        if not self._provisioning:
            return await super()._attempt(wifi, cloud, timeout, saved)
        await self._enter_step("provisioning")
        result, provided = await self.provider.obtain()
        if provided is None:
            return result, None
        self._provided = provided
        await self._enter_step("cloud")
        return await self.cloud.connect(provided, timeout), None

    async def _conclude(self, result: StepResult, applied: WifiCredentials | None,
                        cloud: CloudCredentials | None, saved: bool, timeout: float) -> None:
        if not self._provisioning:
            await super()._conclude(result, applied, cloud, saved, timeout)
            return
        self._provisioning = False
        provided, self._provided = self._provided, None
        # Before anything that can raise: whatever happens below, the next operation
        # waits (a store that cannot be written must not have the platform asked again
        # and again, a new operation and verification code each time).
        self._delay = self.provider.retry_delay()
        if result.ok and provided is not None:
            result = committed(lambda: self.provider.commit(provided))
            if result.ok:
                self._delay = 0.0
                self.last_failure = None
                await self._fire(Event.SUCCEEDED)
                return
        if provided is not None:  # the platform's part went well; provisioning did not
            self.provider.failed(result)
        # As a failed attempt that stored nothing: unpaired with the reason (saved=True:
        # there is no unproven Wi-Fi network of this attempt to take back).
        await super()._conclude(result, None, None, True, timeout)

    async def registration_lost(self, failure: Failure, reason: str) -> None:
        """The broker refuses the issued registration: forget it, provision again."""
        with contextlib.suppress(TimeoutError):
            await self.wait_for(lambda: not self.busy, LOST_WAIT)
        async with self._lock:
            if self.store.state.registration is None or self.busy:
                return
            await self.cloud.disconnect()
            self.store.forget_registration()
            # No attempt failed: the registration did, after the attempt that got it.
            self.last_failure = LastFailure(code=str(failure), reason=reason, at=time.time(),
                                            attempt=None)
            await self._fire(Event.REVOKED)
