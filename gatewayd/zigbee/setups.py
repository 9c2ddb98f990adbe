"""A device's one-time setup after its interview, redone until it has finished.

The setup (the reads its description depends on, ``Child.preload``; bind, configure
reporting, IAS enrollment, first reads: ``Child.configure``) is what makes a device report
and be described right. zigpy keeps a device once it is interviewed, so a setup cut
short (the radio lost, the hub stopped or crashed) or one whose steps the device did not
answer (a battery device dozing off halfway) left it ``ready`` but silent for good.

``zigbee-setup.json`` in the state directory (``{"pending": ["8b:b3:...", ...]}``, see
:mod:`~gatewayd.zigbee.ieee_file`) holds the devices whose setup has not finished: a
device is marked when it joins and before each setup starts, and unmarked once every step
was answered. The file is written off the loop (:mod:`~gatewayd.runtime.writebehind`); a
setup's first step waits until its mark is on disk, so a crash during a setup always
leaves the device marked. The bridge sets up again, each time the radio comes up, every
restored device still marked. A setup with unanswered steps is tried again up to
:attr:`SetupRetry.attempts` times, after a jittered doubling wait (``first`` to ``cap``)
cut short when the device is heard (a battery device is awake then), though never sooner
than ``heard_gap`` after the last try; then not before the radio comes back, the hub
restarts or the device is interviewed again.

A device that had left and joins again (a factory reset, maybe new firmware with other
endpoints) is asked what it is now, zigpy's re-interview, before its setup: zigpy would
otherwise set it up as what it knew. Before it, zigpy's database writes already queued are
let through (:func:`_db_written`): zigpy 2.4's re-interview deletes the old device's rows
outside its database worker, so a save of the old device still queued (a join moments
before) landed after the delete and merged the old endpoints' clusters into the new ones
(in zigbee.db: the device came back at the next start as both). Upstream's fix would queue
the delete on the worker; this waits for the queue instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatewayd.runtime.atomicfile import atomic_write
from gatewayd.runtime.backoff import backoff_delay
from gatewayd.runtime.writebehind import Write
from gatewayd.zigbee.ieee_file import IeeeFile

log = logging.getLogger(__name__)

SETUP_FILE = "zigbee-setup.json"


@dataclass(frozen=True)
class SetupRetry:
    """When a setup with unanswered steps is tried again (seconds)."""

    heard_gap: float = 10.0
    first: float = 60.0
    cap: float = 3600.0
    attempts: int = 8  # the first try included: about 4 h at the defaults


SETUP_RETRY = SetupRetry()


class Setups:
    """The running setups (one task per device) and the devices whose setup is pending.

    ``run(device)`` sets a zigpy device up once: True when every step was answered."""

    def __init__(self, path: Path, run: Callable[[Any], Awaitable[bool]],
                 retry: SetupRetry, rng: random.Random, write: Write = atomic_write) -> None:
        self.pending = IeeeFile(path, "pending", "setups cut short before are not redone",
                                write)
        self.run, self.retry, self.rng = run, retry, rng
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._heard: dict[str, asyncio.Event] = {}  # devices whose next try waits for them
        self._asking: set[str] = set()  # re-interviewed: their setup follows by itself

    def joined(self, ieee: str) -> None:
        self.pending.add(ieee)  # before its interview: a crash from here on is redone

    def start(self, dev: Any) -> None:
        """Set ``dev`` up (again), from its first try; a setup under way is cancelled."""
        ieee = str(dev.ieee)
        self.pending.add(ieee)
        if ieee not in self._asking:
            self.stop(ieee)
            self._task(ieee, self._setup(dev, ieee))

    def rejoined(self, dev: Any) -> None:
        """A device that had left joins again: re-interviewed, then set up."""
        ieee = str(dev.ieee)
        self.pending.add(ieee)
        self.stop(ieee)
        self._asking.add(ieee)
        self._task(ieee, self._reinterview(dev, ieee))

    async def _reinterview(self, dev: Any, ieee: str) -> None:
        try:
            await _db_written(dev.application)
            await dev.reinterview()  # zigpy logs a failure and keeps the device as it was
        finally:
            self._asking.discard(ieee)
        await self._setup(dev.application.devices.get(dev.ieee, dev), ieee)

    def _task(self, ieee: str, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work, name=f"zigbee-setup-{ieee}")
        self._tasks[ieee] = task
        task.add_done_callback(lambda t: self._tasks.pop(ieee, None)
                               if self._tasks.get(ieee) is t else None)

    def stop(self, ieee: str) -> None:
        """A setup that outlived its device (left, removed) would publish it again."""
        self._asking.discard(ieee)  # a task cancelled before it ran has no finally
        task = self._tasks.pop(ieee, None)
        if task is not None:
            task.cancel()

    def stop_all(self) -> None:
        """The radio is gone or the hub stops: what did not finish stays pending."""
        for ieee in list(self._tasks):
            self.stop(ieee)

    def forget(self, ieee: str) -> None:
        """Removed from the network."""
        self.stop(ieee)
        self.pending.discard(ieee)

    def clear(self) -> None:
        """The network is forgotten (a full reset)."""
        self.stop_all()
        self.pending.clear()

    def heard(self, ieee: str) -> None:
        event = self._heard.get(ieee)
        if event is not None:
            event.set()

    async def _setup(self, dev: Any, ieee: str) -> None:
        retry = self.retry
        await self.pending.written()  # marked on disk before the device is touched
        for attempt in range(retry.attempts):
            if attempt:
                await self._pause(ieee, attempt - 1)
            if await self.run(dev):
                self.pending.discard(ieee)
                return
        log.warning("zigbee: the setup of %s is still unfinished after %d tries; it is tried "
                    "again when the radio comes back or the hub restarts", ieee,
                    retry.attempts)

    async def _pause(self, ieee: str, n: int) -> None:
        retry = self.retry
        delay = backoff_delay(n, retry.first, retry.cap, self.rng, floor=0.5)
        gap = min(retry.heard_gap, delay)
        await asyncio.sleep(gap)
        heard = self._heard[ieee] = asyncio.Event()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay - gap):
                    await heard.wait()
        finally:
            if self._heard.get(ieee) is heard:
                del self._heard[ieee]


DB_WAIT = 10.0  # seconds at most for zigpy's queued database writes before a re-interview


async def _db_written(app: Any) -> None:
    """Wait (at most DB_WAIT) until zigpy's database worker has handled what is queued: a
    private queue of zigpy 2.4's (``_dblistener._callback_handlers``), looked up
    defensively; without it, or past the wait, the re-interview goes on as before."""
    queue = getattr(getattr(app, "_dblistener", None), "_callback_handlers", None)
    if not isinstance(queue, asyncio.Queue):
        return
    try:
        async with asyncio.timeout(DB_WAIT):
            await queue.join()
    except TimeoutError:
        log.warning("zigbee: zigpy's database writes did not drain in %g s; re-interviewing "
                    "anyway", DB_WAIT)
