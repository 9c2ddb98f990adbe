"""The daemon's event loop, run to the end of its main coroutine and closed without
waiting on tasks that ignore their cancellation.

``asyncio.run()`` cancels what is still running when its coroutine returns and then waits
for all of it, for ever: one plugin call that swallows ``CancelledError`` (the virtual
device host cancelled it and walked away, :mod:`gatewayd.virtual.abandoned`) kept a stopped
gatewayd running until systemd's SIGKILL, and the simulator's world up with it. :func:`run`
is what both entry points (``gatewayd`` and ``gatewayd --simulate``) use instead: every
task still running is cancelled and gets :data:`CLOSE_GRACE` seconds to end, as a whole,
and what has not ended then is left behind (and named in the log). What is left ends with
the process, which its entry point then ends with :func:`end_process` (:class:`Finished`
says why the interpreter's own exit would not). (No registry of abandoned calls: a grace
that only such calls wait out costs a stop two seconds, once, and keeps this free of state
shared across the process.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Generic, NoReturn, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

# How long a task the daemon did not give up has, at the loop's close, to end after its
# cancellation (a component's own stop has its budget already: this is for leftovers).
CLOSE_GRACE = 2.0

@dataclass(frozen=True)
class Finished(Generic[T]):
    """What ``main`` returned, and whether anything was left running when the loop closed
    (a task, an async generator or an executor thread): then only :func:`end_process` ends
    the process. Python would join the executor's threads at exit, and a task that swallows
    ``GeneratorExit`` too loops for ever in the interpreter's shutdown, a core at 100 %."""

    result: T
    # What was left running, held here until the process ends: dropped, each coroutine
    # would be closed where it stands (a GeneratorExit a plugin may swallow, the executor
    # shutdown's join of its thread), and the process would wait on it after all.
    left: tuple[asyncio.Task[Any], ...] = ()

    @property
    def stranded(self) -> bool:
        return bool(self.left)


def end_process(code: int) -> NoReturn:
    """End the process now with ``code``, its log and standard streams flushed, without
    waiting for what was left running (see :class:`Finished`)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def run(main: Coroutine[Any, Any, T], *, grace: float = CLOSE_GRACE) -> Finished[T]:
    """Run ``main`` on a new event loop, as ``asyncio.run()`` does, and close the loop
    without waiting on tasks that ignore their cancellation (see the module's docstring)."""
    loop = asyncio.new_event_loop()
    left: tuple[asyncio.Task[Any], ...] = ()
    try:
        asyncio.set_event_loop(loop)
        result = loop.run_until_complete(main)
    finally:
        try:
            left = _finish(loop, grace)
        finally:
            asyncio.set_event_loop(None)
            loop.close()
    return Finished(result, left)


def _finish(loop: asyncio.AbstractEventLoop, grace: float) -> tuple[asyncio.Task[Any], ...]:
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    loop.run_until_complete(_ended(loop, pending, grace))
    for task in pending:
        if task.done() and not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler({
                "message": "unhandled exception while the event loop closed",
                "exception": task.exception(), "task": task})
    left = [task for task in pending if not task.done()]
    if left:
        log.warning("tasks still running after their cancellation: %d (%s); gatewayd exits "
                    "without them", len(left), ", ".join(sorted(t.get_name() for t in left)))
        for task in left:
            # Destroyed pending when the process ends, as intended: asyncio would log each
            # as an error ("Task was destroyed but it is pending!").
            task._log_destroy_pending = False  # type: ignore[attr-defined]
    for what, closing in (("async generators", loop.shutdown_asyncgens()),
                          ("the default executor", loop.shutdown_default_executor())):
        # Bounded as well: an async generator or an executor thread of such a task may
        # never end either. Not cancelled: the executor's shutdown would join its thread.
        task = loop.create_task(closing)
        loop.run_until_complete(asyncio.wait({task}, timeout=grace))
        if not task.done():
            log.warning("closing the event loop: %s did not end within %g s", what, grace)
            task._log_destroy_pending = False  # type: ignore[attr-defined]
            left.append(task)
    return tuple(left)


async def _ended(loop: asyncio.AbstractEventLoop, tasks: set[asyncio.Task[Any]],
                 grace: float) -> None:
    """Until every one of ``tasks`` has ended, for at most ``grace`` s."""
    deadline = loop.time() + grace
    while waited := {task for task in tasks if not task.done()}:
        if (remaining := deadline - loop.time()) <= 0:
            return
        await asyncio.wait(waited, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
