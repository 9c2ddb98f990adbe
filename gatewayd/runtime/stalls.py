"""The stall reporter: when the event loop stops turning, where it was, and a record.

A task on the loop beats every :data:`BEAT`; a thread watches the beats. When the loop has
not beaten for :attr:`StallReporter.threshold` seconds, the thread takes the loop
thread's stack (that is where it is stuck: an import, a blocking call) and logs it; when
the loop beats again the stall is recorded with how long it lasted, how much of that the
loop thread spent computing (``cpu_s``: an import or a loop computes, a blocking read or
fsync waits, a process the machine starves does neither), and whether it came after
READY. ``gatewayctl status`` shows the record (``loop``), and the tests read it: nothing
may block the loop after READY (imports happen before it, or in a thread).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sys
import threading
import time
import traceback
from typing import Any

log = logging.getLogger(__name__)

THRESHOLD = 0.5  # seconds without a beat that count as a stall
BEAT = 0.25  # seconds between beats (and between the watcher's looks)
RECENT = 16  # stalls kept in the record


class StallReporter:
    """``start()`` on the loop's thread, ``mark_ready()`` at READY, ``await stop()``."""

    def __init__(self, threshold: float = THRESHOLD, beat: float = BEAT) -> None:
        self.threshold = threshold
        self.beat = beat
        self.stalls = 0
        self.after_ready = 0
        self.longest = 0.0
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT)
        self._ready_at: float | None = None
        self._last = time.monotonic()
        self._where: str | None = None  # the stack the watcher saw during this stall
        self._loop_thread = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None
        self.recorded = asyncio.Event()  # set at each stall recorded (tests wait on it)

    def start(self) -> None:
        self._loop_thread = threading.get_ident()
        self._last = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._beats(), name="stalls")
        self._thread = threading.Thread(target=self._watch, name="stall-reporter",
                                        daemon=True)
        self._thread.start()

    def mark_ready(self) -> None:
        self._ready_at = time.monotonic()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _beats(self) -> None:
        cpu = time.thread_time()
        while True:
            await asyncio.sleep(self.beat)
            now, now_cpu = time.monotonic(), time.thread_time()
            gap = now - self._last - self.beat
            if gap > self.threshold:
                self._record(now - gap, gap, now_cpu - cpu)
            self._last, cpu = now, now_cpu

    def _record(self, began: float, seconds: float, cpu_s: float) -> None:
        # After READY if it went on for a stall's length after READY.
        ended = began + seconds
        after = self._ready_at is not None and ended - max(began, self._ready_at) > \
            self.threshold
        self.stalls += 1
        self.after_ready += after
        self.longest = max(self.longest, seconds)
        self.recent.append({
            "at": round(time.time() - (time.monotonic() - began), 3),
            "seconds": round(seconds, 3), "cpu_s": round(cpu_s, 3), "after_ready": after,
            "where": self._where or "?"})
        self._where = None
        self.recorded.set()
        # Our own work on the loop after READY is a bug; waiting (a blocking call, or a
        # machine too busy to run us) or starting up is worth a warning.
        log.log(logging.ERROR if after and cpu_s >= seconds / 2 else logging.WARNING,
                "event loop blocked for %.1f s (%.1f s computing)%s", seconds, cpu_s,
                "" if after else " before READY")

    def _watch(self) -> None:
        seen = False
        while not self._stop.wait(self.beat):
            stalled = time.monotonic() - self._last - self.beat
            if stalled > self.threshold and not seen:
                frame = sys._current_frames().get(self._loop_thread)
                # Only the innermost frames are looked up: each file a frame's line is
                # read from stays in linecache for good (a deep stack: half a megabyte).
                self._where = ("".join(traceback.format_list(
                    traceback.extract_stack(frame, limit=4))) if frame else "?")
                del frame  # it holds the loop thread's whole stack until the next stall
                log.warning("event loop blocked for %.1f s so far, at:\n%s", stalled,
                            self._where)
                seen = True
            elif stalled <= self.threshold:
                seen = False

    def status(self) -> dict[str, Any]:
        """For ``gatewayctl status`` (``loop``)."""
        return {"threshold_s": self.threshold, "stalls": self.stalls,
                "after_ready": self.after_ready, "longest_s": round(self.longest, 3),
                "recent": list(self.recent)}
