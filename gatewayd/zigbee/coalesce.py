"""Report coalescing: at most one cloud publication per property per interval, newest value wins."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_NOTHING = object()

Key = tuple[str, str, str]  # device id, node id, property id


class Coalescer:
    """At most one publication per property per ``interval``; the latest value wins.

    The first value after a quiet period goes out at once (no added latency); values
    arriving faster wait in ``pending`` (one slot per property, so memory is bounded by
    the number of properties, not by the rate of reports).

    :meth:`put_changed` is for readings that only matter when they move (link quality):
    a value equal to the latest one published or waiting is dropped.
    :meth:`put_changed_soon` reads such a value at the end of the loop's current pass.
    """

    def __init__(self, publish: Callable[[Key, Any], None], interval: float) -> None:
        self.publish = publish
        self.interval = interval
        # The loop it runs on, taken once: on Python 3.11 every asyncio.get_running_loop()
        # checks the process id with a system call, and put() runs once per report.
        self._loop: asyncio.AbstractEventLoop | None = None
        self.pending: dict[Key, Any] = {}
        self._last: dict[Key, float] = {}
        self._sent: dict[Key, Any] = {}  # the latest value handed to publish, per property
        self._timer: asyncio.TimerHandle | None = None
        self._soon: dict[Key, Callable[[], Any]] = {}  # read at the end of this pass
        self._soon_handle: asyncio.Handle | None = None

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def put(self, key: Key, value: Any) -> None:
        loop = self._running_loop()
        now = loop.time()
        if key not in self.pending and now - self._last.get(key, -1e9) >= self.interval:
            self._last[key] = now
            self._sent[key] = value
            self.publish(key, value)
            return
        self.pending[key] = value
        if self._timer is None:
            self._timer = loop.call_later(self.interval, self.flush)

    def flush(self) -> None:
        self._timer = None
        now = self._running_loop().time()
        pending, self.pending = self.pending, {}
        for key, value in pending.items():
            self._last[key] = now
            self._sent[key] = value
            self.publish(key, value)

    def put_changed(self, key: Key, value: Any) -> None:
        if self.pending.get(key, self._sent.get(key, _NOTHING)) != value:
            self.put(key, value)

    def put_changed_soon(self, key: Key, read: Callable[[], Any]) -> None:
        """:meth:`put_changed` with what ``read()`` returns (None: nothing) at the end of
        the loop's current pass. zigpy tells its listeners about a message before the
        device takes the message's link quality: read at once, it is the last one's.
        One handle per pass, however many frames the pass handles."""
        self._soon[key] = read
        if self._soon_handle is None:
            self._soon_handle = self._running_loop().call_soon(self._end_of_pass)

    def _end_of_pass(self) -> None:
        self._soon_handle = None
        self.read_soon()

    def read_soon(self) -> None:
        """Read now what :meth:`put_changed_soon` queued (the end of the pass does)."""
        if self._soon_handle is not None:
            self._soon_handle.cancel()
            self._soon_handle = None
        soon, self._soon = self._soon, {}
        for key, read in soon.items():
            try:
                value = read()
            except Exception:  # one bad reading must not lose the others
                log.exception("zigbee: reading %s failed", "/".join(key))
                continue
            if value is not None:
                self.put_changed(key, value)

    def forget(self, device_id: str) -> None:
        for store in (self.pending, self._last, self._sent, self._soon):
            for key in [k for k in store if k[0] == device_id]:
                del store[key]

    def cancel(self) -> None:
        for handle in (self._timer, self._soon_handle):
            if handle is not None:
                handle.cancel()
        self._timer = self._soon_handle = None
        self._soon.clear()
