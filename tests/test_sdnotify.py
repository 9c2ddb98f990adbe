from __future__ import annotations

import asyncio
import linecache
import logging
import queue
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewayd.runtime.sdnotify import Notifier, Watchdog
from gatewayd.runtime.stalls import StallReporter
from tests.helpers import Gatewayd, ethernet_config, write_config


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


def test_the_status_line_tells_the_zigbee_network_after_the_onboarding_state(
        tmp_path: Path, notify_socket: NotifySocket) -> None:
    cfg = write_config(tmp_path / "g.toml", ethernet_config(
        tmp_path, '[zigbee]\nenabled = true\nradio = "virtual"\n'))
    gw = Gatewayd(["--config", str(cfg)], env={"NOTIFY_SOCKET": str(notify_socket.path)})
    try:
        ready = notify_socket.wait_for("READY=1")
        line = "STATUS=unpaired: waiting for pairing; zigbee: "
        assert line in ready  # starting, or up by then
        if line + "up, no devices" not in ready:  # a line is sent only when it changes
            notify_socket.wait_for(line + "up, no devices")
    finally:
        assert gw.stop() == 0
    notify_socket.wait_for("STOPPING=1", timeout=5)
    # Every line, those before READY included, splits as documented: the onboarding state,
    # then "; zigbee: ". Before: the first was "zigbee: starting" alone.
    statuses = [field.removeprefix("STATUS=") for _, message in notify_socket.log
                for field in message.split("\n") if field.startswith("STATUS=")]
    assert statuses[0] == "starting; zigbee: starting" and statuses[-1] == "stopping", statuses
    assert all(s.rpartition("; zigbee: ")[0] for s in statuses[:-1]), statuses


def _run_loop_in_thread() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    return loop, thread


def send_marker(notify_socket: NotifySocket, text: str) -> None:
    """A datagram of our own into systemd's socket: datagrams keep their order, so every
    ping sent before this call is received before the marker."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(text.encode(), str(notify_socket.path))


def between(notify_socket: NotifySocket, first: str, last: str) -> list[str]:
    texts = [m for _, m in notify_socket.log]
    return texts[texts.index(first) + 1:texts.index(last)]


class Journal(logging.Handler):
    """The daemon's log as the journal gets it; ``found`` is set by a record with ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.found = threading.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.messages.append(message)
        if self.text in message:
            self.found.set()


def test_a_blocked_loop_stops_the_pings_and_the_journal_shows_where(
        monkeypatch: pytest.MonkeyPatch, notify_socket: NotifySocket) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_socket.path))
    journal = Journal("event loop blocked")
    logger = logging.getLogger("gatewayd.runtime.stalls")
    logger.addHandler(journal)
    loop, thread = _run_loop_in_thread()
    watchdog = Watchdog(Notifier(), interval=0.05)
    stalls = StallReporter()  # the daemon runs both: the pings and the stall reporter
    asyncio.run_coroutine_threadsafe(_start(watchdog, stalls), loop).result(5)
    entered, release = threading.Event(), threading.Event()

    def a_handler_that_blocks_the_loop() -> None:  # the fault under test
        entered.set()
        release.wait(30)

    try:
        notify_socket.wait_for("WATCHDOG=1")
        outer = asyncio.base_events.__file__  # _run_once: the fifth frame from the top
        linecache.cache.pop(outer, None)
        loop.call_soon_threadsafe(a_handler_that_blocks_the_loop)
        assert entered.wait(10)
        send_marker(notify_socket, "BLOCKED")
        # The stall reporter's log line is the sign that the loop stayed blocked for
        # longer than its threshold (half a second, ten ping intervals).
        assert journal.found.wait(20), "the stall reporter logged nothing"
        send_marker(notify_socket, "REPORTED")
        notify_socket.wait_for("REPORTED")
        assert between(notify_socket, "BLOCKED", "REPORTED") == [], \
            "pings must stop while the event loop is blocked"
        report = next(m for m in journal.messages if "event loop blocked" in m)
        assert "a_handler_that_blocks_the_loop" in report and "release.wait(30)" in report
        # The frames it does not show were not read: linecache keeps what is read.
        assert outer not in linecache.cache and "_run_once" not in report
        release.set()
        notify_socket.wait_for("WATCHDOG=1")  # and resume once it is free
    finally:
        release.set()
        logger.removeHandler(journal)
        asyncio.run_coroutine_threadsafe(watchdog.stop(), loop).result(5)
        asyncio.run_coroutine_threadsafe(stalls.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


async def _start(watchdog: Watchdog, stalls: StallReporter | None = None) -> None:
    watchdog.start()
    if stalls is not None:
        stalls.start()


def test_watchdog_withholds_pings_while_a_health_check_fails(
        monkeypatch: pytest.MonkeyPatch, notify_socket: NotifySocket) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_socket.path))
    loop, thread = _run_loop_in_thread()
    healthy = threading.Event()
    healthy.set()
    failing_checks = 0
    seen = threading.Event()

    def portal_check() -> str | None:
        nonlocal failing_checks
        if healthy.is_set():
            return None
        failing_checks += 1
        if failing_checks == 1:
            send_marker(notify_socket, "FAILING")  # before this round's ping would go
        if failing_checks == 4:
            seen.set()  # three whole rounds since: each would have pinged
        return "thread died"

    watchdog = Watchdog(Notifier(), interval=0.05)
    watchdog.add_check("portal", portal_check)
    asyncio.run_coroutine_threadsafe(_start(watchdog), loop).result(5)
    try:
        notify_socket.wait_for("WATCHDOG=1")
        healthy.clear()
        assert seen.wait(10), "the watchdog stopped checking"
        send_marker(notify_socket, "SEEN")
        notify_socket.wait_for("SEEN")
        assert between(notify_socket, "FAILING", "SEEN") == []
        assert watchdog.last_problem == "portal: thread died"
        healthy.set()
        notify_socket.wait_for("WATCHDOG=1")
    finally:
        asyncio.run_coroutine_threadsafe(watchdog.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def test_the_stall_reporter_records_how_long_where_and_whether_after_ready() -> None:

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
