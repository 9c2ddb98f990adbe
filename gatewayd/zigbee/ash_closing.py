"""bellows' ASH when its connection closes with a DATA frame in flight.

**A fresh exception for each connection.** bellows 1.2.1 fails the DATA frames still
waiting for their ACK, when the connection closes, with
``_cancel_pending_data_frames(self, exc=RuntimeError("Connection has been closed"))``:
one exception object, made once as the default argument, for every connection of the
process. Each waiting ``_send_data_frame`` raises that same object again, and every
raise adds the raising frames to its ``__traceback__``, so the traceback grew a chain of
every lost session's frames, and through them their ``AshProtocol``, ``Gateway``,
``EZSP`` and ``ControllerApplication`` with all its devices, clusters and caches. The
bridge starts a new application after each loss of the radio, and every loss with a
command in flight (a link dropped, an NCP reset) kept the old one alive: 40 drops with 20
plugs, 39 applications and RSS 59 -> 90 MB. Here the default is None and the exception
is made at each call.

This replaces bellows' method class-wide, once, when the bellows radio is imported
(:func:`gatewayd.zigbee.radio.controller_class`, before any connection), and only on
the bellows version it was written for (:mod:`~gatewayd.zigbee.pinned`); it is never
undone. Everything else in the method is bellows' own, line for line. It is what we
would offer bellows, as the patch in bench/README.md ("bellows' ASH on a closed
connection"), which is not sent from here. tests/test_zigbee_ash_closing.py drops the
EZSP emulator's link under a ``/set``.
"""

from __future__ import annotations

from typing import Any

import bellows.ash as ash

from gatewayd.zigbee.pinned import written_for

CLOSED = "Connection has been closed"  # bellows' words


def cancel_pending_data_frames(self: Any, exc: BaseException | None = None) -> None:
    """``AshProtocol._cancel_pending_data_frames`` with an exception made per call."""
    if exc is None:
        exc = RuntimeError(CLOSED)
    for fut in self._pending_data_frames.values():
        if not fut.done():
            fut.set_exception(exc)


def install() -> bool:
    """Put it in place on bellows' ``AshProtocol``, once; False where it stays off."""
    protocol = ash.AshProtocol
    if protocol._cancel_pending_data_frames is cancel_pending_data_frames:
        return True
    if not written_for("bellows", "the ASH fixes for a closed connection"):
        return False
    # setattr: replacing the class's method, class-wide (see eui64.py).
    setattr(protocol, "_cancel_pending_data_frames", cancel_pending_data_frames)  # noqa: B010
    return True
