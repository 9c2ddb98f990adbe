"""bellows' extended-timeout question before each unicast (gatewayd/zigbee/extended_timeouts.py).

Unmodified bellows on the EZSP NCP emulator; the test counts the EZSP commands the
emulator received and reads the flags it holds. A ``/set`` to a plug is one
``sendUnicast`` with no ``getExtendedTimeout`` before it once bellows has left the flag
off; a sleepy device, a device that announced itself again, and a hub on another bellows
version are asked as bellows asks, and the flag on the NCP is what bellows would leave.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import zigpy.types as t

from gatewayd.simulator.ncp import status as st
from gatewayd.zigbee import extended_timeouts, pinned
from tests.helpers import run_async
from tests.test_bridge import Recorder, dev_id, join, on_set, started
from tests.zigbee_radios import Radio, sim

pytestmark = pytest.mark.timeout(120)


SECURED_REJOIN = 0  # EmberDeviceUpdate.STANDARD_SECURITY_SECURED_REJOIN


class Commands:
    """The emulator's NCP, with a wake-up for each command it answers."""

    def __init__(self, radio: Radio) -> None:
        self.ncp = radio.emu.ncp
        self.flags: set[bytes] = self.ncp.extended_timeouts
        self.changed = asyncio.Event()
        dispatch = self.ncp._dispatch

        def answered(*args: Any) -> Any:
            try:
                return dispatch(*args)
            finally:
                self.changed.set()

        self.ncp._dispatch = answered

    async def until(self, predicate: Callable[[], Any], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


def raw(ieee: t.EUI64) -> bytes:
    """An address as the NCP keeps it (its eight bytes on the wire)."""
    return bytes(ieee.serialize())


def counts(radio: Radio) -> tuple[int, int]:
    """(``getExtendedTimeout``, ``sendUnicast``) commands the NCP has received."""
    commands = radio.emu.ncp.commands
    return commands["getExtendedTimeout"], commands["sendUnicast"]


async def sets(pub: Recorder, plug: str, n: int) -> None:
    """``n`` commands to the plug through its ``/set`` handler, each echoed back."""
    for i in range(n):
        assert await on_set(pub, dev_id(plug), "switch/on-off")(i % 2 == 0) is (i % 2 == 0)


def with_plug(main: Callable[[Radio, Any, Recorder, str], Awaitable[None]],
              tmp: Path) -> None:
    async def run() -> None:
        async with Radio("bellows", tmp) as radio:
            bridge, pub = await started(radio)
            try:
                await main(radio, bridge, pub, await join(bridge, pub, "plug"))
            finally:
                await bridge.stop()

    run_async(run(), timeout=90.0)


def test_a_set_to_a_plug_is_one_exchange(tmp_path: Path) -> None:
    async def main(radio: Radio, bridge: Any, pub: Recorder, plug: str) -> None:
        await sets(pub, plug, 1)  # bellows has left the flag off at least once
        asked, sent = counts(radio)
        await sets(pub, plug, 4)
        after_asked, after_sent = counts(radio)
        assert after_sent - sent >= 4
        assert after_asked == asked, f"{after_asked - asked} questions for 4 commands"
        assert raw(t.EUI64.convert(plug)) not in radio.emu.ncp.extended_timeouts

    with_plug(main, tmp_path)


def test_a_device_that_announces_itself_is_asked_again(tmp_path: Path) -> None:
    async def main(radio: Radio, bridge: Any, pub: Recorder, plug: str) -> None:
        ncp = Commands(radio)
        await sets(pub, plug, 1)
        ieee = t.EUI64.convert(plug)
        asked, _ = counts(radio)
        # It announces itself again, and the stack turns its flag on (as EmberZNet does
        # when a sleepy node announces itself).
        ncp.flags.add(raw(ieee))
        ncp.ncp.emit("trustCenterJoinHandler", newNodeId=bridge.app.get_device(ieee=ieee).nwk,
                     newNodeEui64=raw(ieee), status=SECURED_REJOIN,
                     policyDecision=st.NO_ACTION, parentOfNewNodeId=0x0000)
        # zigpy scans a rejoined device's groups: a unicast, whose flag is asked about,
        # and bellows turns it off, as it leaves it for a router.
        await ncp.until(lambda: counts(radio)[0] > asked and raw(ieee) not in ncp.flags)
        asked, _ = counts(radio)
        await sets(pub, plug, 2)
        assert counts(radio)[0] == asked and raw(ieee) not in ncp.flags

    with_plug(main, tmp_path)


def test_a_sleepy_device_is_always_asked(tmp_path: Path) -> None:
    async def main(radio: Radio, bridge: Any, pub: Recorder, plug: str) -> None:
        ncp = Commands(radio)
        ieee = t.EUI64.convert(await join(bridge, pub, "th-sensor", "sleeping"))
        identify = bridge.app.get_device(ieee=ieee).endpoints[1].identify
        for _ in range(3):
            # The stack turns a sleepy child's flag on by itself; bellows turns it off
            # before each acknowledged unicast (one that expects no reply).
            ncp.flags.add(raw(ieee))
            asked, _ = counts(radio)
            await identify.identify(1, expect_reply=False)
            assert counts(radio)[0] == asked + 1 and raw(ieee) not in ncp.flags

    with_plug(main, tmp_path)


def test_a_radio_started_again_is_spared_too(tmp_path: Path) -> None:
    async def main(radio: Radio, bridge: Any, pub: Recorder, plug: str) -> None:
        await sets(pub, plug, 1)
        seen = len(pub.states(dev_id(plug)))
        await sim(bridge, "drop")  # the connection to the NCP drops; the bridge starts again
        await pub.until(lambda: pub.states(dev_id(plug))[seen:][-2:] == ["disconnected",
                                                                         "ready"], 30)
        asked, sent = counts(radio)
        await sets(pub, plug, 3)  # asked at most once, on the new connection
        assert counts(radio)[0] - asked <= 1 and counts(radio)[1] - sent >= 3

    with_plug(main, tmp_path)


@pytest.mark.parametrize("why", ["another bellows version", "no room to remember"])
def test_off_it_asks_each_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               why: str) -> None:
    if why == "another bellows version":
        monkeypatch.setattr(pinned, "BELLOWS_VERSION", "0.0.0")
    else:
        monkeypatch.setattr(extended_timeouts, "MAX_KNOWN", 0)

    async def main(radio: Radio, bridge: Any, pub: Recorder, plug: str) -> None:
        asked, _ = counts(radio)
        await sets(pub, plug, 3)
        assert counts(radio)[0] - asked == 3

    with_plug(main, tmp_path)
