"""The daemon's event loop, run to the end of its main coroutine and closed without
waiting on tasks that ignore their cancellation.

``asyncio.run()`` cancels what is still running when its coroutine returns and then waits
for all of it, for ever: one plugin call that swallows ``CancelledError`` (the virtual
device host cancelled it and walked away, :mod:`gatewayd.virtual.abandoned`) kept a stopped
gatewayd running until systemd's SIGKILL, and the simulator's world up with it. :func:`run`
is what both entry points (``gatewayd`` and ``gatewayd --simulate``) use instead: every
task still running is cancelled and gets :data:`CLOSE_GRACE` seconds to end, as a whole,
and what has not ended then is left behind (and named in the log). What is left ends with
the process. (No registry of abandoned calls: a grace that only such calls wait out costs
a stop two seconds, once, and keeps this free of state shared across the process.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

# How long a task the daemon did not give up has, at the loop's close, to end after its
# cancellation (a component's own stop has its budget already: this is for leftovers).
CLOSE_GRACE = 2.0

def run(main: Coroutine[Any, Any, T], *, grace: float = CLOSE_GRACE) -> T:
    """Run ``main`` on a new event loop, as ``asyncio.run()`` does, and close the loop
    without waiting on tasks that ignore their cancellation (see the module's docstring)."""
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            _finish(loop, grace)
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _finish(loop: asyncio.AbstractEventLoop, grace: float) -> None:
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
        # never end either.
        task = loop.create_task(closing)
        loop.run_until_complete(asyncio.wait({task}, timeout=grace))
        if not task.done():
            log.warning("closing the event loop: %s did not end within %g s", what, grace)
            task.cancel()
            task._log_destroy_pending = False  # type: ignore[attr-defined]


async def _ended(loop: asyncio.AbstractEventLoop, tasks: set[asyncio.Task[Any]],
                 grace: float) -> None:
    """Until every one of ``tasks`` has ended, for at most ``grace`` s."""
    deadline = loop.time() + grace
    while waited := {task for task in tasks if not task.done()}:
        if (remaining := deadline - loop.time()) <= 0:
            return
        await asyncio.wait(waited, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
