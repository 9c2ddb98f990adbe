"""gatewayctl with the daemon stopped (issue 18, items 9 and 12): offline commands act on the
state directory the options name, and a closed pipe is not an error."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from gatewayd.credentials import CloudCredentials
from gatewayd.state import StateStore
from tests.helpers import BIN, ctl

CLOUD = CloudCredentials("user@example.com", "t0k-secret", "127.0.0.1", 1883)
DEVICE = ("dc-a6-32-12-34-56", "dc:a6:32:12:34:56")


def paired_state(state_dir: Path) -> StateStore:
    store = StateStore(state_dir)
    store.open(device_id=DEVICE[0], mac=DEVICE[1])
    store.commit_pairing(None, CLOUD)
    (state_dir / "zigbee.db").write_bytes(b"SQLite format 3\x00")
    (state_dir / "zigbee.db-wal").write_bytes(b"")
    return store


def reopened(state_dir: Path) -> StateStore:
    store = StateStore(state_dir)
    store.open(device_id=DEVICE[0], mac=DEVICE[1])
    return store


@pytest.mark.parametrize("with_sim_json", [True, False])
def test_offline_full_reset_acts_on_the_simulators_state(tmp_path: Path,
                                                         with_sim_json: bool) -> None:
    workdir = tmp_path / "sim"
    state_dir = workdir / "state"
    paired_state(state_dir)
    if with_sim_json:  # what a stopped `gatewayd --simulate` leaves behind
        (workdir / "sim.json").write_text(json.dumps({
            "state_dir": str(state_dir), "control_socket": str(workdir / "run/control.sock")}))
    result = ctl("--sim", str(workdir), "--json", "reset", "--full")
    answer = json.loads(result.stdout)
    assert answer["offline"] and answer["state_dir"] == str(state_dir)
    assert answer["forgotten"] == ["zigbee.db", "zigbee.db-wal"]
    assert not (state_dir / "zigbee.db").exists()
    assert not reopened(state_dir).state.paired
    # Nothing was created anywhere else (the config's /var/lib/gatewayd, the cwd).
    assert sorted(p.name for p in workdir.iterdir()) == sorted(
        ["state", *(["sim.json"] if with_sim_json else [])])


def test_offline_reset_without_full_keeps_the_zigbee_network(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    paired_state(state_dir)
    answer = json.loads(ctl("--socket", str(tmp_path / "none"), "--json", "reset",
                            "--state-dir", str(state_dir)).stdout)
    assert answer["forgotten"] == [] and (state_dir / "zigbee.db").exists()
    assert not reopened(state_dir).state.paired


def test_a_closed_pipe_is_not_an_error(tmp_path: Path) -> None:
    """`gatewayctl ... | head`: the reader leaves early; no traceback, no complaint."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before gatewayctl writes a byte
    try:
        result = subprocess.run(
            [str(BIN / "gatewayctl"), "--socket", str(tmp_path / "none"), "reset",
             "--state-dir", str(tmp_path / "state")], stdout=write_end, stderr=subprocess.PIPE,
            text=True, timeout=60, check=False)
    finally:
        os.close(write_end)
    assert result.returncode == 0 and result.stderr == "", result.stderr
