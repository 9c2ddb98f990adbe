"""Components started in order and stopped in reverse order, within one stop deadline;
the adapters of a coroutine (:class:`TaskComponent`) and of a component whose failure is
not fatal (:class:`NonFatal`).

systemd gives a stopping service ``TimeoutStopSec`` (20 s in gatewayd.service), counted
from SIGTERM, then kills it: what the daemon does after a stop request (the start under
way, a factory reset's end, each component's stop) shares one budget that fits inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

# The whole stop, from the request: 5 s short of the unit's TimeoutStopSec=20s, the margin
# for the loop's own end (threads joined, the interpreter's exit).
STOP_BUDGET = 15.0
# What each component still to stop is sure of, however long the ones before it take: one
# that hangs does not leave the others no time at all.
STOP_FLOOR = 0.25


class Component(Protocol):
    @property
    def name(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Lifecycle:
    """Starts ``components`` in order until ``stop_requested`` is set, and stops those it
    started in reverse order by :attr:`deadline`."""

    def __init__(self, components: Sequence[Component], stop_requested: asyncio.Event,
                 budget: float = STOP_BUDGET, floor: float = STOP_FLOOR) -> None:
        self.components = list(components)
        self.stop_requested = stop_requested
        self.budget = budget
        self.floor = floor
        self.started: list[Component] = []
        self.deadline: float | None = None  # loop time; set when the stop begins

    def begin_stop(self) -> None:
        """The stop's deadline counts from now (from the request, when it is noticed at
        once); calling it again keeps the first deadline."""
        if self.deadline is None:
            self.deadline = asyncio.get_running_loop().time() + self.budget

    def share(self, others: int) -> float:
        """The time left to the deadline once ``others`` components' floors are set
        aside (0 at least)."""
        self.begin_stop()
        assert self.deadline is not None
        left = self.deadline - asyncio.get_running_loop().time()
        return max(left - self.floor * others, 0.0)

    async def start(self) -> bool:
        """Start every component in order; False (and the rest not started) once a stop is
        requested, also while one is starting. A component counts as started, to be
        stopped, as soon as its start has begun: its stop undoes what it did."""
        for component in self.components:
            if self.stop_requested.is_set():
                return False
            starting = asyncio.ensure_future(component.start())
            stopping = asyncio.ensure_future(self.stop_requested.wait())
            try:
                await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            except BaseException:
                starting.cancel()  # the daemon's run itself cancelled
                raise
            finally:
                stopping.cancel()
            if starting.done():
                starting.result()  # a start that failed is not stopped
                self.started.append(component)
                continue
            self.started.append(component)
            await self._cut_short(component, starting)
            return False
        return not self.stop_requested.is_set()

    async def _cut_short(self, component: Component, starting: asyncio.Future[None]) -> None:
        """A stop was requested while ``component`` starts: it may finish, within its share
        of the stop, else it is cancelled; either way it is stopped with the rest."""
        self.begin_stop()
        log.info("stopping: %s is starting; letting it finish first", component.name)
        try:
            await asyncio.wait_for(starting, self.share(len(self.started)))
        except TimeoutError:
            log.warning("stopping: %s did not finish starting in time; cut short",
                        component.name)
        except Exception:
            log.exception("%s failed to start", component.name)

    async def stop(self) -> None:
        """Stop the started components in reverse order by the deadline; one whose stop
        takes longer than its share is left as it is (the log says which)."""
        pending = list(reversed(self.started))
        self.started = []
        for n, component in enumerate(pending):
            timeout = max(self.share(len(pending) - n - 1), self.floor)
            try:
                await asyncio.wait_for(component.stop(), timeout)
            except TimeoutError:
                log.error("stopping %s took over %.1f s; left as it is to stop the rest "
                          "in time", component.name, timeout)
            except Exception:
                log.exception("stopping %s failed", component.name)


@dataclass
class TaskComponent:
    """A long-running coroutine as a component: started as a task, cancelled on stop."""

    name: str
    factory: Callable[[], Coroutine[Any, Any, None]]
    task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.factory(), name=self.name)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


@dataclass
class NonFatal:
    """A component whose failure to start is logged, not fatal: the hub still pairs
    over the hotspot when, say, the Bluetooth adapter is missing."""

    inner: Any

    @property
    def name(self) -> str:
        return str(self.inner.name)

    async def start(self) -> None:
        try:
            await self.inner.start()
        except Exception:
            log.exception("%s could not start; carrying on without it", self.name)

    async def stop(self) -> None:
        await self.inner.stop()
