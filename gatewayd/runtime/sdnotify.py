"""systemd integration: READY/STATUS/STOPPING notifications and a real watchdog.

WATCHDOG=1 is sent by a task on the asyncio loop itself, and only after the
registered health checks pass: when the loop is blocked or a vital component
has died, the pings stop and systemd restarts the hub.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable

log = logging.getLogger(__name__)

HealthCheck = Callable[[], str | None]  # returns None when healthy, else what is wrong


def _fallback_notify(state: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(state.encode())
    return True


class Notifier:
    """sd_notify(3) through systemd-python, or a plain datagram when it is not installed."""

    def __init__(self) -> None:
        try:
            from systemd import daemon  # type: ignore[attr-defined]  # no stubs: Any

            self._send: Callable[[str], object] = daemon.notify
        except ImportError:
            self._send = _fallback_notify
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self.last_status = ""

    def notify(self, state: str) -> None:
        if not self.enabled:
            return
        try:
            self._send(state)
        except OSError as exc:
            log.debug("sd_notify failed: %s", exc)

    def ready(self, status: str) -> None:
        self.last_status = status
        self.notify(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        if status != self.last_status:
            self.last_status = status
            self.notify(f"STATUS={status}")

    def stopping(self) -> None:
        self.notify("STOPPING=1\nSTATUS=stopping")


def watchdog_interval() -> float | None:
    """Half of WATCHDOG_USEC, if systemd asked this process for pings."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(int(usec) / 2_000_000, 0.01)
    except ValueError:
        return None


class Watchdog:
    """Pings systemd from the event loop while the loop and the health checks are fine."""

    def __init__(self, notifier: Notifier, interval: float) -> None:
        self.notifier = notifier
        self.interval = interval
        self.checks: dict[str, HealthCheck] = {}
        self.last_problem: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._stall = _StallReporter(interval * 2)

    def add_check(self, name: str, check: HealthCheck) -> None:
        self.checks[name] = check

    def problems(self) -> list[str]:
        found = []
        for name, check in self.checks.items():
            try:
                problem = check()
            except Exception as exc:  # a broken check is itself a problem
                problem = f"check failed: {exc!r}"
            if problem:
                found.append(f"{name}: {problem}")
        return found

    async def _run(self) -> None:
        while True:
            self._stall.beat()
            problems = self.problems()
            if problems:
                message = "; ".join(problems)
                if message != self.last_problem:
                    log.error("unhealthy, withholding watchdog ping: %s", message)
                self.last_problem = message
            else:
                self.last_problem = None
                self.notifier.notify("WATCHDOG=1")
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._stall.start()
        self._task = asyncio.create_task(self._run(), name="watchdog")

    async def stop(self) -> None:
        self._stall.stop()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass


class _StallReporter:
    """Logs where the event loop is stuck, so a watchdog restart leaves a clue in the journal."""

    def __init__(self, threshold: float) -> None:
        self.threshold = max(threshold, 1.0)
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop_thread_id = 0

    def beat(self) -> None:
        self._last = time.monotonic()

    def start(self) -> None:
        """Called on the loop's thread: that is the thread whose stack gets reported."""
        self._loop_thread_id = threading.get_ident()
        self._thread = threading.Thread(target=self._watch, name="stall-reporter", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        reported = False
        while not self._stop.wait(self.threshold / 2):
            stalled = time.monotonic() - self._last
            if stalled > self.threshold and not reported:
                frame = sys._current_frames().get(self._loop_thread_id)
                where = "".join(traceback.format_stack(frame)[-4:]) if frame else "?"
                log.error("event loop blocked for %.1fs at:\n%s", stalled, where)
                reported = True
            elif stalled <= self.threshold:
                reported = False
