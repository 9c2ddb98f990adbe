"""A device that left and joins again as something else is described as what it is now.

Before, zigpy set a device it already knew up from what it knew, so a plug that left
and came back (same IEEE address) as a temperature sensor (a factory reset with new
firmware) stayed a plug: its temperature went nowhere and its /set were refused.
"""

from __future__ import annotations

import pytest

from tests.test_bridge import dev_id, join, radio, run, started
from tests.zigbee_radios import Radio, sim

__all__ = ["radio"]  # the fixture: both radios

pytestmark = pytest.mark.timeout(120)


def test_a_device_that_rejoins_as_another_kind_is_described_anew(radio: Radio) -> None:
    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            ieee = await join(bridge, pub, "plug")
            device = dev_id(ieee)
            await sim(bridge, "leave", ieee=ieee)
            await pub.state(device, "lost")

            await bridge.permit_join(60)
            await sim(bridge, "join", kind="th-sensor", ieee=ieee)
            await pub.until(lambda: pub.devices[device].state == "sleeping"
                            and pub.devices[device].name == "gatewayd Virtual Climate Sensor", 20)
            assert "switch" not in pub.devices[device].nodes
            await sim(bridge, "report", ieee=ieee, cluster="temperature",
                      attributes={"measured_value": 2100})
            await pub.until(lambda: pub.value(device, "sensor/temperature") == 21.0)
            await bridge.stop()

            bridge, pub = await started(radio)  # and so it stays
            await pub.state(device, "sleeping")
            assert "switch" not in pub.devices[device].nodes
            await bridge.stop()

    run(main())
