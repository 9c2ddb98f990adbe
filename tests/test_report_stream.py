"""The report stream (the load generator): numbered reports through the real zigpy stack,
on the virtual radio and on bellows + the NCP emulator (tests/zigbee_radios.py)."""

from __future__ import annotations

import asyncio
import functools
import json
from pathlib import Path
from typing import Any

import pytest

from gatewayd.simulator.ncp import ncp as ncp_module
from gatewayd.zigbee.simlink import SimError
from tests.helpers import run_async, wait_for
from tests.test_bridge import dev_id, join, started
from tests.zigbee_radios import RADIOS, Radio, sim

pytestmark = pytest.mark.timeout(90)
run = functools.partial(run_async, timeout=60.0)


@pytest.fixture(params=RADIOS)
def radio(request: pytest.FixtureRequest, tmp_path: Path) -> Radio:
    return Radio(request.param, tmp_path)


def test_reports_are_numbered_round_robin_over_the_plugs(radio: Radio) -> None:
    async def main() -> None:
        bridge, pub = await started(radio, min_interval=0.0)
        plugs = sorted([await join(bridge, pub, "plug") for _ in range(3)])
        await join(bridge, pub, "contact", "sleeping")  # no power meter: not streamed
        plan = await sim(bridge, "stream", count=30, offset=5)
        assert plan["devices"] == plugs and plan["count"] == 30
        for ieee in plugs:
            await pub.until(lambda i=ieee: len(pub.values(dev_id(i), "meter/power")) >= 11)
        for ieee in plugs:  # the interview's 0 W, then raw 5..14 (0.1 W): all, in order
            assert pub.values(dev_id(ieee), "meter/power") == [0.0] + [
                (5 + j) / 10 for j in range(10)]
        status = await sim(bridge, "stream_status")
        assert status is not None and status["sent"] == 30 and status["error"] is None
        await bridge.stop()

    async def in_radio() -> None:
        async with radio:
            await main()

    run(in_radio())


def test_a_rated_stream_never_sends_a_report_before_it_is_due(tmp_path: Path) -> None:
    async def main() -> None:
        bridge, pub = await started(Radio("virtual", tmp_path), min_interval=0.0)
        times: list[tuple[float, str, Any]] = []
        publish = pub.set_value

        def timed(device_id: str, node_id: str, property_id: str, value: Any) -> None:
            publish(device_id, node_id, property_id, value)
            if (node_id, property_id) == ("meter", "power"):
                times.append((asyncio.get_running_loop().time(), device_id, value))

        pub.set_value = timed  # type: ignore[method-assign]
        plugs = sorted([await join(bridge, pub, "plug") for _ in range(2)])
        net = bridge.virtual
        assert net is not None
        start_at = asyncio.get_running_loop().time() + 0.1
        times.clear()  # the interviews' 0 W
        net.stream(count=20, rate=100, start_at=start_at, offset=1)
        await pub.until(lambda: len(times) >= 20)
        index = {dev_id(i): n for n, i in enumerate(plugs)}
        for at, device, value in times:
            k = (round(value * 10) - 1) * len(plugs) + index[device]
            assert at >= start_at + k / 100, f"report {k} went out early"
        await bridge.stop()

    run(main())


def test_bad_stream_requests_are_refused_and_send_nothing(radio: Radio) -> None:
    async def main() -> None:
        bridge, pub = await started(radio, min_interval=0.0)
        plug = await join(bridge, pub, "plug")
        now = asyncio.get_running_loop().time()
        bad: dict[str, tuple[dict[str, Any], str]] = {
            "zero count": ({"count": 0}, "count: must be an integer"),
            "text count": ({"count": "many"}, "count: must be an integer"),
            "negative rate": ({"count": 5, "rate": -1}, "rate: must be a number"),
            "boolean rate": ({"count": 5, "rate": True}, "rate: must be a number"),
            "far future": ({"count": 5, "start_at": now + 3600}, "start_at:"),
            "unknown cluster": ({"count": 5, "cluster": "warp_drive"}, "warp_drive"),
            "no such attribute": ({"count": 5, "attribute": "flux"}, "has no attribute 'flux'"),
            "nobody has it": ({"count": 5, "cluster": "ias_zone", "attribute": "zone_status"},
                              "no simulated device"),
        }
        for case, (kwargs, message) in bad.items():
            with pytest.raises(SimError, match=message):
                await sim(bridge, "stream", **kwargs)
            assert await sim(bridge, "stream_status") is None, case
        await sim(bridge, "stream", count=1000, rate=10)
        with pytest.raises(SimError, match="already running"):
            await sim(bridge, "stream", count=5)
        stopped = await sim(bridge, "stream_stop")
        assert stopped is not None and stopped["sent"] < 1000
        assert all(v < 1.0 for v in pub.values(dev_id(plug), "meter/power"))
        await bridge.stop()

    async def in_radio() -> None:
        async with radio:
            await main()

    run(in_radio())


