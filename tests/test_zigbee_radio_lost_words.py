"""The hub's zigbee/status after the radio connection is lost says why in the hub's words.

Before, a drop or an unplugged stick showed ``down: radio connection lost (None)`` in the
cloud (bellows hands the bridge None), and any other failure the radio library's own text.
A radio that stopped answering (the NCP frozen, or a garbled line) read ``the radio reset
itself``: bellows reports the host's giving up with an NCP reset code too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

import pytest

from gatewayd import homie
from tests.test_bridge import HUB_ID, Recorder, on_set, run, started
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


class Freezer:
    """A TCP hop between bellows and the NCP emulator that can freeze the NCP as SIGSTOP
    does (``gatewayd --simulate`` runs the emulator as a process of its own): what the
    host sends is taken, nothing comes back, the connection stays open."""

    def __init__(self, target: str) -> None:
        host, _, port = target.removeprefix("tcp://").rpartition(":")
        self.target = (host, int(port))
        self.frozen = False
        self.url = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Freezer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"tcp://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        for task in (self._pump(reader, up_writer), self._pump(up_reader, writer)):
            self._tasks.add(asyncio.create_task(task))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(4096):
                if not self.frozen:
                    writer.write(data)
        finally:
            writer.close()


@pytest.mark.parametrize("fault", ["frozen", "noise"])
def test_a_bellows_radio_that_stops_answering_is_not_said_to_have_reset(
        tmp_path: Path, fault: str) -> None:
    """The NCP frozen (SIGSTOP), or its line garbled (``gatewayctl zigbee sim noise
    0.3``): bellows gives up after its retries of a frame (its watchdog's, every 10 s)."""
    radio = Radio("bellows", tmp_path)

    async def main() -> None:
        async with radio, Freezer(radio.emu.url) as freezer:
            cfg = dataclasses.replace(radio.config(), device=freezer.url)
            bridge, pub = await started(radio, cfg=cfg)
            notified: list[tuple[str, ...]] = []
            bridge.alerts.notify = lambda *note: notified.append(note)
            if fault == "frozen":
                freezer.frozen = True
            else:
                await sim(bridge, "noise", rate=0.3)
            await pub.until(lambda: downs(pub), 60)
            assert downs(pub)[0] == "down: the radio stopped answering"
            assert pub.lines[-1].startswith("zigbee: down: the radio stopped answering")
            assert [kind for kind, *_ in notified] == ["radio-lost"]
            if fault == "frozen":  # it answers again: the radio comes back
                freezer.frozen = False
            else:
                await sim(bridge, "noise", rate=0)
            await pub.until(lambda: pub.value(HUB_ID, "zigbee/status") == "ready", 30)
            await bridge.stop()

    run(main(), timeout=90)


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


def test_a_request_the_radio_is_lost_under_is_refused_in_the_hubs_words(tmp_path: Path) -> None:
    """The bridge takes a lost radio down (bellows closes its transport) while a permit
    join is on its way through bellows: the request met bellows'
    ``AttributeError: 'NoneType' object has no attribute 'send_data'``, a 500 on the
    control socket's internal error, ERROR on the hub node's ``/set`` (seen under ``noise 0.3``).
    The NCP answers slowly, so the request cannot be answered before the loss; whether it
    was still queued in bellows or sent, it is refused UNREACHABLE in the hub's words."""
    radio = Radio("bellows", tmp_path)

    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            await sim(bridge, "slow", ms=3000)
            bridge.connection_lost(None)  # as bellows calls it
            with pytest.raises(homie.CommandError) as refused:
                await on_set(pub, HUB_ID, "zigbee/permitjoin")(60)
            assert refused.value.code == "UNREACHABLE"
            assert refused.value.message in (
                "the Zigbee radio was lost before it could open joining; try again once it "
                "is back", "the Zigbee radio failed to open joining; try again in a moment")
            await sim(bridge, "slow", ms=0)
            await pub.until(lambda: pub.value(HUB_ID, "zigbee/status") == "ready", 20)
            assert await bridge.permit_join(5) == 5  # back: asked again, it opens
            await bridge.stop()

    run(main())
