"""bellows' ASH when its connection closes with a DATA frame in flight: two fixes.

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

**A send nobody waits for fails quietly.** ``send_data`` runs the send as a task behind
``asyncio.shield`` ("cannot really be cancelled"). When its caller is cancelled first (a
``/set``'s timeout, zigpy giving up on a request), the shield stops listening to the
task, and when the send then fails (the link dropped while bellows still waited for the
frame's ACK) nobody retrieves the failure: asyncio logged it as "Task exception was
never retrieved", with bellows' traceback, in the hub's log. The caller has had its own
answer already; here the task's failure is retrieved and logged at debug level, on
bellows' logger.

Both replace bellows' methods class-wide, once, when the bellows radio is imported
(:func:`gatewayd.zigbee.radio.controller_class`, before any connection), and only on
the bellows version they were written for (:mod:`~gatewayd.zigbee.pinned`); they are
never undone. Everything else in the two methods is bellows' own, line for line. They
are what we would offer bellows, as the patch in bench/README.md ("bellows' ASH on a
closed connection"), which is not sent from here. tests/test_zigbee_ash_closing.py
breaks, or silences, the EZSP emulator's link under a ``/set``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import bellows.ash as ash

from gatewayd.zigbee.pinned import written_for

CLOSED = "Connection has been closed"  # bellows' words

_log = logging.getLogger(ash.__name__)  # bellows' logger, where bellows would log it


def cancel_pending_data_frames(self: Any, exc: BaseException | None = None) -> None:
    """``AshProtocol._cancel_pending_data_frames`` with an exception made per call."""
    if exc is None:
        exc = RuntimeError(CLOSED)
    for fut in self._pending_data_frames.values():
        if not fut.done():
            fut.set_exception(exc)


async def send_data(self: Any, data: bytes) -> None:
    """``AshProtocol.send_data``, the send's outcome retrieved even with nobody waiting."""
    # Sending data is a critical operation and cannot really be cancelled
    send = ash.create_eager_task(
        self._send_data_frame(
            # All of the other fields will be set during transmission/retries
            ash.DataFrame(frm_num=None, re_tx=None, ack_num=None, ezsp_frame=data)
        )
    )
    send.add_done_callback(send_data_done)
    await asyncio.shield(send)


def send_data_done(send: asyncio.Task[None]) -> None:
    """Once the caller of ``send_data`` is cancelled, nothing awaits the send."""
    if not send.cancelled() and (exc := send.exception()) is not None:
        _log.debug("Failed to send data frame: %r", exc)


def install() -> bool:
    """Put both in place on bellows' ``AshProtocol``, once; False where they stay off."""
    protocol = ash.AshProtocol
    if protocol._cancel_pending_data_frames is cancel_pending_data_frames and \
            protocol.send_data is send_data:
        return True
    if not written_for("bellows", "the ASH fixes for a closed connection"):
        return False
    # setattr: replacing the class's methods, class-wide (see eui64.py).
    setattr(protocol, "_cancel_pending_data_frames", cancel_pending_data_frames)  # noqa: B010
    setattr(protocol, "send_data", send_data)  # noqa: B010
    return True
