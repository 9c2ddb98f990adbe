"""A new device's setup (bind, configure reporting, first reads) that did not finish is done
again (gatewayd/zigbee/setups.py), on unmodified bellows and the NCP emulator.

Before, a setup cut short (the hub stopped, the radio lost) or one a step of which the
device did not answer left the device ``ready`` for good without its reporting: a light
dimmed to 0 switched itself off, and the cloud still said it was on.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from gatewayd import homie
from gatewayd.bridge import ZigbeeBridge
from gatewayd.zigbee.setups import SETUP_FILE, SetupRetry
from tests.test_bridge import TIMEOUT, Recorder, dev_id, on_set, run, started
from tests.zigbee_radios import Radio, sim

pytestmark = pytest.mark.timeout(120)

ON_OFF, CONFIGURE_REPORTING = 0x0006, 0x06


async def dimmed_to_zero_is_off(pub: Recorder, light: str) -> None:
    """What the light's on/off reporting is for: dimmed to 0 it switches itself off and
    says so (the echo of the /set is the level only)."""
    assert await on_set(pub, light, "switch/on-off")(True) is True
    await pub.until(lambda: pub.value(light, "switch/on-off") is True)
    assert await on_set(pub, light, "switch/level")(0) == 0
    await pub.until(lambda: pub.value(light, "switch/on-off") is False)


def pending(radio: Radio) -> list[str]:
    path = radio.state_dir / SETUP_FILE
    return list(json.loads(path.read_text())["pending"]) if path.exists() else []


def test_a_setup_cut_short_by_a_stop_is_done_at_the_next_start(tmp_path: Path) -> None:
    radio = Radio("bellows", tmp_path, TIMEOUT)

    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            held = hold_first_setup(bridge, pub, radio)
            await bridge.permit_join(60)
            ieee: str = await sim(bridge, "join", kind="light")
            async with asyncio.timeout(10):
                await held.wait()
            await bridge.stop()  # in the middle of the setup
            assert pending(radio) == [ieee]
            radio.emu.air.silence(ieee, False)

            bridge, pub = await started(radio)
            light = dev_id(ieee)
            await pub.state(light, "ready", timeout=30)
            await dimmed_to_zero_is_off(pub, light)
            assert pub.states(light)[:2] == ["init", "init"], pub.states(light)  # set up again
            await bridge.stop()  # written off the loop: on disk at the latest now
            assert pending(radio) == []

    run(main())


def hold_first_setup(bridge: ZigbeeBridge, pub: Recorder, radio: Radio) -> asyncio.Event:
    """Silence the first Zigbee device as its setup publishes it (state ``init``, with the
    nodes its interview found), before the first step: the stop that follows lands in the
    middle of the setup."""
    add = pub.add_device
    held = asyncio.Event()

    def add_device(device: homie.Device) -> None:
        add(device)
        described = set(device.nodes) - {"zigbee"}  # interviewed: not the join's own "init"
        if device.id.startswith("zigbee-") and device.state == "init" and described \
                and not held.is_set():
            ieee = next(c.ieee for c in bridge.children.values() if c.device_id == device.id)
            radio.emu.air.silence(ieee)
            held.set()

    pub.add_device = add_device  # type: ignore[method-assign]
    return held


def test_a_setup_step_the_device_did_not_answer_is_tried_again_when_it_is_heard(
        tmp_path: Path) -> None:
    """A battery device dozing off halfway is the usual case; here the light misses the
    frame that configures its on/off reporting. The next try waits (up to an hour here)
    for the device to be heard: it is awake then."""
    radio = Radio("bellows", tmp_path, TIMEOUT)

    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio, setup_retry=SetupRetry(
                heard_gap=0, first=3600, cap=3600))
            lost = drop_once(radio, lambda aps, payload: aps["clusterId"] == ON_OFF
                             and aps["profileId"] != 0 and payload[2] == CONFIGURE_REPORTING)
            await bridge.permit_join(60)
            ieee: str = await sim(bridge, "join", kind="light")
            light = dev_id(ieee)
            await pub.state(light, "ready", timeout=30)
            assert lost.is_set() and pending(radio) == [ieee]
            before = len(pub.states(light))

            await sim(bridge, "report", ieee=ieee, cluster="level",
                      attributes={"current_level": 200})
            await pub.until(lambda: pub.states(light)[before:] == ["init", "ready"], 30)
            await dimmed_to_zero_is_off(pub, light)
            await bridge.stop()  # written off the loop: on disk at the latest now
            assert pending(radio) == []

    run(main())


def drop_once(radio: Radio, which: Any) -> asyncio.Event:
    """The first frame ``which(aps, payload)`` picks is not delivered (as if the device
    were out of range for it)."""
    air = radio.emu.air
    deliver = air.deliver
    dropped = asyncio.Event()

    def maybe(nwk: int, aps: dict[str, Any], payload: bytes) -> Any:
        if not dropped.is_set() and which(aps, payload):
            dropped.set()
            return False
        return deliver(nwk, aps, payload)

    air.deliver = maybe
    return dropped
