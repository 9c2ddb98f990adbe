"""A load generator on the virtual radio: numbered attribute reports at a set rate.

For the benchmarks (``bench/``) and for app developers who want to see how their app
copes with a busy network (``gatewayctl zigbee sim stream``, docs/zigbee.md).

The stream is deterministic so that a receiver can tell which report it got and when
it was due: report ``k`` (0-based) comes from device ``k % n`` (the devices that have
the cluster, in IEEE order) with the raw value ``(offset + k // n) % modulo``, and it is due at
``start_at + k / rate`` on ``CLOCK_MONOTONIC``, the clock every process on the machine
shares. Measuring latency from the due time rather than from the moment the generator
got round to sending counts the time a report waited because the hub was busy (no
"coordinated omission"). ``rate = 0`` sends as fast as the event loop allows.

The generator runs on the simulated radio's event loop. It sends at most
:data:`MAX_BURST` reports before yielding, and waits while its ``gate`` is closed (the NCP
emulator closes it while its serial line to the host is backed up, as a real coordinator
out of buffers stops acknowledging frames on the air), so a stream that outruns the hub
slows down (it falls behind its schedule, which :meth:`ReportStream.status` reports)
instead of queueing reports without bound.

Its waits go through an :class:`Alarm`. By default that is ``asyncio.sleep``, which wakes
up to a couple of milliseconds late (the selector counts in milliseconds); the NCP
emulator gives its streams a timerfd (gatewayd/simulator/ncp/alarm.py) so that the
radio's own lateness stays out of the latency a benchmark charges to the host.
``status()`` says which clock a stream has and how late its reports went out (median,
p99 and max).

The stream's values are saved once, when it ends, not each second while it runs: saving
200 devices' state took its radio's loop about 4 ms and then a thread 5 ms of the GIL
each second, and every report due then was late, for whichever host listened (the p99
floor both stacks shared in bench/README.md, "The emulator's own stall"). A radio killed
mid-stream restarts with the values from before it.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from gatewayd.zigbee.virtual.zcl import VirtualRadioError

if TYPE_CHECKING:
    from gatewayd.zigbee.virtual.device import SimDevice

MAX_BURST = 64  # reports sent between two yields to the event loop
MAX_COUNT = 100_000_000
MAX_RATE = 100_000.0
MAX_START_DELAY = 60.0  # seconds; a start further ahead is a mistake, not a plan
LATE_BIN = 1e-5  # the lateness histogram's resolution, seconds
LATE_BINS = 10_000  # up to 100 ms; a later report counts in the last bin


class Alarm(Protocol):
    """Wakes the stream at a ``loop.time()`` (``CLOCK_MONOTONIC``) time, never before."""

    name: str

    async def until(self, when: float) -> None: ...

    def close(self) -> None: ...


class LoopAlarm:
    """``asyncio.sleep``: no resources, up to a few milliseconds late."""

    name = "asyncio"

    async def until(self, when: float) -> None:
        await asyncio.sleep(max(0.0, when - asyncio.get_running_loop().time()))

    def close(self) -> None:
        pass


class Lateness:
    """How late reports went out: a histogram of 10 µs bins (40 KB, whatever the count)."""

    def __init__(self) -> None:
        self.bins = array("I", bytes(4 * LATE_BINS))
        self.count = 0
        self.max = 0.0

    def add(self, late: float) -> None:
        self.bins[min(int(late / LATE_BIN), LATE_BINS - 1) if late > 0 else 0] += 1
        self.count += 1
        self.max = max(self.max, late)

    def percentile(self, p: float) -> float | None:
        """The upper edge of the bin holding the ``p``-th percentile (seconds)."""
        if not self.count:
            return None
        rank, seen = max(1, round(self.count * p / 100)), 0
        for n, c in enumerate(self.bins):
            seen += c
            if seen >= rank:
                return min((n + 1) * LATE_BIN, self.max) if n < LATE_BINS - 1 else self.max
        return self.max


def _show(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.3f}"


def _number(name: str, value: Any, low: float, high: float, *, integer: bool) -> float:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        what = "an integer" if integer else "a number"
        raise VirtualRadioError(f"{name}: must be {what} from {_show(low)} to {_show(high)}, "
                                f"got {value!r}")
    return value


class ReportStream:
    """``count`` reports of ``cluster.attribute`` spread round-robin over ``devices``,
    which must all have that attribute (:meth:`VirtualNetwork.stream` picks them)."""

    def __init__(self, devices: list[SimDevice], *, cluster: str, attribute: str,
                 count: int, rate: float, start_at: float | None = None,
                 modulo: int = 30000, offset: int = 0,
                 gate: asyncio.Event | None = None,
                 alarm: Callable[[], Alarm | None] = LoopAlarm) -> None:
        if not devices:
            raise VirtualRadioError(f"no simulated device has a {cluster!r} server cluster")
        self.count = int(_number("count", count, 1, MAX_COUNT, integer=True))
        self.rate = float(_number("rate", rate, 0, MAX_RATE, integer=False))
        self.modulo = int(_number("modulo", modulo, 1, 2**31, integer=True))
        self.offset = int(_number("offset", offset, 0, 2**31, integer=True))
        now = time.monotonic()
        if start_at is None:
            start_at = now
        self.start_at = float(_number("start_at", start_at, now - 1.0, now + MAX_START_DELAY,
                                      integer=False))
        self.devices = devices
        if self.count // len(devices) >= self.modulo:
            raise VirtualRadioError(f"count: at most {self.modulo * len(devices)} reports over "
                                    f"{len(devices)} devices, or report numbers repeat "
                                    "(raise modulo)")
        self.cluster, self.attribute = cluster, attribute
        self.gate = gate
        self._alarm = alarm  # makes the stream's alarm on its loop; None there: LoopAlarm
        self.clock: str | None = None  # the alarm's name, once running
        self.sent = 0
        self.lateness = Lateness() if self.rate else None
        self.finished_at: float | None = None
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def behind_max(self) -> float:
        """The most a report was sent after it was due, seconds (0 for an unpaced stream)."""
        return self.lateness.max if self.lateness is not None else 0.0

    def plan(self) -> dict[str, Any]:
        return {"devices": [str(d.ieee) for d in self.devices], "count": self.count,
                "rate": self.rate, "start_at": self.start_at, "cluster": self.cluster,
                "attribute": self.attribute, "modulo": self.modulo, "offset": self.offset}

    def status(self) -> dict[str, Any]:
        late = self.lateness
        p50, p99 = (late.percentile(50), late.percentile(99)) if late else (None, None)
        return {"running": self.running, "sent": self.sent, "count": self.count,
                "rate": self.rate, "behind_max_s": round(self.behind_max, 6),
                "behind_p50_s": None if p50 is None else round(p50, 6),
                "behind_p99_s": None if p99 is None else round(p99, 6),
                "clock": self.clock, "finished_at": self.finished_at, "error": self.error}

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="report-stream")

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        alarm = self._alarm() or LoopAlarm()
        self.clock = alarm.name
        n, k = len(self.devices), 0
        try:
            while k < self.count:
                now = loop.time()
                if now < self.start_at:
                    await alarm.until(self.start_at)
                    continue
                if self.rate:
                    next_due = self.start_at + k / self.rate
                    if now < next_due:
                        await alarm.until(next_due)
                        continue
                    # Report k is due by the test above, whatever int() makes of the rest.
                    due = max(k + 1, min(self.count,
                                         int((now - self.start_at) * self.rate) + 1))
                else:
                    due = self.count
                end = min(due, k + MAX_BURST)
                gate, late = self.gate, self.lateness
                for i in range(k, end):
                    if gate is not None and not gate.is_set():
                        break
                    value = (self.offset + i // n) % self.modulo
                    self.devices[i % n].update(self.cluster, {self.attribute: value},
                                               persist=False)
                    if late is not None:
                        late.add(now - (self.start_at + i / self.rate))
                    k = self.sent = i + 1
                if gate is not None and not gate.is_set():
                    await gate.wait()
                else:
                    await asyncio.sleep(0)
        except VirtualRadioError as exc:
            self.error = str(exc)
        except Exception as exc:  # reported by status(), not lost in a dead task
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            alarm.close()
            self.finished_at = loop.time()
            if self.sent:
                self.devices[0].net.changed()  # one save of the values it left
