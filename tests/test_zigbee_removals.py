"""A device removed from the hub is let go of (zigpy 2.4.0; gatewayd/zigbee/removals.py,
gatewayd/zigbee/children.py).

Before, every device removed with ``gatewayctl zigbee remove`` (or the portal's, or
``zigbee/remove/set``) stayed in memory for good, about 45 KB each: zigpy's device
registers a PollControl check-in listener under itself in the application's request
listeners as it is made, and only ``Device.on_remove()`` takes it out, which zigpy's
removal never calls. And the bridge's children kept a hint from the device object to its
child after the child was removed, until the table outgrew twice the children.
"""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import run_async
from tests.test_bridge import HUB_ID, TIMEOUT, dev_id, join, on_set, started
from tests.test_zigbee_eui64 import run_fresh
from tests.zigbee_radios import Radio

pytestmark = pytest.mark.timeout(60)

REMOVALS = 8


def devices_alive(ieees: set[str]) -> int:
    import zigpy.device

    gc.collect()
    return sum(isinstance(o, zigpy.device.Device) and str(o.ieee) in ieees
               for o in gc.get_objects())


async def removed(app: Any) -> None:
    """zigpy's removal (its leave request, then the device dropped) has run to its end."""
    await asyncio.gather(*[t for t in list(app._tasks)
                           if t.get_name().startswith("remove_device")])


def test_removed_devices_are_let_go_of(tmp_path: Path) -> None:
    radio = Radio("bellows", tmp_path, TIMEOUT)

    async def main() -> tuple[int, int, int, list[dict[str, Any]]]:
        async with radio:
            bridge, pub = await started(radio)
            live = await join(bridge, pub, "plug")  # stays: its device must stay alive
            app = bridge.app
            listeners = len(app._req_listeners)
            gone: set[str] = set()
            for _ in range(REMOVALS):
                ieee = await join(bridge, pub, "plug")
                await on_set(pub, dev_id(ieee), "switch/on-off")(True)  # its child is heard
                assert await on_set(pub, HUB_ID, "zigbee/remove")(ieee) == ieee
                await pub.until(lambda i=ieee: ("remove", dev_id(i)) in pub.log)
                await removed(app)
                gone.add(ieee)
            assert await on_set(pub, dev_id(live), "switch/on-off")(True) is True
            grown, listed = len(app._req_listeners) - listeners, bridge.devices()
            # The last removal's database write may still wait (db_writes.py); the stop
            # writes it. ``app`` is kept: its listeners held the removed devices.
            await bridge.stop()
            return devices_alive(gone), devices_alive({live}), grown, listed

    left, live, grown, listed = run_async(main(), 50)
    assert [d["device_id"] for d in listed] and len(listed) == 1  # the one that stayed
    assert live == 1
    assert left == 0, f"{left} of {REMOVALS} removed devices still in memory"
    assert grown <= 0, f"zigpy's request listeners grew by {grown}"


def test_the_radio_library_is_imported_with_the_removal_fix_in_place() -> None:
    out = run_fresh("""
        from gatewayd.zigbee import radio
        radio.controller_class("bellows")
        import zigpy.application
        print(getattr(zigpy.application.ControllerApplication._remove_device,
                      "_lets_go", False))
    """)
    assert out == "True"


def test_zigpys_own_removal_on_a_zigpy_it_was_not_written_for() -> None:
    out = run_fresh("""
        import logging, sys
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
        from gatewayd.zigbee import pinned, radio
        pinned.ZIGPY_VERSION = "0.0.0"
        radio.controller_class("bellows")
        import zigpy.application
        print(getattr(zigpy.application.ControllerApplication._remove_device,
                      "_lets_go", False))
    """)
    assert out.splitlines()[-1] == "False"
    assert "letting go of removed devices off: written for zigpy 0.0.0" in out
