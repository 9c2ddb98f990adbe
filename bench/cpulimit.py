"""Run a process under a CPU limit: a cgroup with a CFS quota (bench/README.md, "Pi Zero").

cgroup v1 (these machines, ``/sys/fs/cgroup/cpu``): ``cpu.cfs_period_us`` and
``cpu.cfs_quota_us``; cgroup v2 (a unified ``/sys/fs/cgroup``): ``cpu.max`` = "quota
period", after enabling the cpu controller for the children of the parent group. systemd
is not PID 1 here, so the files are written directly (needs root). The limited process
joins the group itself before it executes (``preexec``), so its imports and start-up are
limited too; its threads and children follow it.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

PERIOD_US = 100_000
V1_ROOT = Path("/sys/fs/cgroup/cpu")
V2_ROOT = Path("/sys/fs/cgroup")


class CpuLimitUnavailable(RuntimeError):
    """No cgroup can be made here; the message says why."""


class CpuLimit:
    """``with CpuLimit(0.25) as limit: Popen(..., preexec_fn=limit.preexec)``."""

    def __init__(self, cores: float, name: str | None = None) -> None:
        self.cores = cores
        self.name = name or f"gatewayd-bench-{os.getpid()}-{time.monotonic_ns()}"
        self.path: Path | None = None
        self.version = 0
        self._made: Path | None = None  # the directory we created, to remove

    def __enter__(self) -> CpuLimit:
        quota = max(1000, round(self.cores * PERIOD_US))
        errors = []
        if (V1_ROOT / "cpu.cfs_quota_us").exists():
            try:
                path = V1_ROOT / self.name
                path.mkdir()
                self._made = path
                (path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (path / "cpu.cfs_quota_us").write_text(str(quota))
                self.path, self.version = path, 1
                return self
            except OSError as exc:
                errors.append(f"cgroup v1 at {V1_ROOT}: {exc}")
                self._remove()
        if (V2_ROOT / "cgroup.controllers").exists():
            try:
                if "cpu" not in (V2_ROOT / "cgroup.controllers").read_text().split():
                    raise OSError("the cpu controller is not available")
                control = V2_ROOT / "cgroup.subtree_control"
                if "cpu" not in control.read_text().split():
                    control.write_text("+cpu")
                path = V2_ROOT / self.name
                path.mkdir()
                self._made = path
                (path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
                self.path, self.version = path, 2
                return self
            except OSError as exc:
                errors.append(f"cgroup v2 at {V2_ROOT}: {exc}")
                self._remove()
        if not errors:
            errors.append("neither cgroup v1's cpu controller nor cgroup v2 is mounted")
        raise CpuLimitUnavailable("; ".join(errors))

    def preexec(self) -> None:
        """In the child, before exec: join the group."""
        assert self.path is not None
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def stats(self) -> dict[str, float]:
        """Throttling so far: periods, throttled periods, seconds throttled."""
        assert self.path is not None
        values = {}
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            values[key] = float(value)
        if self.version == 1:
            return {"periods": values.get("nr_periods", 0.0),
                    "throttled": values.get("nr_throttled", 0.0),
                    "throttled_s": values.get("throttled_time", 0.0) / 1e9}
        return {"periods": values.get("nr_periods", 0.0),
                "throttled": values.get("nr_throttled", 0.0),
                "throttled_s": values.get("throttled_usec", 0.0) / 1e6}

    def _remove(self) -> None:
        path, self._made = self._made, None
        if path is None:
            return
        for _ in range(50):  # the group can only go once its last process has exited
            try:
                path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)  # a kill takes effect asynchronously
        with contextlib.suppress(OSError):
            path.rmdir()

    def __exit__(self, *exc: object) -> None:
        self._remove()
