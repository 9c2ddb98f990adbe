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

The stream's values are saved once, when it ends, not each second while it runs: saving
200 devices' state took its radio's loop about 4 ms and then a thread 5 ms of the GIL
each second, and every report due then was late, for whichever host listened (the p99
floor both stacks shared in bench/README.md, "The emulator's own stall"). A radio killed
mid-stream restarts with the values from before it.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from gatewayd.zigbee.virtual.zcl import VirtualRadioError

if TYPE_CHECKING:
    from gatewayd.zigbee.virtual.device import SimDevice

MAX_BURST = 64  # reports sent between two yields to the event loop
MAX_COUNT = 100_000_000
MAX_RATE = 100_000.0
MAX_START_DELAY = 60.0  # seconds; a start further ahead is a mistake, not a plan


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
                 gate: asyncio.Event | None = None) -> None:
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
        self.sent = 0
        self.behind_max = 0.0  # the most a report was sent after it was due, seconds
        self.finished_at: float | None = None
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None

    def plan(self) -> dict[str, Any]:
        return {"devices": [str(d.ieee) for d in self.devices], "count": self.count,
                "rate": self.rate, "start_at": self.start_at, "cluster": self.cluster,
                "attribute": self.attribute, "modulo": self.modulo, "offset": self.offset}

    def status(self) -> dict[str, Any]:
        return {"running": self.running, "sent": self.sent, "count": self.count,
                "rate": self.rate, "behind_max_s": round(self.behind_max, 6),
                "finished_at": self.finished_at, "error": self.error}

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
        n, k = len(self.devices), 0
        try:
            while k < self.count:
                now = loop.time()
                if now < self.start_at:
                    await asyncio.sleep(self.start_at - now)
                    continue
                if self.rate:
                    due = min(self.count, int((now - self.start_at) * self.rate) + 1)
                    if due <= k:
                        await asyncio.sleep(self.start_at + k / self.rate - now)
                        continue
                    self.behind_max = max(self.behind_max,
                                          now - (self.start_at + k / self.rate))
                else:
                    due = self.count
                end = min(due, k + MAX_BURST)
                gate = self.gate
                for i in range(k, end):
                    if gate is not None and not gate.is_set():
                        break
                    value = (self.offset + i // n) % self.modulo
                    self.devices[i % n].update(self.cluster, {self.attribute: value},
                                               persist=False)
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
            self.finished_at = loop.time()
            if self.sent:
                self.devices[0].net.changed()  # one save of the values it left