def saved_power(state_file: Path) -> dict[str, Any]:
    """Each device's saved active power in a radio's state file (either radio)."""
    try:
        devices = json.loads(state_file.read_text())["devices"]
    except (OSError, ValueError):
        return {}
    return {d["ieee"]: values["active_power"] for d in devices
            for values in d["state"].values() if "active_power" in values}


def record_saves(air: Any) -> list[int]:
    """How far the radio's stream was (``sent``, -1 before any stream) at each save of its
    state from now on: every save starts with ``air.to_json``."""
    sent_at_save: list[int] = []
    to_json = air.to_json

    def snapshot() -> Any:
        status = air.stream_status()
        sent_at_save.append(status["sent"] if status is not None else -1)
        return to_json()

    air.to_json = snapshot
    return sent_at_save


def test_a_stream_saves_the_radio_state_once_when_it_ends_not_while_it_runs(
        radio: Radio) -> None:
    """Saving every device's state each second held the radio's loop (4 ms for 200
    plugs) and a thread (5 ms of the GIL), and every report due then was late: the p99
    floor in bench/README.md. A stream's values are saved once, when it ends."""
    async def main() -> None:
        bridge, pub = await started(radio, min_interval=0.0)
        try:
            await stream_and_check(bridge, pub)
        finally:
            await bridge.stop()

    async def stream_and_check(bridge: Any, pub: Any) -> None:
        plugs = sorted([await join(bridge, pub, "plug") for _ in range(2)])
        air = radio.emu.air if radio.emu is not None else radio.net
        if radio.net is not None:
            radio.net.save_delay = 0.5  # the virtual radio's is 10 s: longer than the stream
        # Whatever the joins left to save is saved now, not in the stream's first second.
        (radio.emu.ncp if radio.emu is not None else radio.net).save()
        sent_at_save = record_saves(air)
        count = 300  # 2 s at 150/s: twice as long as the NCP emulator's 1 s save delay
        await sim(bridge, "stream", count=count, rate=150, offset=7)
        await pub.until(lambda: len(pub.values(dev_id(plugs[-1]), "meter/power")) > count // 2,
                        timeout=30)
        status = await sim(bridge, "stream_status")
        assert status["sent"] == count and status["error"] is None
        # The emulator wakes its stream with a timerfd; the hub's virtual radio sleeps.
        assert status["clock"] == ("timerfd" if radio.emu is not None else "asyncio")
        assert 0 <= status["behind_p50_s"] <= status["behind_p99_s"] <= status["behind_max_s"]
        assert all(sent in (-1, count) for sent in sent_at_save), sent_at_save
        # One save of what the stream left: the state file holds each plug's last value.
        state_file = radio.state_dir / ("ncp.json" if radio.emu is not None
                                        else "zigbee-virtual.json")
        last = 7 + count // len(plugs) - 1
        await asyncio.to_thread(
            wait_for, lambda: saved_power(state_file) == dict.fromkeys(plugs, last), 10,
            "the stream's last values in the radio's state file")
        assert sent_at_save.count(count) == 1, sent_at_save

    async def in_radio() -> None:
        async with radio:
            await main()

    run(in_radio())


def test_a_stream_on_the_emulator_first_writes_the_save_left_waiting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A save waits SAVE_DELAY to coalesce changes, and the bench starts its next stream
    within that of the last one's end: the save (a snapshot of every device on the NCP's
    loop, then JSON in a thread) landed 0.4 s into the next stream and stalled its radio
    for 10-15 ms. The next stream now writes it before it starts."""
    monkeypatch.setattr(ncp_module, "SAVE_DELAY", 30.0)  # pending for the whole test
    radio = Radio("bellows", tmp_path)

    async def main() -> None:
        bridge, pub = await started(radio, min_interval=0.0)
        try:
            plugs = sorted([await join(bridge, pub, "plug") for _ in range(2)])
            radio.emu.ncp.save()  # the joins' changes: nothing is waiting now
            sent_at_save = record_saves(radio.emu.air)
            await sim(bridge, "stream", count=10, offset=3)
            await pub.until(lambda: pub.values(dev_id(plugs[-1]), "meter/power")[-1] == 0.7)
            assert not (await sim(bridge, "stream_status"))["running"]
            assert sent_at_save == []  # the first stream's save waits
            await sim(bridge, "stream", count=20, rate=200, offset=20)
            await pub.until(lambda: pub.values(dev_id(plugs[-1]), "meter/power")[-1] == 2.9)
            assert sent_at_save == [10]  # written as the second began, not during it
        finally:
            await bridge.stop()

    async def in_radio() -> None:
        async with radio:
            await main()

    run(in_radio())
