"""A power cut after a `/set`, from the outside: the daemon on bellows and the EZSP
emulator, `kill -9`, a start on the same files, and what the cloud is told.

docs/zigbee.md, "What a power cut loses": after a crash the hub republishes, retained,
what zigbee.db last committed, so a switch must come back as it was last set (up to about
a second before the cut), not as it was at zigpy's last 30 s commit. The unit tests of
the commit are in tests/test_zigbee_db_writes.py; this one runs the daemon as a process.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path

import pytest

from bench import hub
from bench.harness import BenchWorld, Monitor, Results
from bench.peers.measure import PEERS_QUICK, form_and_join, plug_ieees
from bench.peers.ncp import NcpProcess
from bench.peers.stacks import Gatewayd
from bench.settings import QUICK
from gatewayd.simulator.procs import wait_until
from tests.test_zigbee_db_writes import ON_OFF, committed

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# The documented window is about a second; the bound only keeps a broken commit from
# hanging the test on a loaded machine.
COMMIT_TIMEOUT = 15.0
RESTART_TIMEOUT = 60.0


def restarted_state(stack: Gatewayd, states: Monitor, topic: str) -> str:
    """Start the daemon; the first value it publishes on ``topic`` (its republish)."""
    states.drain()
    stack.start()
    stack.wait_up(RESTART_TIMEOUT)
    return states.wait_match(topic, lambda _: True, RESTART_TIMEOUT, "a republished state")[1]


def test_a_switch_set_before_a_power_cut_comes_back_as_set(tmp_path: Path) -> None:
    plug, other = ieees = plug_ieees(2)
    with BenchWorld(tmp_path) as world:
        paired = hub.pair_to_online(world, dataclasses.replace(QUICK, repeats=1), Results())
        ncp = NcpProcess(tmp_path / "ncp")
        stack = Gatewayd(world, ncp.url, tmp_path / "gwd", paired)
        states = Monitor(world, f"{world.root}/sweet-home/+/switch/on-off")
        try:
            form_and_join(stack, ncp, ieees, dataclasses.replace(PEERS_QUICK, devices=2),
                          Results())
            topic = stack.state_topic(plug)
            # A clean stop commits the join: zigbee.db holds the plugs switched off, the
            # older state a crash would bring back.
            stack.stop()
            assert committed(stack.state_dir, *ON_OFF) == {plug: 0, other: 0}
            assert restarted_state(stack, states, topic) == "false"

            set_topic, payload = stack.set_request(plug, True)
            states.drain()
            states.publish(set_topic, payload)
            states.wait_for(topic, "true", COMMIT_TIMEOUT)  # the plug's echo
            wait_until(lambda: committed(stack.state_dir, *ON_OFF)[plug] == 1,
                       COMMIT_TIMEOUT, "the switch's new state to be committed")
            assert committed(stack.state_dir, *ON_OFF)[other] == 0  # untouched

            assert stack.daemon is not None
            os.kill(stack.pid(), signal.SIGKILL)
            stack.daemon.proc.wait(10)
            assert restarted_state(stack, states, topic) == "true"
            # The other plug comes back as it was, and nothing says the set one is off.
            states.wait_for(stack.state_topic(other), "false", RESTART_TIMEOUT)
            later = []
            while not states.messages.empty():
                later.append(states.messages.get_nowait())
            assert [m for m in later if m[1] == topic and m[2] != "true"] == [], later
        finally:
            stack.stop()
            stack.close()
            states.close()
            ncp.close()
