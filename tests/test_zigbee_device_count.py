"""The hub's zigbee/device-count is the joined devices (docs/zigbee.md): not those that left.

Before, a device that left (``lost``, kept until it rejoins or is removed) was still
counted: after a leave the published count did not change.
"""

from __future__ import annotations

import pytest

from tests.test_bridge import HUB_ID, Recorder, dev_id, join, radio, run, started
from tests.zigbee_radios import Radio, sim

__all__ = ["radio"]  # the fixture: both radios

pytestmark = pytest.mark.timeout(120)


async def counted(pub: Recorder, n: int) -> None:
    await pub.until(lambda: pub.value(HUB_ID, "zigbee/device-count") == n)


def test_a_device_that_left_is_not_counted_until_it_rejoins(radio: Radio) -> None:
    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            plug = await join(bridge, pub, "plug")
            await join(bridge, pub, "th-sensor", "sleeping")
            await counted(pub, 2)
            await sim(bridge, "leave", ieee=plug)
            await pub.state(dev_id(plug), "lost")
            await counted(pub, 1)
            await bridge.stop()

            bridge, pub = await started(radio)  # still lost after a restart
            await pub.state(dev_id(plug), "lost")
            await counted(pub, 1)
            await bridge.permit_join(60)
            await sim(bridge, "join", kind="plug", ieee=plug)
            await pub.state(dev_id(plug), "ready")
            await counted(pub, 2)
            await bridge.stop()

    run(main())
