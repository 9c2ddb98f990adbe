"""A radio that keeps dropping right after it comes up is tried again after a growing wait.

Before, every successful start reset the backoff and every loss was followed by a start at
once: a stick resetting itself every second cost a full restart a second (nine log lines,
two ``$state`` messages per child). The bridge's clock and sleep are replaced here
(``bridge.retries``): no real wait, no timing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gatewayd import homie
from gatewayd.bridge import ZigbeeBridge
from gatewayd.zigbee.retries import STABLE_AFTER
from tests.test_bridge import HUB_ID, Recorder, dev_id, join, run
from tests.zigbee_radios import Radio, sim

pytestmark = pytest.mark.timeout(120)

FIRST, CAP = 0.05, 5.0


class Waits:
    """The bridge's clock and sleep: each wait is recorded and lasts until released."""

    def __init__(self, pub: Recorder) -> None:
        self.now = 0.0
        self.asked: list[float] = []
        self.pub = pub
        self._go = asyncio.Event()

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.asked.append(delay)
        self.pub.changed.set()  # wakes pub.until()
        await self._go.wait()
        self._go.clear()

    def release(self) -> None:
        self._go.set()


def statuses(pub: Recorder) -> list[str]:
    return list(pub.values(HUB_ID, "zigbee/status"))


def test_a_radio_that_keeps_resetting_is_started_again_after_a_growing_wait(
        tmp_path: Path) -> None:
    radio = Radio("bellows", tmp_path)

    async def main() -> None:
        async with radio:
            pub = Recorder()
            hub = homie.Device(HUB_ID, "Test hub")
            pub.add_device(hub)
            bridge = ZigbeeBridge(radio.config(), radio.state_dir, pub, hub=hub,
                                  retry_min=FIRST, retry_max=CAP, shutdown_timeout=2.0,
                                  status_text=pub.line)
            radio.bridges.append(bridge)
            waits = Waits(pub)
            bridge.retries.clock, bridge.retries.sleep = waits.clock, waits.sleep
            await bridge.start()
            await pub.until(lambda: pub.value(HUB_ID, "zigbee/status") == "ready", 10)
            plug = await join(bridge, pub, "plug")

            for n, window in enumerate([(FIRST / 2, FIRST), (FIRST, 2 * FIRST)]):
                mark = len(statuses(pub))
                await sim(bridge, "reset")  # the stick resets itself, moments after it came up
                await pub.until(lambda: len(waits.asked) > n  # noqa: B023
                                or "ready" in statuses(pub)[mark:])  # noqa: B023
                assert len(waits.asked) == n + 1, "the radio was started again at once"
                # While the hub waits, the radio stays down: no restart, no $state churn.
                assert statuses(pub)[mark:] == ["down: the radio reset itself"]
                assert pub.devices[dev_id(plug)].state == "disconnected"
                assert window[0] <= waits.asked[n] <= window[1]  # the jittered, doubling wait
                waits.release()
                await pub.state(dev_id(plug), "ready", 20)
                assert pub.value(HUB_ID, "zigbee/status") == "ready"

            # Up long enough this time: the next loss is a one-off drop, retried at once.
            waits.now += STABLE_AFTER
            mark = len(statuses(pub))
            await sim(bridge, "reset")
            await pub.until(lambda: "ready" in statuses(pub)[mark:], 20)
            assert len(waits.asked) == 2
            assert bridge.retries.failures == 0  # the backoff starts again from its first wait
            await bridge.stop()

    run(main(), timeout=90)
