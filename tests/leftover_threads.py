"""A pytest plugin: no database thread left behind keeps the test process from exiting.

aiosqlite runs each connection in a thread that is not a daemon and ends only when the
connection is closed. A test that fails between a zigpy controller's start and its
shutdown (a bridge built without tests/test_bridge.started(), for one) leaves that
thread waiting on its queue, held alive by the failure's traceback, and the interpreter
then waits for it at exit: the run hangs after its summary, with the results printed,
until CI's time limit. At the end of the session every connection still running is
stopped the way aiosqlite's own finaliser stops it; a line names how many were left.
"""

from __future__ import annotations

import gc
import sys
from typing import Any

import pytest


def stop_leftover_connections() -> int:
    """Stop every aiosqlite connection whose thread still runs; how many there were."""
    core = sys.modules.get("aiosqlite.core")
    if core is None:
        return 0
    # type(), not isinstance(): isinstance() on a dead weakref.proxy (Flask and jinja2
    # leave some) raises ReferenceError, which would end the scan and leave the hang
    left = [obj for obj in gc.get_objects()
            if type(obj) is core.Connection and obj._thread.is_alive()]
    for conn in left:
        conn.stop()
    for conn in left:
        conn._thread.join(5)
    return len(left)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    stopped = stop_leftover_connections()
    if stopped:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write("\n")  # the progress line may still be open
            reporter.write_line(f"stopped {stopped} aiosqlite connection(s) a test left "
                                f"open (tests/leftover_threads.py)")
