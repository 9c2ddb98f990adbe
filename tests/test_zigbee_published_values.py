"""What the cloud sees of the ZCL -> Homie conversions, on both simulated radios: values at
the ends of a lamp's range, meters whose scaling arrives late, "not measured" readings."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from tests.helpers import run_async
from tests.test_bridge import TIMEOUT, dev_id, join, started
from tests.zigbee_radios import RADIOS, Radio, sim

pytestmark = pytest.mark.timeout(120)

run = functools.partial(run_async, timeout=40.0)


@pytest.fixture(params=RADIOS)
def radio(request: pytest.FixtureRequest, tmp_path: Path) -> Radio:
    return Radio(request.param, tmp_path, TIMEOUT)


def test_a_lamp_at_the_ends_of_its_range_is_published_within_its_format(radio: Radio) -> None:
    """153 mireds, the simulated lamp's (and Hue's) coolest, is 6535.9 K: published as the
    $format's 6535, not refused as 6536."""
    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            light = await join(bridge, pub, "light")
            li = dev_id(light)
            assert pub.devices[li].find("switch/color-temp").format == "2000:6535"
            for mireds, kelvin in ((153, 6535), (500, 2000), (250, 4000)):
                await sim(bridge, "report", ieee=light, cluster="light_color",
                          attributes={"color_temperature": mireds})
                await pub.until(lambda k=kelvin: pub.value(li, "switch/color-temp") == k)
            assert pub.values(li, "switch/color-temp")[-3:] == [6535, 2000, 4000]
            await bridge.stop()

    run(main())
