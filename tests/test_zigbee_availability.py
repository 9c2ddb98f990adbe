"""Zigbee availability across a step of the wall clock (gatewayd/zigbee/availability.py).

A Pi has no battery-backed clock: it boots with fake-hwclock's time, days behind after a
long power-off, and NTP then steps the clock forward. zigpy keeps ``last_seen`` in wall
clock time; compared with the wall clock across the step, a sleeping battery device heard a
second earlier looked silent for two days, and its ``$state`` went ``disconnected`` until
it reported again. The step is made in the clock the watcher reads, not in the machine's.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from gatewayd.zigbee import availability
from tests.helpers import run_async
from tests.test_bridge import dev_id, join, started
from tests.zigbee_radios import Radio, sim

pytestmark = pytest.mark.timeout(90)

STEP = 48 * 3600.0  # fake-hwclock two days behind, corrected by NTP
HOUR = 3600.0


class SteppedClock:
    """What the watcher reads as ``time``: the real clocks, the wall one stepped by ``step``.
    The watcher reads the wall clock once for each check: :meth:`checks` waits for them."""

    def __init__(self) -> None:
        self.step = 0.0
        self.reads = 0
        self._read = asyncio.Event()
        self.monotonic = time.monotonic

    def time(self) -> float:
        self.reads += 1
        self._read.set()
        return time.time() + self.step

    async def checks(self, count: int) -> None:
        """Until the watcher has made ``count`` more checks."""
        target = self.reads + count
        async with asyncio.timeout(10):
            while self.reads < target:
                self._read.clear()
                await self._read.wait()


def test_a_forward_clock_step_does_not_disconnect_a_sleeping_device(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = SteppedClock()
    monkeypatch.setattr(availability, "time", clock)

    async def main() -> None:
        async with Radio("virtual", tmp_path) as radio:
            bridge, pub = await started(radio, availability_interval=0.02, mains_timeout=HOUR,
                                        battery_timeout=HOUR)
            sensor = await join(bridge, pub, "th-sensor", "sleeping")
            plug = await join(bridge, pub, "plug")
            await clock.checks(2)
            clock.step = STEP  # NTP
            await clock.checks(5)
            await sim(bridge, "report", ieee=sensor, cluster="humidity",
                      attributes={"measured_value": 3000})
            await pub.until(lambda: pub.values(dev_id(sensor), "sensor/humidity")[-1:] == [30.0])
            await clock.checks(5)
            # Set up as it joined, and never disconnected since.
            assert pub.states(dev_id(sensor))[-1] == "sleeping"
            assert "disconnected" not in pub.states(dev_id(sensor))
            assert "disconnected" not in pub.states(dev_id(plug))
            await bridge.stop()

    run_async(main(), timeout=60)
