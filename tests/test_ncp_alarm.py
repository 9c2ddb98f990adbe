"""The NCP emulator's alarm (a timerfd) and the report stream's clock and lateness.

The stream's reports are due at fixed times and a benchmark counts their latency from
then, so the alarm that paces it must never fire early, must not carry a cancelled wait's
expiry into the next wait, and must give its descriptor back."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from typing import Any

import pytest

from gatewayd.simulator.ncp import alarm as ncp_alarm
from gatewayd.simulator.ncp.alarm import TimerfdAlarm, timerfd_alarm
from gatewayd.zigbee.virtual.report_stream import LATE_BIN, Lateness, ReportStream
from tests.helpers import run_async

run = functools.partial(run_async, timeout=30.0)


async def _timerfd() -> TimerfdAlarm:
    alarm = timerfd_alarm()
    assert alarm is not None, "this Linux machine has timerfd"
    return alarm


def test_the_alarm_never_fires_before_its_time() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        with contextlib.closing(await _timerfd()) as alarm:
            assert alarm.name == "timerfd"
            for n in range(40):
                when = loop.time() + 0.0005 * (1 + n % 5)
                await alarm.until(when)
                assert loop.time() >= when, f"wait {n} woke {when - loop.time():.6f} s early"
            past = loop.time() - 1.0
            await alarm.until(past)  # a time already gone returns at once

    run(main())


def test_a_cancelled_wait_does_not_wake_the_next_one_early() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        with contextlib.closing(await _timerfd()) as alarm:
            fires = loop.time() + 0.001
            first = asyncio.ensure_future(alarm.until(fires))
            await asyncio.sleep(0)  # armed
            while loop.time() < fires + 0.002:
                pass  # the loop held: the timer has expired and nobody has read it
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            when = loop.time() + 0.05
            await alarm.until(when)  # the cancelled wait's expiry must not end this one
            assert loop.time() >= when

    run(main())


def test_closing_the_alarm_gives_its_descriptor_back() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        alarm = await _timerfd()
        fd = alarm._fd
        os.fstat(fd)
        alarm.close()
        alarm.close()  # twice is harmless
        with pytest.raises(OSError):
            os.fstat(fd)
        assert not loop.remove_reader(fd)

    run(main())


def test_without_timerfd_there_is_no_alarm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ncp_alarm, "_libc", lambda: None)

    async def main() -> None:
        assert timerfd_alarm() is None

    run(main())


def test_lateness_percentiles_are_bin_edges_and_the_max_caps_them() -> None:
    late = Lateness()
    assert late.percentile(50) is None
    for us in [105] * 98 + [2005, 250_000]:  # the last beyond the histogram's 100 ms
        late.add(us / 1e6)

    def micros(p: float) -> int:
        value = late.percentile(p)
        assert value is not None
        return round(value * 1e6)

    assert LATE_BIN == 1e-5  # so a percentile is the upper edge of its 10 µs bin
    assert (micros(50), micros(99), micros(100)) == (110, 2010, 250_000)
    assert late.max == 0.25


class Net:
    """The radio a stand-in plug is on: counts the saves the stream asks for."""

    def __init__(self) -> None:
        self.saves = 0

    def changed(self) -> None:
        self.saves += 1


class Plug:
    """A simulated device's stand-in: the stream calls ``update`` and, once it ends,
    ``net.changed()``."""

    def __init__(self, ieee: str, sent: list[tuple[float, str, Any]]) -> None:
        self.ieee, self._sent, self.net = ieee, sent, Net()

    def update(self, cluster: str, values: dict[str, Any], persist: bool = True) -> None:
        self._sent.append((asyncio.get_running_loop().time(), self.ieee, values))


async def finished(stream: ReportStream) -> None:
    stream.start()
    task = stream._task
    assert task is not None
    await asyncio.wait_for(task, 10)


@pytest.mark.parametrize("make_alarm, clock", [(timerfd_alarm, "timerfd"),
                                                (lambda: None, "asyncio")])
def test_a_paced_stream_is_never_early_and_says_how_late_it_was(make_alarm: Any,
                                                                  clock: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        sent: list[tuple[float, str, Any]] = []
        plugs: list[Any] = [Plug(f"plug-{n}", sent) for n in range(2)]
        stream = ReportStream(plugs, cluster="electrical_measurement",
                              attribute="active_power", count=30, rate=500,
                              start_at=loop.time() + 0.01, alarm=make_alarm)
        await finished(stream)
        status = stream.status()
        assert status["sent"] == 30 and status["error"] is None and status["clock"] == clock
        for k, (at, ieee, values) in enumerate(sent):
            assert (ieee, values) == (f"plug-{k % 2}", {"active_power": k // 2})
            assert at >= stream.start_at + k / 500, f"report {k} went out early"
        assert 0 <= status["behind_p50_s"] <= status["behind_p99_s"] <= status["behind_max_s"]
        assert plugs[0].net.saves == 1

    run(main())


def test_an_unpaced_stream_has_no_lateness() -> None:
    async def main() -> None:
        sent: list[tuple[float, str, Any]] = []
        stream = ReportStream([Plug("plug", sent)], cluster="electrical_measurement",
                              attribute="active_power", count=5, rate=0,
                              alarm=timerfd_alarm)
        await finished(stream)
        status = stream.status()
        assert len(sent) == 5 and status["behind_p50_s"] is None
        assert status["behind_p99_s"] is None

    run(main())
