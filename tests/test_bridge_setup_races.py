"""A device removed, or leaving, while the bridge is still setting it up (binding,
configuring reporting): the setup must not publish it again afterwards.

The device is silenced on the virtual radio at the moment its setup first publishes it, so
every step of the setup after that waits out its bounded time: the removal or the leave
lands in the middle of the setup every time. (On the NCP emulator the silence would cross a
socket and could come after a fast setup had finished; the bridge code under test is the
same for both radios.)
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from gatewayd import homie
from gatewayd.bridge import ZigbeeBridge
from tests.test_bridge import TIMEOUT, Recorder, dev_id, run, started
from tests.zigbee_radios import Radio, sim

pytestmark = pytest.mark.timeout(120)


def hold_setups(bridge: ZigbeeBridge, pub: Recorder) -> asyncio.Queue[asyncio.Task[Any]]:
    """Silence each Zigbee device as its setup publishes it (state ``init``); the queue
    gets each setup held so."""
    add = pub.add_device
    held: asyncio.Queue[asyncio.Task[Any]] = asyncio.Queue()

    def add_device(device: homie.Device) -> None:
        add(device)
        setup = asyncio.current_task()
        if device.id.startswith("zigbee-") and device.state == "init" and setup is not None:
            ieee = next(c.ieee for c in bridge.children.values() if c.device_id == device.id)
            bridge.app.virtual_network.silence(ieee)  # type: ignore[union-attr]
            held.put_nowait(setup)

    pub.add_device = add_device  # type: ignore[method-assign]
    return held


async def joined_and_held(bridge: ZigbeeBridge, pub: Recorder) -> tuple[str, Any]:
    held = hold_setups(bridge, pub)
    await bridge.permit_join(60)
    ieee: str = await sim(bridge, "join", kind="plug")
    async with asyncio.timeout(10):
        setup = await held.get()
    assert not setup.done()  # held: binding the silenced plug waits
    return ieee, setup


def test_a_device_removed_during_its_setup_stays_removed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Its setup went on: it published the device again (removed before its description
    went out) or failed on the missing device with a traceback in the log (after)."""
    radio = Radio("virtual", tmp_path, TIMEOUT)

    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            ieee, setup = await joined_and_held(bridge, pub)
            await bridge.remove(ieee)
            await asyncio.wait([setup], timeout=60)
            assert setup.done()
            device = dev_id(ieee)
            assert device not in pub.devices, pub.states(device)
            assert [e[0] for e in pub.log if e[1] == device][-1] == "remove"
            assert ieee not in bridge.children
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
            await bridge.stop()

    run(main())


def test_a_device_that_leaves_during_its_setup_stays_lost(tmp_path: Path) -> None:
    radio = Radio("virtual", tmp_path, TIMEOUT)

    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            ieee, setup = await joined_and_held(bridge, pub)
            device = dev_id(ieee)
            await sim(bridge, "leave", ieee=ieee)
            await pub.state(device, "lost")
            await asyncio.wait([setup], timeout=60)
            assert setup.done()
            assert pub.devices[device].state == "lost", pub.states(device)
            await bridge.stop()  # written off the loop: on disk at the latest now
            left = json.loads((radio.state_dir / "zigbee-left.json").read_text())
            assert left["left"] == [ieee]

    run(main())
