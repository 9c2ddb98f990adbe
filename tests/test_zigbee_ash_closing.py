"""A radio lost with a command in flight lets go of the lost session, and the hub's log
gets no traceback (bellows 1.2.1; gatewayd/zigbee/ash_closing.py).

Before, bellows failed every DATA frame still waiting for its ACK, when the connection
closed, with one exception object shared by all connections (a default argument); each
failed send raised that object again and its traceback grew by the frames of that send,
which hold the session's ASH protocol, its EZSP object and so the whole
ControllerApplication (devices, clusters, caches). Every radio loss during a command
kept one alive: 40 drops with 20 plugs, 39 applications and +31 MB. And when the /set
had already been refused (its timeout) as the link broke, asyncio logged the abandoned
send as "Task exception was never retrieved", with bellows' traceback.

The emulator's link breaks, or goes silent, as the /set's ``sendUnicast`` reaches it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gatewayd import homie
from gatewayd.simulator.ncp.server import AshSession
from gatewayd.zigbee import pinned
from gatewayd.zigbee.child import UNREACHABLE
from tests.helpers import run_async
from tests.test_bridge import TIMEOUT, Recorder, dev_id, join, on_set, started
from tests.test_zigbee_eui64 import run_fresh
from tests.zigbee_radios import Radio

pytestmark = pytest.mark.timeout(120)

SEND_UNICAST = 0x0034  # the EZSP frame id of a /set's command
DROPS = 10
README = Path(__file__).resolve().parent.parent / "bench" / "README.md"


class Link:
    """The emulator's side of the line: once armed, the next ``sendUnicast`` from the hub
    breaks the link (``drop``), or vanishes with every copy bellows sends again until
    :meth:`drop` (``eat``): either way bellows is waiting for its ACK."""

    def __init__(self, radio: Radio, monkeypatch: pytest.MonkeyPatch,
                 mode: str = "drop") -> None:
        self.radio, self.mode = radio, mode
        self.armed = self.eating = False
        self.hit = asyncio.Event()
        data: Callable[[AshSession, Any], None] = AshSession._data

        def _data(session: AshSession, frame: Any) -> None:
            payload = frame.payload
            if (self.armed or self.eating) and len(payload) >= 5 and \
                    int.from_bytes(payload[3:5], "little") == SEND_UNICAST:
                self.armed = False
                if self.mode == "drop":
                    session.close()
                else:
                    self.eating = True
                self.hit.set()
                return
            data(session, frame)

        monkeypatch.setattr(AshSession, "_data", _data)

    def arm(self) -> None:
        self.hit.clear()
        self.armed = True

    def drop(self) -> None:
        self.eating = False
        assert self.radio.emu.server.drop()


async def back_up(bridge: Any, pub: Recorder, plug: str, app: Any) -> None:
    """A new application runs and the plug is ready again."""
    await pub.until(lambda: bridge.app not in (None, app) and bridge.radio_up.is_set(), 30)
    await pub.state(plug, "ready", 30)


def applications() -> int:
    import bellows.zigbee.application as bellows_app

    gc.collect()
    return sum(isinstance(o, bellows_app.ControllerApplication) for o in gc.get_objects())


def test_radio_losses_during_a_command_leave_no_old_session_alive(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    radio = Radio("bellows", tmp_path, TIMEOUT)
    link = Link(radio, monkeypatch)

    async def main() -> int:
        async with radio:
            bridge, pub = await started(radio)
            plug = dev_id(await join(bridge, pub, "plug"))
            for _ in range(DROPS):
                app = bridge.app
                link.arm()
                with pytest.raises(homie.CommandError) as refused:  # the radio went
                    await on_set(pub, plug, "switch/on-off")(True)
                # Not ERROR ("see the hub's log"): zigpy's "not running" is the radio's loss.
                assert refused.value.code in (UNREACHABLE, homie.TIMEOUT), refused.value
                assert link.hit.is_set()
                await back_up(bridge, pub, plug, app)
            del app
            assert await on_set(pub, plug, "switch/on-off")(True) is True
            alive = applications()  # the running one, and the old ones if they leak
            await bridge.stop()
            return alive

    alive = run_async(main(), 100)
    assert alive <= 2, f"{alive} ControllerApplications alive after {DROPS} radio losses"


def test_a_send_abandoned_by_a_timed_out_set_fails_quietly_when_the_link_drops(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    radio = Radio("bellows", tmp_path, TIMEOUT)
    link = Link(radio, monkeypatch, "eat")

    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            plug = dev_id(await join(bridge, pub, "plug"))
            for _ in range(2):
                app = bridge.app
                link.arm()
                with pytest.raises(homie.CommandError) as refused:
                    await on_set(pub, plug, "switch/on-off")(True)
                assert refused.value.code == homie.TIMEOUT  # the user's answer, as before
                assert link.hit.is_set()
                link.drop()  # bellows still waits for the frame's ACK
                await back_up(bridge, pub, plug, app)
            del app
            assert await on_set(pub, plug, "switch/on-off")(True) is True
            await bridge.stop()

    with caplog.at_level(logging.DEBUG, logger="bellows.ash"), \
            caplog.at_level(logging.DEBUG, logger="asyncio"):
        run_async(main(), 60)
        gc.collect()  # an abandoned task's failure is logged when it is collected
    assert not [r for r in caplog.records if r.name == "asyncio" and r.levelno > logging.DEBUG], \
        [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    # bellows' debug log says what happened to the frame, in one line
    assert any(r.name == "bellows.ash" and r.levelno == logging.DEBUG and not r.exc_info
               and r.getMessage() == "Failed to send data frame: "
                                     "RuntimeError('Connection has been closed')"
               for r in caplog.records)


def test_the_bellows_radio_is_imported_with_the_fixes_in_place() -> None:
    out = run_fresh("""
        from gatewayd.zigbee import ash_closing, radio
        radio.controller_class("bellows")
        from bellows.ash import AshProtocol
        print(AshProtocol._cancel_pending_data_frames
              is ash_closing.cancel_pending_data_frames,
              AshProtocol.send_data is ash_closing.send_data)
    """)
    assert out == "True True"


def test_bellows_own_code_on_a_bellows_it_was_not_written_for() -> None:
    out = run_fresh("""
        import logging, sys
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
        from gatewayd.zigbee import ash_closing, pinned, radio
        pinned.BELLOWS_VERSION = "0.0.0"
        radio.controller_class("bellows")
        from bellows.ash import AshProtocol
        print(AshProtocol._cancel_pending_data_frames
              is ash_closing.cancel_pending_data_frames,
              AshProtocol.send_data is ash_closing.send_data)
    """)
    assert out.splitlines()[-1] == "False False"
    assert "the ASH fixes for a closed connection off: written for bellows 0.0.0" in out


def test_the_patch_offered_upstream_is_against_the_pinned_bellows() -> None:
    """bench/README.md's diff applies to the installed bellows/ash.py, and the result is
    Python."""
    import bellows.ash

    if pinned.installed_version("bellows") != pinned.BELLOWS_VERSION:
        pytest.skip("the patch is against the pinned bellows")
    section = README.read_text().split("## bellows' ASH on a closed connection", 1)[1]
    diff = re.search(r"```diff\n(.*?)```", section, re.S)
    assert diff is not None
    lines = diff.group(1).splitlines()
    assert lines[:2] == ["--- a/bellows/ash.py", "+++ b/bellows/ash.py"]
    source = Path(bellows.ash.__file__).read_text()
    hunks = [h.split("\n", 1)[1] for h in re.split(r"^@@ ", "\n".join(lines[2:]) + "\n",
                                                    flags=re.M)[1:]]
    assert hunks
    for hunk in hunks:
        body = hunk.splitlines()
        old = "".join(line[1:] + "\n" for line in body if line[:1] in (" ", "-", ""))
        new = "".join(line[1:] + "\n" for line in body if line[:1] in (" ", "+", ""))
        assert source.count(old) == 1, f"does not apply:\n{old}"
        source = source.replace(old, new)
    compile(source, "ash.py", "exec")
