from __future__ import annotations

import asyncio
import queue
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewayd.runtime.sdnotify import Notifier, Watchdog
from tests.helpers import Gatewayd, ethernet_config, wait_for, write_config


class NotifySocket:
    """What systemd would receive: datagrams, timestamped on arrival."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: queue.Queue[tuple[float, str]] = queue.Queue()
        self.log: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._recv, daemon=True)
        self._thread.start()

    def _recv(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            item = (time.monotonic(), data.decode())
            self.log.append(item)
            self.messages.put(item)

    def wait_for(self, needle: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {needle!r} within {timeout}s; got {self.log}")
            try:
                _, msg = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            if needle in msg:
                return msg

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    ns = NotifySocket(tmp_path / "notify.sock")
    yield ns
    ns.close()


def test_daemon_reports_ready_status_watchdog_stopping(tmp_path: Path,
                                                       notify_socket: NotifySocket) -> None:
    cfg = write_config(tmp_path / "g.toml", ethernet_config(tmp_path))
    gw = Gatewayd(["--config", str(cfg)], env={"NOTIFY_SOCKET": str(notify_socket.path),
                                               "WATCHDOG_USEC": "200000"})
    try:
        ready = notify_socket.wait_for("READY=1")
        assert "STATUS=unpaired" in ready
        notify_socket.wait_for("WATCHDOG=1")
        notify_socket.wait_for("WATCHDOG=1")
    finally:
        assert gw.stop() == 0
    notify_socket.wait_for("STOPPING=1", timeout=5)


def _run_loop_in_thread() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    return loop, thread


def test_watchdog_stops_while_loop_is_blocked(monkeypatch: pytest.MonkeyPatch,
                                              notify_socket: NotifySocket) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_socket.path))
    loop, thread = _run_loop_in_thread()
    watchdog = Watchdog(Notifier(), interval=0.05)
    asyncio.run_coroutine_threadsafe(_start(watchdog), loop).result(5)
    try:
        notify_socket.wait_for("WATCHDOG=1")
        blocked: dict[str, float] = {}

        def block() -> None:
            blocked["start"] = time.monotonic()
            time.sleep(1.0)  # the fault under test: a handler that blocks the loop
            blocked["end"] = time.monotonic()

        loop.call_soon_threadsafe(block)
        # Pings resume only after the block: wait for one that arrives after it ended.
        deadline = time.monotonic() + 10
        while "end" not in blocked or not any(t > blocked["end"] for t, m in notify_socket.log
                                              if "WATCHDOG" in m):
            notify_socket.wait_for("WATCHDOG=1", timeout=max(deadline - time.monotonic(), 0.1))
        during = [t for t, m in notify_socket.log
                  if "WATCHDOG" in m and blocked["start"] + 0.02 < t < blocked["end"]]
        assert during == [], "pings must stop while the event loop is blocked"
    finally:
        asyncio.run_coroutine_threadsafe(watchdog.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


async def _start(watchdog: Watchdog) -> None:
    watchdog.start()


def test_watchdog_withholds_pings_while_a_health_check_fails(
        monkeypatch: pytest.MonkeyPatch, notify_socket: NotifySocket) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_socket.path))
    loop, thread = _run_loop_in_thread()
    healthy = threading.Event()
    healthy.set()
    watchdog = Watchdog(Notifier(), interval=0.05)
    watchdog.add_check("portal", lambda: None if healthy.is_set() else "thread died")
    asyncio.run_coroutine_threadsafe(_start(watchdog), loop).result(5)
    try:
        notify_socket.wait_for("WATCHDOG=1")
        healthy.clear()
        # Once the check has been seen failing, no further ping may arrive.
        wait_for(lambda: watchdog.last_problem is not None, 5, "the failing check")
        seen_failing = time.monotonic()
        # An absence can only be observed over a window: ten ping intervals.
        wait_for(lambda: time.monotonic() > seen_failing + 0.5, 2, "the observation window")
        assert not [t for t, m in notify_socket.log if "WATCHDOG" in m and t > seen_failing + 0.01]
        assert watchdog.last_problem == "portal: thread died"
        healthy.set()
        notify_socket.wait_for("WATCHDOG=1")
    finally:
        asyncio.run_coroutine_threadsafe(watchdog.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def test_the_stall_reporter_records_how_long_where_and_whether_after_ready() -> None:
    from gatewayd.runtime.stalls import StallReporter

    def waiting(seconds: float) -> None:
        time.sleep(seconds)  # the fault under test: a blocking call on the loop

    def computing(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:  # the fault under test: work on the loop
            pass

    async def stalls_reach(reporter: StallReporter, count: int) -> None:
        async with asyncio.timeout(10):
            while reporter.stalls < count:  # the reporter records at its next beat
                reporter.recorded.clear()
                await reporter.recorded.wait()

    async def main() -> dict[str, object]:
        reporter = StallReporter(threshold=0.2, beat=0.05)
        reporter.start()
        try:
            waiting(0.05)  # shorter than the threshold: not a stall
            waiting(0.4)
            await stalls_reach(reporter, 1)
            reporter.mark_ready()
            computing(0.4)
            await stalls_reach(reporter, 2)
            return reporter.status()
        finally:
            await reporter.stop()

    status = asyncio.run(main())
    assert (status["stalls"], status["after_ready"]) == (2, 1)
    before, after = status["recent"]  # type: ignore[misc]
    assert before["after_ready"] is False and before["seconds"] >= 0.3
    assert "waiting" in before["where"] and before["cpu_s"] < before["seconds"] / 2
    assert after["after_ready"] is True and after["seconds"] >= 0.3
    assert "computing" in after["where"] and after["cpu_s"] > 0
