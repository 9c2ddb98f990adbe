"""When the bridge's supervisor tries the radio again.

A radio that cannot be started is retried with jittered exponential backoff: a random wait
from half to all of a window that doubles from ``first`` up to ``cap``
(:func:`~gatewayd.runtime.backoff.backoff_delay`); what waiting does not mend (a missing
package, a stick of another type, a damaged file) every ``cap``.

A radio lost after it ran is tried again at once if it had stayed up :data:`STABLE_AFTER`
seconds (a one-off drop), as the cloud link treats its connections (``cloud/net.py``).
Lost sooner, the backoff goes on where it was: before, every successful start reset it and
every loss was followed by a start at once, so a stick that reset itself every second cost
a full restart a second (nine log lines, two ``$state`` messages per child). ``clock``
and ``sleep`` are the tests' to replace.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from gatewayd.runtime.backoff import backoff_delay
from gatewayd.zigbee.radio import RadioError, RadioUnavailable

log = logging.getLogger(__name__)

STABLE_AFTER = 60.0  # seconds a radio stays up for its next loss to be retried at once


class Retries:
    def __init__(self, first: float, cap: float, rng: random.Random, *,
                 stable_after: float = STABLE_AFTER) -> None:
        self.first, self.cap, self.rng, self.stable_after = first, cap, rng, stable_after
        self.clock: Callable[[], float] = time.monotonic
        self.sleep: Callable[[float], Awaitable[object]] = asyncio.sleep
        self.failures = 0  # starts failed and losses of a radio up briefly, in a row
        self._up_at: float | None = None

    def _delay(self) -> float:
        # Half the window at least: a missing port fails at once and must not spin.
        return backoff_delay(self.failures, self.first, self.cap, self.rng, floor=0.5)

    async def failed(self, exc: RadioError) -> None:
        """A start failed with ``exc``: wait before the next."""
        await self.sleep(self._delay() if isinstance(exc, RadioUnavailable) else self.cap)
        self.failures += 1

    def up(self) -> None:
        """The radio is up (its children restored)."""
        self._up_at = self.clock()

    async def lost(self) -> None:
        """The radio that was up is lost and let go of: wait, unless it had been up long
        enough (then the count of failures starts again)."""
        up_for = self.clock() - self._up_at if self._up_at is not None else 0.0
        self._up_at = None
        if up_for >= self.stable_after:
            self.failures = 0
            return
        delay = self._delay()
        log.warning("zigbee: the radio was lost %.0f s after it came up; trying it again in "
                    "%.1f s", up_for, delay)
        self.failures += 1
        await self.sleep(delay)
