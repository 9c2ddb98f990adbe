"""gatewayd.runtime.eventloop: the loop closes without waiting on tasks that ignore their
cancellation (asyncio.run() waited for them for ever). Run in a thread: a regression hangs
there, and the test fails at its bound instead of hanging the suite."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from gatewayd.runtime import eventloop

pytestmark = pytest.mark.timeout(30)
REPO = Path(__file__).resolve().parent.parent


async def _stubborn(started: asyncio.Event) -> None:
    started.set()
    for _ in range(1000):  # far more cancellations than anyone sends it
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass


def _run_bounded(main: Callable[[], Coroutine[Any, Any, Any]], grace: float
                 ) -> eventloop.Finished[Any]:
    result: list[eventloop.Finished[Any]] = []
    thread = threading.Thread(
        target=lambda: result.append(eventloop.run(main(), grace=grace)), daemon=True)
    thread.start()
    thread.join(15)
    assert not thread.is_alive(), "the event loop did not close"
    return result[0]


def test_a_task_ignoring_its_cancellation_is_left_after_the_grace(
        caplog: pytest.LogCaptureFixture) -> None:
    ended = []
    tasks: list[asyncio.Task[None]] = []

    async def polite(started: asyncio.Event) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            ended.append("polite")

    async def main() -> int:
        started = [asyncio.Event(), asyncio.Event()]
        tasks.append(asyncio.create_task(_stubborn(started[0]), name="stubborn"))
        tasks.append(asyncio.create_task(polite(started[1]), name="polite"))
        for event in started:
            await event.wait()
        return 3

    with caplog.at_level(logging.WARNING):
        finished = _run_bounded(main, grace=0.2)
    assert finished.result == 3 and finished.stranded
    assert ended == ["polite"]  # cancelled and waited for, as asyncio.run() does
    assert "after their cancellation: 1 (stubborn)" in caplog.text
    assert "Task was destroyed but it is pending" not in caplog.text


STRANDED = """
import asyncio, sys, time
from gatewayd.runtime import eventloop

async def swallows_everything(started):  # GeneratorExit too, as `except BaseException` does
    started.set()
    while True:
        try:
            await asyncio.sleep(3600)
        except BaseException:
            pass

async def waits_on_a_thread(started):
    started.set()
    while True:
        try:
            await asyncio.to_thread(time.sleep, 3600)
        except BaseException:
            pass

async def main():
    started = [asyncio.Event(), asyncio.Event()]
    keep = [asyncio.create_task(swallows_everything(started[0])),
            asyncio.create_task(waits_on_a_thread(started[1]))]
    for event in started:
        await event.wait()
    return 7

finished = eventloop.run(main(), grace=0.2)
print("stranded", finished.stranded, flush=True)
if finished.stranded:
    eventloop.end_process(finished.result)
sys.exit(0)
"""


def test_a_process_with_tasks_and_threads_left_running_ends_with_mains_code() -> None:
    """Left to the interpreter's exit, a task that swallows GeneratorExit too loops there for
    ever (a core at 100 %), and an executor thread is joined: gatewayd never ended. The
    daemon (and the simulator, once its world is down) ends the process instead."""
    done = subprocess.run([sys.executable, "-c", STRANDED], capture_output=True, text=True,
                          timeout=25, cwd=REPO)
    assert (done.returncode, done.stdout) == (7, "stranded True\n"), done.stderr
    assert "tasks still running after their cancellation: 2" in done.stderr
