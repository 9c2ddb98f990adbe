"""The unpaired hub's hotspot watchdog (a base of
:class:`~gatewayd.onboarding.machine.Onboarding`).

An ``unpaired`` Wi-Fi hub that is on no network has its hotspot as the way in (besides BLE).
The hotspot is raised when the machine enters ``unpaired``; this keeps it there: when it is
not up (the cable was in at boot and is pulled since; NetworkManager took it down; it failed
to start), a single task looks again after ``min(WATCH_FIRST, retry_interval)`` and raises
it if nothing else pairs the hub (no cable, not on Wi-Fi). A start that fails
backs off, doubling up to ``retry_interval``. While the cable is in, it looks again when
NetworkManager signals that a wired link came or went (:mod:`gatewayd.nm.wired`), and
every :data:`WATCH_CABLE` seconds besides, a safety net for a signal missed (before, it
asked NetworkManager every 5 s for as long as the hub sat on its cable). The task ends as
soon as the hotspot is up or the machine leaves ``unpaired``. A short press raises it at
once (:meth:`HotspotWatch._raise_missing_hotspot`).

Without NetworkManager there is nothing to raise it with: the watchdog ends, and when
NetworkManager comes (back) the machine does what a start does with it (``_on_service``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from gatewayd.config import Config
from gatewayd.onboarding.parts import MachineParts
from gatewayd.onboarding.steps import WifiControl
from gatewayd.onboarding.table import State

log = logging.getLogger(__name__)
WATCH_FIRST = 5.0  # seconds before looking again at a missing hotspot (or the cable)
WATCH_CABLE = 60.0  # seconds between looks while the cable is in, signals aside


class HotspotWatch(MachineParts):
    """The watchdog; the machine provides what is declared here."""

    config: Config
    wifi: WifiControl | None
    state: State | None
    sleep: Callable[[float], Awaitable[None]]
    _entering: bool
    _concluding: bool
    _lock: asyncio.Lock
    _watch_task: asyncio.Task[None] | None
    _wired: asyncio.Event

    def _hotspot_missing(self) -> bool:
        """Unpaired, with Wi-Fi, on no Wi-Fi network, and no hotspot while NetworkManager
        runs (whether a cable is in is asked of it when the hotspot is to be raised)."""
        return (self.state == State.UNPAIRED and self.wifi is not None and not self.on_wifi
                and self.wifi.running and not self.wifi.hotspot_active)

    def _settled(self) -> bool:
        """No transition nor an attempt's ending under way: they raise (or drop) it."""
        return not (self._entering or self._concluding)

    def _on_hotspot_down(self) -> None:
        """NetworkManager took the hotspot down (called on the loop): every front end hears
        it, and an unpaired hub raises it again."""
        self._tell_listeners()
        self._link_task(self._notify_changed(), "hotspot-down")
        self._watch_hotspot()

    def _on_wired(self) -> None:
        """NetworkManager: a wired link came or went (called on the loop)."""
        self._wired.set()

    def _watch_hotspot(self) -> None:
        """Start the watchdog if the hotspot is missing and none runs."""
        if not self._hotspot_missing():
            return
        if self._watch_task is None or self._watch_task.done():
            self._watch_task = asyncio.create_task(self._hotspot_watchdog(),
                                                   name="hotspot-watch")

    def _cancel_hotspot_watch(self) -> None:
        if self._watch_task is not None and self._watch_task is not asyncio.current_task():
            self._watch_task.cancel()
        self._watch_task = None

    async def _end_hotspot_watch(self) -> None:
        """Cancel the watchdog and wait for it: a reset raises the hotspot itself, and two
        activations at once would share ap.py's one waiter (the second the first's events)."""
        task = self._watch_task
        self._cancel_hotspot_watch()
        if task is not None and task is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _hotspot_watchdog(self) -> None:
        cap = self.config.hotspot.retry_interval
        first = min(WATCH_FIRST, cap)
        delay = first
        failed = False  # the traceback of a failure is logged once in a row of them
        cable = False  # the last look found the cable in
        while self._hotspot_missing():
            if cable:
                await self._wired_or(WATCH_CABLE)
            else:
                await self.sleep(delay)
            cable = False
            if not self._settled():
                continue
            self._wired.clear()  # a change from here on is looked at again
            try:
                raised = await self._raise_missing_hotspot()
            except Exception as exc:  # NetworkManager failed: back off, look again
                delay = min(cap, delay * 2)
                log.warning("could not raise the hotspot (%s); trying again in %.0fs", exc,
                            delay, exc_info=not failed)
                failed = True
                continue
            failed = False
            if raised is None:
                cable, delay = True, first  # the cable is in: look when it goes
            elif not raised:
                delay = min(cap, delay * 2)

    async def _wired_or(self, seconds: float) -> None:
        """Wait until NetworkManager tells of a wired link come or gone, or ``seconds``."""
        told = asyncio.ensure_future(self._wired.wait())
        timer = asyncio.ensure_future(self.sleep(seconds))
        try:
            await asyncio.wait({told, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            told.cancel()
            timer.cancel()

    async def _raise_missing_hotspot(self) -> bool | None:
        """Raise the hotspot if it is missing. Returns whether it is up afterwards, None
        if Ethernet is connected (the hub pairs over the LAN and has no hotspot). Under the
        pairing lock: no request begins meanwhile."""
        async with self._lock:
            if not (self._hotspot_missing() and self._settled()):
                return self.wifi is not None and self.wifi.hotspot_active
            assert self.wifi is not None
            if await self.wifi.ethernet_connected():
                return None
            log.warning("unpaired without a network or hotspot: hotspot up again")
            await self._show_hotspot()
            up = self.wifi.hotspot_active
        self._tell_listeners()
        await self._notify_changed()
        return up
