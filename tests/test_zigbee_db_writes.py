"""zigbee.db writes under a report flood: a bounded queue, and the last value survives."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import run_async
from tests.test_bridge import dev_id, join, started

pytestmark = pytest.mark.timeout(120)
run = functools.partial(run_async, timeout=90.0)
REPORTS_PER_PLUG = 1500


def test_a_flood_keeps_the_database_queue_bounded_and_keeps_the_last_value(
        tmp_path: Path) -> None:
    async def flood() -> list[str]:
        bridge, pub = await started(tmp_path, min_interval=0.0)
        plugs = sorted([await join(bridge, pub, "plug") for _ in range(3)])
        assert bridge.app is not None and bridge.virtual is not None
        queue = bridge.app._dblistener._callback_handlers
        depth: list[int] = []
        publish = pub.set_value

        def sample(device_id: str, node_id: str, property_id: str, value: Any) -> None:
            depth.append(queue.qsize())  # zigpy's write queue, at every published value
            publish(device_id, node_id, property_id, value)

        pub.set_value = sample  # type: ignore[method-assign]
        bridge.virtual.stream(count=REPORTS_PER_PLUG * len(plugs), offset=1)
        last = REPORTS_PER_PLUG / 10  # raw 1..1500 in 0.1 W
        await pub.until(lambda: all(pub.value(dev_id(p), "meter/power") == last
                                    for p in plugs), timeout=60)
        # Unbounded, zigpy queued two writes per report (thousands); coalesced, at most a
        # batch and a few pass-through events wait.
        assert len(depth) >= REPORTS_PER_PLUG and max(depth) <= 10, max(depth)
        await bridge.stop()
        return plugs

    async def restart(plugs: list[str]) -> None:
        bridge, pub = await started(tmp_path)
        for plug in plugs:
            await pub.state(dev_id(plug), "ready")
            assert pub.value(dev_id(plug), "meter/power") == REPORTS_PER_PLUG / 10
        await bridge.stop()

    run(restart(run(flood())))
