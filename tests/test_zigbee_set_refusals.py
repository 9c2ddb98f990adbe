"""A /set the radio library fails is refused in the hub's words, with the right code.

Before, the refusal carried zigpy's or bellows' text (``Failed to deliver message:
<EmberStatus.…>``), and a /set that waited for a device that then left the network was
answered UNREACHABLE (with ``Device has left the network``) instead of the documented GONE.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gatewayd import homie
from tests.test_bridge import dev_id, join, on_set, run, started
from tests.test_hardware import until
from tests.zigbee_radios import Radio, sim

pytestmark = pytest.mark.timeout(120)


def test_a_set_the_ncp_cannot_deliver_is_unreachable_without_bellows_text(
        tmp_path: Path) -> None:
    radio = Radio("bellows", tmp_path, timeout=30.0)  # longer than zigpy's own attempts

    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            plug = await join(bridge, pub, "plug")
            radio.emu.air.silence(plug)
            radio.emu.ncp.delivery_failure_delay = 0.05  # the stick gives up at once
            with pytest.raises(homie.CommandError) as refused:
                await on_set(pub, dev_id(plug), "switch/on-off")(True)
            assert refused.value.code == "UNREACHABLE"
            assert refused.value.message == f"on_off.on could not be delivered to {dev_id(plug)}"
            await bridge.stop()

    run(main(), timeout=90)


def test_a_set_waiting_for_a_device_that_leaves_is_gone(tmp_path: Path) -> None:
    """zigpy sends a device two requests at a time; a third waits, and is cancelled when
    the device leaves. On the virtual radio, where a silenced device's requests wait
    their whole timeout, the third one is sure to be waiting then."""
    radio = Radio("virtual", tmp_path, timeout=30.0)

    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            plug = await join(bridge, pub, "plug")
            device = dev_id(plug)
            await sim(bridge, "silence", ieee=plug)
            switch = on_set(pub, device, "switch/on-off")
            sets = [asyncio.ensure_future(switch(value)) for value in (True, False, True)]
            limiter = bridge.children[plug].device._concurrent_requests_semaphore
            await until(lambda: limiter.waiting_requests == 1, 10, "the third /set waiting")
            await sim(bridge, "leave", ieee=plug)
            done, _ = await asyncio.wait(sets, timeout=20, return_when=asyncio.FIRST_COMPLETED)
            refused = next(iter(done)).exception()
            assert isinstance(refused, homie.CommandError)
            assert (refused.code, refused.message) == (
                "GONE", f"{device} has left the Zigbee network")
            for pending in sets:
                pending.cancel()
            await asyncio.gather(*sets, return_exceptions=True)
            await bridge.stop()

    run(main(), timeout=90)
