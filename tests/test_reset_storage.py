"""A factory reset on a hub whose state cannot be written (a full or read-only disk).

Before: the reset released the account (the platform told, every retained topic cleared,
the cloud link stopped), then failed to write the state: `gatewayctl reset` said
"Internal error", the hub stayed paired and claimed `online` with its link down for good.
Now the state is written first; a write that fails changes nothing, and the reset is
refused in words, from the control socket as from the button's long press.

The simulator runs as its own process, its state directory on a small tmpfs filled up.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cloud_helpers import retained_snapshot
from tests.helpers import ROOT_ONLY, ctl, ctl_json, wait_for
from tests.test_e2e_simulator import DEVICE_ID, Sim, http_get, monitor_for

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


@contextlib.contextmanager
def small_disk(path: Path, size: str = "1m", *options: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``path`` (root only; skipped where mounting is not allowed);
    ``options`` such as ``ro``."""
    if os.geteuid() != 0:
        pytest.skip(ROOT_ONLY)
    path.mkdir(parents=True, mode=0o700, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(
        [f"size={size}", "mode=0700", *options]), "tmpfs", str(path)],
        capture_output=True, text=True, timeout=30)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def fill(directory: Path) -> Path:
    """Write a file until the disk is full; returns it (delete it to free the space)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for _ in range(4096):  # 4 MB at most: the disks here are smaller
            try:
                os.write(fd, b"\0" * 1024)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                return filler
        raise AssertionError("the disk never filled up")
    finally:
        os.close(fd)


def ownership_requests(sim: Sim) -> list[object]:
    log = ctl_json("--sim", str(sim.workdir), "platform", "log")
    return [entry for entry in log if entry.get("endpoint") == "device/ownership"]


def test_a_reset_that_cannot_write_the_state_changes_nothing_and_says_why(
        tmp_path: Path) -> None:
    workdir = tmp_path / "sim"
    workdir.mkdir(mode=0o700)
    with small_disk(workdir / "state") as state_dir:
        sim = Sim(workdir, "--ethernet")
        try:
            account, mqtt = sim.info["account"], sim.info["mqtt"]
            root = account["username"]
            hub_state = f"{root}/sweet-home/{DEVICE_ID}/$state"
            with monitor_for(sim) as monitor:
                assert http_get(sim.pair_url(wsp=account["wsp"], token=account["token"],
                                             host=mqtt["host"], brport=str(mqtt["port"]))) \
                    == (200, "OK")
                wait_for(lambda: sim.status()["state"] == "online", 30, "online")
                monitor.wait_for(hub_state, "ready", timeout=15)
            state_file = state_dir / "state.json"
            before = state_file.read_bytes()
            filler = fill(state_dir)

            expected = (f"the hub could not write its state in {state_dir} (No space left "
                        "on device); nothing was reset: free space there and try again")
            for command in (["reset"], ["button", "long"]):  # one outcome, either way
                refused = ctl("--sim", str(workdir), "--json", *command, check=False)
                assert refused.returncode == 1, (command, refused.stdout, refused.stderr)
                assert json.loads(refused.stdout) == {"error": expected,
                                                      "code": "storage-failed"}, command

            status = sim.status()
            assert (status["state"], status["paired"], status["release_pending"]) == (
                "online", True, None)
            assert status["cloud_link"]["connected"] is True
            assert state_file.read_bytes() == before
            broker = monitor_for(sim).broker
            assert retained_snapshot(broker, hub_state)[hub_state].text == "ready"
            assert ownership_requests(sim) == []
            assert "factory reset refused: " + expected in sim.proc.output()

            # The space freed, the same command resets the hub and releases the account.
            filler.unlink()
            reset = ctl_json("--sim", str(workdir), "reset")
            assert (reset["paired"], reset["release_pending"]) == (False, None)
            assert retained_snapshot(broker, f"{root}/sweet-home/{DEVICE_ID}/#") == {}
            assert len(ownership_requests(sim)) == 1
        finally:
            assert sim.proc.stop(signal.SIGINT, timeout=30) == 0, sim.proc.output()
