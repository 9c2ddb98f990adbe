"""The control socket's calls that may wait long, each kind in its own few slots.

waitress serves the socket with a fixed number of threads, and a request waits for a free
one without a word. A platform request may wait up to 300 s, a factory reset 60 s: when
they held every thread, ``gatewayctl status`` waited behind them, and a ``gatewayctl
reset`` given up as "did not answer" (exit 3) ran minutes later. So each kind that may wait
long holds at most its :class:`Slots`, in total and per user (the peer's uid on the
socket); one more is refused at once (:class:`Busy`: ``429 too-many-waiting``), and the
socket has :data:`SOCKET_THREADS`: every slot plus :data:`QUICK_THREADS` that the other
calls (status, devices, ble-window...), which answer within the core call's 15 s, always
find free.

No Flask here: the daemon takes :data:`SOCKET_THREADS` from this module.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

BUSY_CODE = "too-many-waiting"
# The control socket's body limit (Flask's MAX_CONTENT_LENGTH). waitress' own is a little
# above it, so that Flask refuses a body over it in the socket's JSON error shape: waitress
# refuses in plain text, which gatewayctl could only show as it came.
MAX_BODY = 64 * 1024
SERVER_BODY_SLACK = 4096


class Busy(Exception):
    """Every slot of a kind (or every one a user may take) is held; the message says so to
    the person asking."""


@dataclass(frozen=True)
class SlotSpec:
    what: str  # plural, for the message: "platform requests"
    total: int
    per_client: int


PLATFORM = SlotSpec("platform requests", total=3, per_client=2)
# Resets run one at a time (gatewayd.hub): one running and one waiting are all it needs.
RESETS = SlotSpec("resets and button presses", total=2, per_client=2)
QUICK_THREADS = 3
SOCKET_THREADS = PLATFORM.total + RESETS.total + QUICK_THREADS


class Slots:
    """At most ``spec.total`` holders at once, ``spec.per_client`` of them one client's."""

    def __init__(self, spec: SlotSpec) -> None:
        self.spec = spec
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}

    @contextmanager
    def hold(self, client: str) -> Iterator[None]:
        spec = self.spec
        with self._lock:
            total = sum(self._held.values())
            if total >= spec.total:
                raise Busy(f"{total} {spec.what} already wait on the control socket, the most "
                           "it takes at once; try again when one has finished")
            mine = self._held.get(client, 0)
            if mine >= spec.per_client:
                raise Busy(f"you have {mine} {spec.what} waiting on the control socket "
                           "already, the most one user may; try again when one has finished")
            self._held[client] = mine + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._held[client] - 1
                if left:
                    self._held[client] = left
                else:
                    del self._held[client]
