"""gatewayctl with the daemon stopped (issue 18, items 9 and 12): offline commands act on the
state directory the options name, and a closed pipe is not an error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewayd.credentials import CloudCredentials
from gatewayd.state import StateStore
from gatewayd.zigbee.new_network import NEW_NETWORK_FILE
from tests.helpers import (
    AS_NOBODY,
    BIN,
    NOBODY,
    REPO,
    ROOT_ONLY,
    Gatewayd,
    ctl,
    ethernet_config,
    reachable_tmp,
    write_config,
)

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
    # The network lives on the radio: the daemon has it form a new one at its next start.
    assert answer["new_network"] and (state_dir / NEW_NETWORK_FILE).exists()
    assert not reopened(state_dir).state.paired
    # Nothing was created anywhere else (the config's /var/lib/gatewayd, the cwd).
    assert sorted(p.name for p in workdir.iterdir()) == sorted(
        ["state", *(["sim.json"] if with_sim_json else [])])


def test_an_offline_reset_of_the_simulators_state_says_to_start_the_simulator(
        tmp_path: Path) -> None:
    """Before: it said "systemctl start gatewayd", which starts no simulator."""
    workdir = tmp_path / "my sim"
    paired_state(workdir / "state")
    said = ctl("--sim", str(workdir), "reset").stdout.splitlines()[-1]
    assert said == f"Start gatewayd again (gatewayd --simulate --workdir '{workdir}') to " \
                   "pair the hub."


def test_offline_reset_without_full_keeps_the_zigbee_network(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    paired_state(state_dir)
    answer = json.loads(ctl("--socket", str(tmp_path / "none"), "--json", "reset",
                            "--state-dir", str(state_dir)).stdout)
    assert answer["forgotten"] == [] and (state_dir / "zigbee.db").exists()
    assert not answer["new_network"] and not (state_dir / NEW_NETWORK_FILE).exists()
    assert not reopened(state_dir).state.paired


def test_an_offline_full_reset_says_the_zigbee_network_is_formed_anew(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    paired_state(state_dir)
    out = ctl("--socket", str(tmp_path / "none"), "reset", "--full",
              "--state-dir", str(state_dir)).stdout
    assert ("At its next start the Zigbee radio leaves its network and forms a new one; "
            "pair the Zigbee devices again then.") in out.splitlines()


def test_a_closed_pipe_is_not_an_error(tmp_path: Path) -> None:
    """`gatewayctl ... | head`: the reader leaves early; no traceback, no complaint."""
    (tmp_path / "state").mkdir()
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


@pytest.mark.parametrize(("content", "command", "problem"), [
    ('{"control_socket": 5}', ["status"],
     "control_socket: must be text (the control socket's path), got a number"),
    ("[1]", ["status"], "must be a JSON object, got an array"),
    ("{}", ["status"], "control_socket: missing (the control socket's path)"),
    ("{", ["status"], "not JSON (line 2, column 1)"),
    ('{"control_socket": ' + "1" * 5_000 + "}", ["status"],
     "holds a number of more than 4300 digits"),
    ('{"control_socket": "x", "state_dir": ""}', ["reset"],
     "state_dir: must be text (the hub's state directory), got empty text"),
    ('{"control_socket": "x", "platform": 3}', ["platform", "log"],
     "platform: must be an object or null, got a number"),
    ('{"control_socket": "x", "platform": {"control": "ftp://h"}}', ["platform", "operations"],
     "platform.control: must be an http:// URL, got 'ftp://h'"),
    ('{"control_socket": "x", "system_bus": null}', ["ble-pair", "--setup-code", "12345678"],
     "system_bus: must be text (the simulator's D-Bus address), got null"),
])
def test_a_damaged_sim_json_is_named_with_its_key_and_exits_1(
        tmp_path: Path, content: str, command: list[str], problem: str) -> None:
    sim_json = tmp_path / "sim.json"
    sim_json.write_text(content + "\n")
    env = {k: v for k, v in os.environ.items() if k != "DBUS_SYSTEM_BUS_ADDRESS"}
    result = subprocess.run([str(BIN / "gatewayctl"), "--sim", str(tmp_path), *command],
                            capture_output=True, text=True, timeout=60, env=env, check=False)
    assert (result.returncode, result.stderr) == (1, f"gatewayctl: {sim_json}: {problem}\n")
    assert sim_json.read_text() == content + "\n"


def test_a_command_that_needs_sim_json_says_so_when_there_is_none(tmp_path: Path) -> None:
    result = ctl("--sim", str(tmp_path), "--json", "platform", "log", check=False)
    message = (f"{tmp_path / 'sim.json'}: missing: the simulator writes it once ready "
               f"(gatewayd --simulate --workdir {tmp_path})")
    assert (result.returncode, result.stderr) == (1, f"gatewayctl: {message}\n")
    assert json.loads(result.stdout) == {"error": message}


def test_an_offline_reset_keeps_the_account_to_release_under_the_hubs_published_id(
        tmp_path: Path) -> None:
    """The daemon publishes as [hub] device_id when the vendor preset one: the pending
    release must name that hub, not the id the state file derived from the MAC."""
    state_dir = tmp_path / "state"
    paired_state(state_dir)
    cfg = tmp_path / "g.toml"
    cfg.write_text(f"[hub]\nstate_dir = '{state_dir}'\ndevice_id = 'acme-hub-7'\n")
    answer = json.loads(ctl("--config", str(cfg), "--socket", str(tmp_path / "none"),
                            "--json", "reset").stdout)
    assert answer["release_pending"]["devices"] == 1
    release = reopened(state_dir).state.release
    assert release is not None and release.devices == ("acme-hub-7",)
    assert release.cloud == CLOUD


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    with reachable_tmp() as path:
        yield path


@pytest.mark.skipif(os.geteuid() != 0, reason=ROOT_ONLY)
@pytest.mark.parametrize("corrupt", [False, True])
def test_an_offline_reset_by_root_leaves_files_the_daemons_user_can_read(
        open_tmp: Path, corrupt: bool) -> None:
    """The daemon's error says "run 'gatewayctl reset'"; root does. The daemon (its own
    user) must then be able to read what the reset wrote, or it never starts again."""
    state_dir = open_tmp / "state"
    paired_state(state_dir)
    for path in (state_dir, *state_dir.iterdir()):
        os.chown(path, NOBODY, NOBODY)
    if corrupt:  # root copied a file in: moved aside, it too goes to the daemon's user
        (state_dir / "state.json").unlink()
        (state_dir / "state.json").write_text("{not json")
    ctl("--socket", str(open_tmp / "none"), "reset", "--state-dir", str(state_dir))
    owners = {p.name: (p.stat().st_uid, p.stat().st_gid) for p in state_dir.iterdir()}
    assert set(owners.values()) == {(NOBODY, NOBODY)}, owners
    assert any(name.startswith("state.json.corrupt-") for name in owners) == corrupt
    load = ("from gatewayd.state import StateStore; import sys; "
            "s = StateStore(sys.argv[1]); s.open(); print(s.state.paired)")
    result = subprocess.run([*AS_NOBODY, sys.executable, "-c", load, str(state_dir)],
                            capture_output=True, text=True, timeout=60, check=False,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert (result.returncode, result.stdout, result.stderr) == (0, "False\n", "")


@pytest.mark.parametrize("as_json", [True, False])
def test_an_offline_reset_of_a_state_directory_that_does_not_exist_is_refused(
        tmp_path: Path, as_json: bool) -> None:
    """A mistyped --state-dir: nothing is created, and nothing is reported as reset."""
    missing = tmp_path / "stat"
    result = ctl(*(["--json"] if as_json else []), "--socket", str(tmp_path / "none"),
                 "reset", "--state-dir", str(missing), check=False)
    message = (f"gatewayd is not running and there is no state directory {missing} to reset "
               "(see --state-dir)")
    assert (result.returncode, result.stderr) == (1, f"gatewayctl: {message}\n")
    assert result.stdout == (json.dumps({"error": message}) + "\n" if as_json else "")
    assert list(tmp_path.iterdir()) == []


SECOND_GATEWAYD = ("import sys; import gatewayd.hub; gatewayd.hub.CLAIM_TIMEOUT = 0.5; "
                   "from gatewayd.cli import main; raise SystemExit(main(sys.argv[1:]))")


@pytest.mark.slow
def test_a_running_daemon_holds_its_state_directory(tmp_path: Path) -> None:
    """A mistyped --socket made gatewayctl reset the state under a running daemon; and a
    second gatewayd could start on the same directory. The daemon holds it (``.lock``)."""
    cfg = write_config(tmp_path / "g.toml", ethernet_config(tmp_path))
    state_dir, sock = tmp_path / "state", tmp_path / "run" / "control.sock"
    gw = Gatewayd(["--config", str(cfg)])
    try:
        gw.wait_socket(sock)
        before = (state_dir / "state.json").read_bytes()
        refused = ctl("--socket", str(tmp_path / "typo.sock"), "reset", "--state-dir",
                      str(state_dir), check=False)
        assert refused.returncode == 1, refused.stderr
        assert (f"gatewayd is running on {state_dir} (it holds {state_dir}/.lock), but its "
                "control socket did not answer") in refused.stderr
        assert (state_dir / "state.json").read_bytes() == before
        # The daemon's own start, waiting 0.5 s for the lock instead of its 10 (a restart
        # overlapping the previous run's end), or CI would wait the 10 s out.
        second = subprocess.run([sys.executable, "-c", SECOND_GATEWAYD, "--config", str(cfg)],
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1  # not 2: systemd tries again once the first is gone
        assert f"gatewayd: cannot start: another process holds {state_dir}/.lock" in (
            second.stderr)
    finally:
        assert gw.stop() == 0
    # Once it has stopped, the directory is free again.
    assert ctl("--socket", str(sock), "reset", "--state-dir", str(state_dir)).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason=ROOT_ONLY)
def test_a_lock_left_by_a_root_run_does_not_lock_the_service_out() -> None:
    """`sudo gatewayd` once, to debug: the .lock it made (root's) must not keep the service's
    user from holding the directory afterwards (exit 2 would never be restarted)."""
    claim = ("import sys; from pathlib import Path; from gatewayd.state import StateStore; "
             "StateStore(Path(sys.argv[1])).claim(timeout=5); print('held')")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with reachable_tmp() as tmp:
        state_dir = tmp / "state"
        state_dir.mkdir(mode=0o700)
        os.chown(state_dir, NOBODY, NOBODY)
        as_root = subprocess.run([sys.executable, "-c", claim, str(state_dir)],
                                 capture_output=True, text=True, timeout=60, env=env)
        assert as_root.stdout == "held\n", as_root.stderr
        assert (state_dir / ".lock").stat().st_uid == NOBODY  # the directory's owner
        as_service = subprocess.run([*AS_NOBODY, sys.executable, "-c", claim, str(state_dir)],
                                    capture_output=True, text=True, timeout=60, env=env)
        assert as_service.stdout == "held\n", as_service.stderr
