"""The simulator for crash tests: a restart of the same workdir after `kill -9`.

Orphans of a killed run do not block the next one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gatewayd.simulator.procs import Child, start_time
from tests.helpers import wait_for

STUBBORN = """
import os, signal, sys, time
from pathlib import Path
from gatewayd.simulator.procs import Child
# A child that ignores the SIGTERM its parent's death sends: only the next run can reap it.
child = Child("stubborn", [sys.executable, "-c",
                           "import signal, sys, time; signal.signal(signal.SIGTERM, "
                           "signal.SIG_IGN); print('up', flush=True); time.sleep(120)"],
              Path(sys.argv[1]) / "stubborn.log")
print(child.pid, flush=True)
time.sleep(120)
"""


def test_a_child_left_behind_by_a_killed_run_is_reaped_before_its_successor_starts(
        tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))
    parent = subprocess.Popen([sys.executable, "-c", STUBBORN, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True, env=env)
    assert parent.stdout is not None
    orphan = int(parent.stdout.readline())
    wait_for(lambda: (tmp_path / "stubborn.log").read_text().strip() == "up", 10, "the child")
    argv = [sys.executable, "-c", "import time; time.sleep(120)"]
    with pytest.raises(RuntimeError, match="another simulator"):
        Child("stubborn", argv, tmp_path / "stubborn.log")  # its simulator still runs
    assert start_time(orphan) is not None

    try:
        parent.kill()
        parent.wait(10)
        assert start_time(orphan) is not None  # survived its parent's death signal
        successor = Child("stubborn", argv, tmp_path / "stubborn.log")
        try:
            assert start_time(orphan) is None
            record = json.loads((tmp_path / "stubborn.pid").read_text())
            assert record["pid"] == successor.pid and record["parent"] == os.getpid()
        finally:
            successor.stop()
        assert not (tmp_path / "stubborn.pid").exists()
    finally:
        if start_time(orphan) is not None:
            os.kill(orphan, signal.SIGKILL)
