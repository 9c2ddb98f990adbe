"""One pass at a time over what the broker keeps, run again when asked for meanwhile.

:mod:`~gatewayd.cloud.leftovers` (clearing removed children) and
:mod:`~gatewayd.cloud.stale` (what an earlier run published) each run such passes on the
link's connection: a removal, a child added or a reconnect during a pass asks for another,
and the passes stop while the link is not connected (a connection asks again). A pass that
raises is logged and does not end the next one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from gatewayd.cloud.link import CloudLink

log = logging.getLogger(__name__)


class Passes:
    def __init__(self, link: CloudLink, body: Callable[[], Awaitable[None]], *, name: str,
                 failed: str) -> None:
        self.link = link
        self._body = body
        self._name = name
        self._failed = failed  # the log's words for a pass that raised
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def ask(self) -> None:
        """Another pass: now, or after the one running."""
        self._again = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    async def wait(self, timeout: float) -> bool:
        """Wait for the pass in progress, if any; False if it took longer."""
        task = self._task
        if task is None or task.done():
            return True
        done, _ = await asyncio.wait([task], timeout=timeout)
        return bool(done)

    async def _run(self) -> None:
        while self._again and self.link.connected:
            self._again = False
            try:
                await self._body()
            except Exception:
                log.exception("cloud: %s failed", self._failed)
