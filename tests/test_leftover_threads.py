"""The suite's process exits even when a test leaves a zigpy database thread running."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LEAKY = textwrap.dedent("""
    import asyncio
    import weakref

    import aiosqlite

    KEPT = []  # as a failure's traceback keeps a controller and its database

    class _Gone:
        pass

    # a dead weakref.proxy among the objects (Flask and jinja2 leave some): the scan
    # for connections must not trip over it
    DEAD = weakref.proxy(_Gone())

    def test_leaves_a_connection_open(tmp_path):
        async def main():
            KEPT.append(await aiosqlite.connect(tmp_path / "zigbee.db"))
        asyncio.run(main())
        assert KEPT[0]._thread.is_alive()
""")


def test_a_connection_left_open_does_not_hold_the_run(tmp_path: Path) -> None:
    # Without the plugin this run waits for the thread forever (checked by hand: still
    # waiting after 20 s, where it ends in under a second with it); the bound only keeps
    # a broken plugin from hanging the suite.
    (tmp_path / "test_leaky.py").write_text(LEAKY)
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            "-p", "tests.leftover_threads", str(tmp_path / "test_leaky.py")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the run hung at exit: {exc.stdout!r}") from None
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    assert "stopped 1 aiosqlite connection(s)" in done.stdout
