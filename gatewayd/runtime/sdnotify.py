"""systemd integration: READY/STATUS/STOPPING notifications and a real watchdog.

WATCHDOG=1 is sent by a task on the asyncio loop itself, and only after the
registered health checks pass: when the loop is blocked or a vital component
has died, the pings stop and systemd restarts the hub. Where a blocked loop was stuck is
logged by :mod:`gatewayd.runtime.stalls`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
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
        self._task = asyncio.create_task(self._run(), name="watchdog")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
