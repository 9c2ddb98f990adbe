"""Wake-ups on time for the emulator's report stream: a Linux timerfd on the event loop.

A report is due at ``start_at + k / rate`` on ``CLOCK_MONOTONIC`` and its latency is
counted from then (gatewayd/zigbee/virtual/report_stream.py), so every moment the
emulator sends it late is charged to the host under test. ``asyncio.sleep`` wakes late:
the selector rounds its timeout up to the next millisecond (epoll counts in
milliseconds) and the stream's task resumes a loop pass after the timer's callback. On
the bench machine a stream paced by it sent its reports 1.2 ms late at the median and
2.3 ms at p99 at 100 reports/s (0.7 and 1.3 ms at 250/s): a floor under both stacks'
latency, and most of it. A timerfd armed at the absolute due time fires with the
kernel's high-resolution timer, and the loop sees it as a readable descriptor: 0.18 and
0.29 ms (0.10 and 0.17 ms at 250/s), with no thread and no more CPU per wake-up
(bench/README.md, "The emulator's clock").

Python 3.11 has no ``os.timerfd_create`` (3.13 has), so this calls libc through ctypes.
Where timerfd is missing (not Linux), :func:`timerfd_alarm` gives None and the stream
keeps ``asyncio.sleep``; ``stream_status`` ``clock`` says which one a stream got.

Standard library only. The hub's virtual radio does not use this (it paces its stream
with ``asyncio.sleep``, and the hub's process does not load ctypes for it).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import sys

CLOCK_MONOTONIC = 1  # the clock of time.monotonic() and so of loop.time()
TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc() -> ctypes.CDLL | None:
    """libc with ``timerfd_create`` and ``timerfd_settime`` typed, or None without them."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        create, settime = libc.timerfd_create, libc.timerfd_settime
    except (OSError, AttributeError):
        return None
    create.argtypes, create.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec),
                        ctypes.POINTER(_Itimerspec)]
    settime.restype = ctypes.c_int
    return libc


class TimerfdAlarm:
    """One timerfd, read by the running loop; :meth:`until` arms it at an absolute time
    (an ``Alarm`` of gatewayd/zigbee/virtual/report_stream.py)."""

    name = "timerfd"

    def __init__(self, libc: ctypes.CDLL, loop: asyncio.AbstractEventLoop) -> None:
        fd = libc.timerfd_create(CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_create: {os.strerror(err)}")
        self._libc, self._loop, self._fd = libc, loop, fd
        self._waiter: asyncio.Future[None] | None = None
        loop.add_reader(fd, self._fired)

    def _arm(self, when: float) -> None:
        """Fire at ``when`` (loop.time()). Arming again drops a pending expiry."""
        sec = int(when)
        spec = _Itimerspec(_Timespec(0, 0),
                           _Timespec(sec, min(int((when - sec) * 1e9), 999_999_999)))
        if self._libc.timerfd_settime(self._fd, TFD_TIMER_ABSTIME, ctypes.byref(spec),
                                      None) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")

    def _fired(self) -> None:
        try:
            os.read(self._fd, 8)  # the expiry count; reading it makes the fd quiet again
        except BlockingIOError:  # re-armed since it became readable: a stale wake-up
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def until(self, when: float) -> None:
        if when <= self._loop.time():
            return
        self._waiter = waiter = self._loop.create_future()
        self._arm(when)
        try:
            await waiter
        finally:
            # Cancelled: the timer stays armed and may fire into nobody's waiter; the next
            # wait arms it again, which drops an expiry not yet read (_fired sees EAGAIN).
            self._waiter = None

    def close(self) -> None:
        if self._fd < 0:
            return
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1


def timerfd_alarm() -> TimerfdAlarm | None:
    """A timerfd alarm for the running loop, or None where there is none."""
    libc = _libc()
    if libc is None:
        return None
    try:
        return TimerfdAlarm(libc, asyncio.get_running_loop())
    except OSError:  # out of descriptors, or a kernel without timerfd: late, not never
        return None
