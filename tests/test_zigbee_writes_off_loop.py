"""zigbee-setup.json and zigbee-left.json are written off the event loop
(gatewayd/runtime/writebehind.py).

Before, each change was an atomic write, fsyncs and all, on the loop: on a Pi's SD card a
mass join held MQTT and every report up once per joining device. Here the write function
the bridge is given stands for a slow card: a write waits until the test lets it go.
"""

from __future__ import annotations

import asyncio
import json
import logging
import stat
import threading
from pathlib import Path

import pytest

from gatewayd.runtime.atomicfile import atomic_write
from gatewayd.zigbee.left import LEFT_FILE, LeftDevices
from gatewayd.zigbee.setups import SETUP_FILE
from tests.test_bridge import TIMEOUT, dev_id, run, started
from tests.zigbee_radios import Radio, sim

pytestmark = pytest.mark.timeout(120)

# The longest a held write waits. Only reached if the write runs on the loop: the test,
# on the same loop, cannot let it go, and finds it no longer held when it runs again.
HOLD = 15.0
A = "8b:b3:00:00:00:00:00:01"
B = "8b:b3:00:00:00:00:00:02"


class SlowCard:
    """atomic_write as on a slow SD card: each write of ``name`` waits (in the writer's
    thread) while the card is held; ``written`` has that file's contents, in order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.go = threading.Event()
        self.waiting = threading.Event()  # a write is held now
        self.was_held = threading.Event()  # a write was held
        self.written: list[bytes] = []
        self.at_once = 0  # writes of the file in progress together, at most
        self._busy = 0
        self._lock = threading.Lock()

    def write(self, path: Path, data: bytes, mode: int = 0o600,
              owner: tuple[int, int] | None = None) -> None:
        if path.name != self.name:
            atomic_write(path, data, mode, owner)
            return
        with self._lock:
            self._busy += 1
            self.at_once = max(self.at_once, self._busy)
        try:
            if not self.go.is_set():
                self.waiting.set()
                self.was_held.set()
                self.go.wait(HOLD)
                self.waiting.clear()
            atomic_write(path, data, mode, owner)
            self.written.append(data)
        finally:
            with self._lock:
                self._busy -= 1

    @property
    def held(self) -> bool:
        return self.waiting.is_set()


def pending(data: bytes) -> list[str]:
    return list(json.loads(data)["pending"])


def test_joins_go_on_while_zigbee_setup_json_is_written(tmp_path: Path) -> None:
    radio = Radio("virtual", tmp_path, TIMEOUT)
    card = SlowCard(SETUP_FILE)

    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio, write=card.write)
            await bridge.permit_join(60)
            first: str = await sim(bridge, "join", kind="plug")
            assert await asyncio.to_thread(card.was_held.wait, HOLD)  # its mark being written
            # Meanwhile the hub goes on: two more devices join and are published.
            others = [await sim(bridge, "join", kind="plug") for _ in range(2)]
            for ieee in others:
                await pub.state(dev_id(ieee), "init")
            assert card.held, "the hub waited for zigbee-setup.json to be written"
            # A setup starts only once its device's mark is on disk.
            assert pub.states(dev_id(first)) == ["init"]

            card.go.set()
            for ieee in [first, *others]:
                await pub.state(dev_id(ieee), "ready", timeout=30)
            await bridge.stop()

        assert card.at_once == 1
        # The two marks made during the held write: one write, of the latest set.
        assert [pending(d) for d in card.written[:2]] == [[first], sorted([first, *others])]
        assert pending((tmp_path / SETUP_FILE).read_bytes()) == []  # all set up: the last
        assert stat.S_IMODE((tmp_path / SETUP_FILE).stat().st_mode) == 0o600

    run(main())


def test_what_changed_during_a_write_lands_when_the_bridge_stops(tmp_path: Path) -> None:
    radio = Radio("virtual", tmp_path, TIMEOUT)
    card = SlowCard(LEFT_FILE)
    card.go.set()

    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio, write=card.write)
            await bridge.permit_join(60)
            plugs = [await sim(bridge, "join", kind="plug") for _ in range(3)]
            for ieee in plugs:
                await pub.state(dev_id(ieee), "ready", timeout=30)
            card.go.clear()
            await sim(bridge, "leave", ieee=plugs[0])
            assert await asyncio.to_thread(card.was_held.wait, HOLD)
            for ieee in plugs[1:]:
                await sim(bridge, "leave", ieee=ieee)
                await pub.state(dev_id(ieee), "lost")
            assert card.held, "the hub waited for zigbee-left.json to be written"
            card.go.set()
            await bridge.stop()
            # What the file says, as the bridge's stop left it: every device that left.
            on_disk = json.loads((tmp_path / LEFT_FILE).read_bytes())
            assert on_disk == {"left": sorted(plugs)}
            assert len(card.written) == 2  # the held write, then the two others' in one

    run(main())


def test_the_latest_set_lands_when_flushed(tmp_path: Path) -> None:
    """What the bridge's stop awaits: the changes made during a write are written, once."""
    card = SlowCard(LEFT_FILE)
    path = tmp_path / LEFT_FILE

    async def main() -> None:
        left = LeftDevices(path, card.write)
        left.add(A)
        assert await asyncio.to_thread(card.was_held.wait, HOLD)
        left.add(B)
        left.discard(A)
        left.add(A)
        card.go.set()
        await left.flush()
        assert json.loads(path.read_bytes()) == {"left": [A, B]}
        assert [json.loads(d) for d in card.written] == [{"left": [A]}, {"left": [A, B]}]
        assert B in LeftDevices(path)  # a restart reads it back

    run(main())


def test_a_full_reset_deletes_the_file_after_the_write_in_progress(tmp_path: Path) -> None:
    card = SlowCard(LEFT_FILE)
    path = tmp_path / LEFT_FILE

    async def main() -> None:
        left = LeftDevices(path, card.write)
        left.add(A)
        assert await asyncio.to_thread(card.was_held.wait, HOLD)
        left.add(B)
        left.clear()  # a full reset, while A's write is held
        assert B not in left
        card.go.set()
        await left.flush()
        assert not path.exists()
        assert [json.loads(d) for d in card.written] == [{"left": [A]}]

    run(main())


def test_a_full_reset_before_anything_was_written_is_quiet(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A reset of a hub that never had a device leave: no file to delete, nothing wrong."""
    path = tmp_path / LEFT_FILE

    async def main() -> None:
        left = LeftDevices(path)
        with caplog.at_level(logging.WARNING):
            left.clear()
            await left.flush()
        assert not path.exists()
        assert caplog.records == []

    run(main())
