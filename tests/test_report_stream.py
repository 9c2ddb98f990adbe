"""The report stream (the load generator): numbered reports through the real zigpy stack,
on the virtual radio and on bellows + the NCP emulator (tests/zigbee_radios.py)."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import pytest

from gatewayd.zigbee.simlink import SimError
from tests.helpers import run_async
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
