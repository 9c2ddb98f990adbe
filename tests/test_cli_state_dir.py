"""What gatewayd's start tells systemd about a state directory it cannot use.

Exit status 2 stops systemd's restarts (the unit's RestartPreventExitStatus=2): right for
a configuration error, wrong for a disk that is full or read-only at the start. Before,
every OSError was 2, and a hub whose disk had filled up stayed down after the space was
freed. Now a storage fault is 1 (tried again with the unit's back-off).
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from tests.helpers import Gatewayd, ethernet_config, run_tool, write_config
from tests.test_reset_storage import fill, small_disk

pytestmark = pytest.mark.timeout(120)

SERVICE = Path(__file__).resolve().parent.parent / "systemd" / "gatewayd.service"


def not_restarted() -> set[int]:
    """The exit statuses systemd does not restart gatewayd for."""
    found = re.search(r"^RestartPreventExitStatus=(.*)$", SERVICE.read_text(), re.MULTILINE)
    assert found is not None
    return {int(status) for status in found.group(1).split()}


def start(config: Path) -> tuple[int, str]:
    result = run_tool(["gatewayd", "--config", str(config)], timeout=90)
    return result.returncode, result.stderr


def test_a_full_state_disk_is_tried_again_and_the_start_works_once_space_is_freed(
        tmp_path: Path) -> None:
    config = write_config(tmp_path / "g.toml", ethernet_config(tmp_path))
    with small_disk(tmp_path / "state", "64k") as state_dir:
        filler = fill(state_dir)
        status, stderr = start(config)
        assert status == 1 and status not in not_restarted(), stderr
        assert stderr.strip().splitlines()[-1] == (
            f"gatewayd: cannot start: state directory {state_dir}: No space left on device "
            "(a storage fault, not a configuration error; systemd starts gatewayd again)")

        filler.unlink()  # what systemd's next try finds
        gw = Gatewayd(["--config", str(config)])
        try:
            gw.wait_socket(tmp_path / "run" / "control.sock")
        finally:
            assert gw.stop(signal.SIGTERM) == 0, gw.output()
        assert (state_dir / "state.json").exists()


def test_a_read_only_state_disk_is_tried_again(tmp_path: Path) -> None:
    config = write_config(tmp_path / "g.toml", ethernet_config(tmp_path))
    with small_disk(tmp_path / "state", "64k", "ro") as state_dir:
        status, stderr = start(config)
    assert status == 1 and status not in not_restarted(), stderr
    assert stderr.strip().splitlines()[-1] == (
        f"gatewayd: cannot start: state directory {state_dir}: Read-only file system "
        "(a storage fault, not a configuration error; systemd starts gatewayd again)")


def test_a_state_dir_that_is_not_a_directory_stays_a_configuration_error(
        tmp_path: Path) -> None:
    config = write_config(tmp_path / "g.toml", ethernet_config(tmp_path))
    (tmp_path / "state").write_text("not a directory")
    status, stderr = start(config)
    assert status == 2 and status in not_restarted(), stderr
    assert stderr.strip().splitlines()[-1].startswith(
        f"gatewayd: cannot use state directory {tmp_path / 'state'}: ")
    assert (tmp_path / "state").read_text() == "not a directory"


def test_the_simulator_says_so_too_without_a_traceback(tmp_path: Path) -> None:
    """Before: a traceback from deep in the state's lock, exit 1 by accident."""
    workdir = tmp_path / "sim"
    workdir.mkdir(mode=0o700)
    with small_disk(workdir / "state", "64k", "ro") as state_dir:
        result = run_tool(["gatewayd", "--simulate", "--workdir", str(workdir)], timeout=90)
    assert result.returncode == 1, result.stderr
    assert (f"cannot use state directory {state_dir}: Read-only file system"
            in result.stderr), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "simulated world stopped" in result.stderr
