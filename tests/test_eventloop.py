"""gatewayd.runtime.eventloop: the loop closes without waiting on tasks that ignore their
cancellation (asyncio.run() waited for them for ever). Run in a thread: a regression hangs
there, and the test fails at its bound instead of hanging the suite."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from gatewayd.runtime import eventloop

pytestmark = pytest.mark.timeout(30)


async def _stubborn(started: asyncio.Event) -> None:
    started.set()
    for _ in range(1000):  # far more cancellations than anyone sends it
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass


def _run_bounded(main: Callable[[], Coroutine[Any, Any, Any]], grace: float) -> Any:
    result: list[Any] = []
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
        assert _run_bounded(main, grace=0.2) == 3
    assert ended == ["polite"]  # cancelled and waited for, as asyncio.run() does
    assert "after their cancellation: 1 (stubborn)" in caplog.text
    assert "Task was destroyed but it is pending" not in caplog.text
