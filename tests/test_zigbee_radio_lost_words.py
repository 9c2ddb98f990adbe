"""The hub's zigbee/status after the radio connection is lost says why in the hub's words.

Before, a drop or an unplugged stick showed ``down: radio connection lost (None)`` in the
cloud (bellows hands the bridge None), and any other failure the radio library's own text.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.test_bridge import HUB_ID, Recorder, run, started
from tests.zigbee_radios import Radio, sim

pytestmark = pytest.mark.timeout(120)


def downs(pub: Recorder) -> list[str]:
    return [v for v in pub.values(HUB_ID, "zigbee/status") if v.startswith("down")]


@pytest.mark.parametrize(("fault", "words"), [
    # bellows sees the end of the stream (None) or the OS's "connection reset", by timing
    ("drop", {"down: the radio closed the connection",
              "down: the connection to the radio failed"}),
    ("reset", {"down: the radio reset itself"}),
])
def test_a_lost_bellows_radio_is_named_in_the_hubs_words(
        tmp_path: Path, fault: str, words: set[str]) -> None:
    radio = Radio("bellows", tmp_path)

    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            await sim(bridge, fault)
            await pub.until(lambda: downs(pub))
            assert downs(pub)[0] in words
            await pub.until(lambda: pub.value(HUB_ID, "zigbee/status") == "ready", 20)
            await bridge.stop()

    run(main())


@pytest.mark.parametrize(("exc", "words"), [
    (OSError("ASH frame 0x7e: bad CRC in state RX_DATA"),
     "down: the connection to the radio failed"),
    (None, "down: the radio closed the connection"),  # bellows' end of file
])
def test_a_radio_librarys_own_failure_text_stays_in_the_log(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, exc: OSError | None,
        words: str) -> None:
    radio = Radio("virtual", tmp_path)

    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            with caplog.at_level(logging.ERROR, logger="gatewayd.bridge"):
                bridge.connection_lost(exc)  # as the radio library calls it
                await pub.until(lambda: downs(pub))
            assert downs(pub)[0] == words
            assert repr(exc) in caplog.text  # the details: the log only
            await pub.until(lambda: pub.value(HUB_ID, "zigbee/status") == "ready", 20)
            await bridge.stop()

    run(main())
