"""Plugin calls the virtual-device host cancelled and walked away from (:class:`Abandoned`).

An async plugin method that overruns its limit is cancelled and never awaited again, so a
plugin that swallows the cancellation cannot hang the daemon. Such a task may still run for
good, and nothing in asyncio can end it. So a device with one still running gets no new
poll or ``/set`` until it ends (the host reports why as the device's fault), and the whole
set is capped: at most one such call per device (two if its ``stop()`` hangs as well), and
once :data:`MAX_ABANDONED` are left behind, no device gets a new poll or ``/set`` (the
calls already running when that was reached may still add theirs). When gatewayd stops,
they are left running: the event loop closes without them after a short grace
(:mod:`gatewayd.runtime.eventloop`) and they end with the process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)
MAX_ABANDONED = 32


class Hung(Exception):
    """A plugin call did not finish within its limit (it was cancelled and left behind)."""


class Exited(Exception):
    """SystemExit from plugin code, caught inside the plugin's task.

    asyncio re-raises SystemExit out of the event loop when a task raises it, so it must be
    turned into an ordinary exception before it reaches the task boundary.
    """


async def contained(aw: Awaitable[Any]) -> Any:
    try:
        return await aw
    except SystemExit as exc:
        raise Exited from exc


@dataclass(frozen=True)
class _Call:
    device_id: str
    what: str  # poll, on_set, ...
    why: str  # "after 8 s", "at stop"


class Abandoned:
    """The abandoned plugin tasks still running, by the device and the call they were."""

    def __init__(self, limit: int = MAX_ABANDONED) -> None:
        self.limit = limit
        self._tasks: dict[asyncio.Task[Any], _Call] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def add(self, task: asyncio.Task[Any], device_id: str, what: str, why: str) -> None:
        """Cancel ``task`` (again) and keep it until it ends."""
        task.cancel()
        if task.done():
            return
        self._tasks[task] = _Call(device_id, what, why)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        call = self._tasks.pop(task, None)
        if call is not None:  # the device's next call, working again, says so at info
            log.debug("%s: the %s cancelled %s has ended", call.device_id, call.what,
                      call.why)
        if not task.cancelled() and task.exception() is not None:
            log.debug("an abandoned plugin task ended with %r", task.exception())

    def blocking(self, device_id: str) -> str | None:
        """Why a new call of the device must not start now (for a person), or None."""
        for call in self._tasks.values():
            if call.device_id == device_id:
                return (f"its {call.what} cancelled {call.why} still runs "
                        f"(the plugin ignores the cancellation)")
        if len(self._tasks) >= self.limit:
            return (f"cancelled plugin calls still running: {len(self._tasks)}, the most "
                    f"gatewayd leaves behind")
        return None

    def cancel_all(self) -> int:
        """Cancel every one once more (at stop); how many were still running."""
        for task in list(self._tasks):
            task.cancel()
        return len(self._tasks)
