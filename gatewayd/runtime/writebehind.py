"""A small private file written behind the event loop: the latest content wins.

:func:`~gatewayd.runtime.atomicfile.atomic_write` fsyncs the file and its directory; on a
Raspberry Pi's SD card each fsync can take tens to hundreds of milliseconds. Done on the
loop, a burst of small state changes (a mass Zigbee join: ``zigbee-setup.json`` once per
device) stalled MQTT and every other report once per write.

:meth:`WriteBehind.put` records the content and returns at once; one task per file writes
it in a worker thread, one write at a time and in the order put. What is put while a write
runs waits, and only the latest of it is written next (bounded: one content written, one
waiting). The write stays atomic, fsynced and of the file's mode: a reader or a power cut
sees an old content or a newer one. A caller that must not go on before its content is on
disk awaits :meth:`WriteBehind.written`; the stop awaits :meth:`WriteBehind.flush`.
A failed write is handed to ``failed`` (the owner logs what it costs) and the next
content is still written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from gatewayd.runtime.atomicfile import atomic_write

log = logging.getLogger(__name__)

# atomic_write's signature: path, data, mode, owner
Write = Callable[[Path, bytes, int, tuple[int, int] | None], None]
REMOVE = None  # put(REMOVE): the file is deleted (in its turn, like a content)


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


class WriteBehind:
    """``path`` written off the loop; ``write`` does one write (atomic_write; tests hand in
    one that blocks), ``remove`` deletes the file."""

    def __init__(self, path: Path, failed: Callable[[OSError], None], *, mode: int = 0o600,
                 owner: tuple[int, int] | None = None, write: Write = atomic_write,
                 remove: Callable[[Path], None] = _remove) -> None:
        self.path, self.failed, self.mode, self.owner = path, failed, mode, owner
        self._write, self._remove = write, remove
        self._next: bytes | None = None  # the content waiting (REMOVE: a deletion)
        self._put = 0  # number of the last content put
        self._settled = 0  # number of the last content written, or whose write failed
        self._task: asyncio.Task[None] | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def put(self, data: bytes | None) -> None:
        """Write ``data`` (REMOVE: delete the file) after what is being written; on the loop."""
        self._next = data
        self._put += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"write-{self.path.name}")

    async def written(self) -> None:
        """Wait until what was put so far is written (or its write failed)."""
        if self._settled >= self._put:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((self._put, waiter))
        await waiter

    async def flush(self) -> None:
        """At stop: what was put lands (a cancelled caller leaves the write going)."""
        await asyncio.shield(self.written())

    async def _run(self) -> None:
        while self._settled < self._put:
            number, data = self._put, self._next
            self._next = None  # the content is the writer's now: no copy kept twice
            try:
                if data is None:  # REMOVE
                    await asyncio.to_thread(self._remove, self.path)
                else:
                    await asyncio.to_thread(self._write, self.path, data, self.mode,
                                            self.owner)
            except OSError as exc:
                self.failed(exc)
            except Exception:  # a bug: logged, and the writer goes on with the next
                log.exception("writing %s failed", self.path)
            self._settle(number)

    def _settle(self, number: int) -> None:
        self._settled = number
        waiting = []
        for target, waiter in self._waiters:
            if target <= number:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                waiting.append((target, waiter))
        self._waiters = waiting
