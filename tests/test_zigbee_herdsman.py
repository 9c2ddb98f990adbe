"""A second, independent host of the EZSP NCP emulator: zigbee-herdsman (Zigbee2MQTT's
stack, pinned in tests/herdsman/package-lock.json, installed by scripts/setup.sh) with its
``ember`` adapter, driven by tests/herdsman/run.js against ``gatewayd-ncp-sim``.

Bellows and herdsman read the same bytes with schemas written apart: a bug in the
emulator that mirrors one host's reading shows up in the other.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO

HERDSMAN = REPO / "tests" / "herdsman"
NODE = shutil.which("node")

pytestmark = [pytest.mark.timeout(180), pytest.mark.skipif(
    NODE is None, reason="node is not installed, so the zigbee-herdsman host cannot run "
                         "(scripts/setup.sh installs nodejs and the pinned herdsman)")]


def _node_major() -> int:
    assert NODE is not None
    out = subprocess.run([NODE, "--version"], capture_output=True, text=True, timeout=30)
    return int(out.stdout.strip().lstrip("v").split(".")[0])


@pytest.fixture
def emulator(tmp_path: Path) -> Any:
    """``gatewayd-ncp-sim`` as Zigbee2MQTT users run it: its own process, free ports."""
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gatewayd.simulator.ncp", "--port", "0", "--control-port",
         "0", "--state", str(tmp_path / "ncp.json"), "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the ports, once it listens
        assert line.startswith("gatewayd-ncp-sim: ncp tcp://"), line
        ncp, control = line.split()[2], line.split()[4]
        yield ncp.rsplit(":", 1)[1], control.rsplit(":", 1)[1]
    finally:
        proc.terminate()
        proc.wait(20)


def test_zigbee_herdsman_forms_keeps_its_network_and_switches_a_plug(
        emulator: tuple[str, str], tmp_path: Path) -> None:
    assert _node_major() >= 18, "zigbee-herdsman 10.9 needs node 18 or newer"
    assert (HERDSMAN / "node_modules" / "zigbee-herdsman").is_dir(), \
        "zigbee-herdsman is not installed: run scripts/setup.sh (npm ci in tests/herdsman)"
    port, control = emulator
    workdir = tmp_path / "herdsman"
    workdir.mkdir()
    run = subprocess.run([NODE, str(HERDSMAN / "run.js"), port, control, str(workdir)],
                         capture_output=True, text=True, timeout=150, cwd=HERDSMAN)
    steps: dict[str, dict[str, Any]] = {}
    for line in run.stdout.splitlines():
        if line.startswith('{"step"'):
            record = json.loads(line)
            steps[record.pop("step")] = record
    assert run.returncode == 0 and "error" not in steps, run.stdout[-4000:] + run.stderr[-2000:]
    versions = steps["versions"]
    print(f"\nnode {versions['node']}, zigbee-herdsman {versions['herdsman']}: first start "
          f"{steps['start']['ms']} ms, restart {steps['restart']['ms']} ms, join to "
          f"interviewed {steps['interview']['ms']} ms")
    assert versions["herdsman"] == json.loads(
        (HERDSMAN / "package.json").read_text())["dependencies"]["zigbee-herdsman"]
    # The first start forms the network it asks for; the second finds it: no re-form.
    assert steps["start"] == {**steps["start"], "result": "reset", "formed": 1}
    assert steps["restart"] == {**steps["restart"], "result": "resumed", "formed": 1}
    assert steps["interview"]["status"] == "successful"
    assert (steps["interview"]["model"], steps["interview"]["manufacturer"]) == (
        "Virtual Plug", "gatewayd")
    assert steps["switch"] == {"before": 0, "after": 1, "emulator": 1}
    assert "stopped" in steps
