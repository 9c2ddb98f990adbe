"""Where the full hub's memory goes per plug: ``python -m bench.memory`` (bench/README.md,
"The serial line, and what the saturated figure measures", memory per plug).

Starts the simulated world, pairs a hub and starts the full hub as ``bench --only zigbee``
does (virtual radio, BLE, virtual devices), and reads its RSS once it is online and again
after ``--devices`` plugs joined: ``memory_rss_online_mb``, ``memory_rss_joined_mb`` and
``memory_kb_per_plug``, median, min and max over ``--repeats`` fresh hubs. Each hub is
then started again on its state directory and read once its plugs are restored from
``zigbee.db``: ``memory_rss_restored_mb``, what the same network costs without the
join's peak (the difference is what a join leaves behind).

With ``--trace`` the daemon runs under tracemalloc (``bench/memsite/sitecustomize.py``;
its RSS is then not the hub's, so no figures) and the allocation sites that grew between
online and joined are printed, by file or, with ``--by lineno``, by line: what to look at
first when the per-plug figure moves.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import tempfile
import time
import tracemalloc
from pathlib import Path

from bench import hub, zigbee
from bench.harness import BenchWorld, DaemonProcess, Results, copy_state
from bench.settings import FULL, Settings
from gatewayd.simulator.procs import wait_until

MEMSITE = Path(__file__).resolve().parent / "memsite"
SETTLE_S = 2.0  # after each phase, before reading: the join's last writes land


def _start(world: BenchWorld, state_dir: Path, name: str, trace_dir: Path | None,
           frames: int = 1) -> DaemonProcess:
    env = None if trace_dir is None else {"PYTHONPATH": str(MEMSITE),
                                          "GATEWAYD_MEMPROBE_DIR": str(trace_dir),
                                          "GATEWAYD_MEMPROBE_FRAMES": str(frames)}
    daemon = world.start_daemon(name, state_dir, env,
                                zigbee=True, ble=True, virtual=True)
    daemon.wait_ready(120)
    wait_until(lambda: daemon.api("GET", "status").get("state") == "online", 60,
               "the full hub to go online")
    wait_until(lambda: daemon.api("GET", "status").get("zigbee", {}).get("up"), 60,
               "the virtual radio to come up")
    return daemon


def _wait_restored(daemon: DaemonProcess, devices: int) -> None:
    wait_until(lambda: zigbee.ready_plugs(daemon) >= devices, 120, "the plugs to be restored")


def _settled_rss(daemon: DaemonProcess) -> float:
    time.sleep(SETTLE_S)  # a measurement schedule, not synchronisation
    return daemon.rss_mb()


def _snapshot(daemon: DaemonProcess, trace_dir: Path, n: int) -> tracemalloc.Snapshot:
    os.kill(daemon.proc.pid, signal.SIGUSR1)
    wait_until(lambda: (trace_dir / f"done-{n}").exists(), 300, "the daemon's snapshot")
    return tracemalloc.Snapshot.load(str(trace_dir / f"snap-{n}"))


def _grew(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, by: str,
          top: int) -> None:
    stats = after.compare_to(before, by)
    total = sum(s.size_diff for s in stats)
    print(f"\ngrew between online and joined: {total / 1e6:.2f} MB traced; top {top} by {by}:")
    for stat in stats[:top]:
        # The allocating frame (a Traceback's str() is its oldest: a thread's bootstrap)
        # and, by traceback, the callers that tell one group from another.
        frames = [str(frame).split("site-packages/")[-1]
                  for frame in reversed(stat.traceback)][:6 if by == "traceback" else 1]
        print(f"  {stat.size_diff / 1e6:8.3f} MB {stat.count_diff:8d} objects  {frames[0]}")
        for caller in frames[1:]:
            print(f"{'':36}<- {caller}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--devices", type=int, default=FULL.devices)
    parser.add_argument("--repeats", type=int, default=2, help="fresh hubs measured")
    parser.add_argument("--trace", action="store_true",
                        help="tracemalloc in the daemon: where the memory went")
    parser.add_argument("--by", choices=("filename", "lineno", "traceback"),
                        default="filename")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    settings: Settings = dataclasses.replace(FULL, devices=args.devices, repeats=1)
    results = Results()
    with tempfile.TemporaryDirectory(prefix="gatewayd-memory-") as tmp, \
            BenchWorld(Path(tmp)) as world:
        paired = hub.pair_to_online(world, settings, Results())
        if args.trace:
            trace_dir = Path(tmp) / "trace"
            trace_dir.mkdir()
            # Grouped by file or line, only the allocating frame counts: one frame a trace
            # runs the daemon about four times faster than the twelve a traceback needs.
            daemon = _start(world, copy_state(paired, world.workdir / "traced"), "traced",
                            trace_dir, 12 if args.by == "traceback" else 1)
            try:
                before = _snapshot(daemon, trace_dir, 1)
                zigbee.join(daemon, world, settings)
                after = _snapshot(daemon, trace_dir, 2)
            finally:
                daemon.stop()
            _grew(before, after, args.by, args.top)
            return 0
        online, joined, restored = [], [], []
        for run in range(args.repeats):
            state_dir = copy_state(paired, world.workdir / f"hub-{run}")
            daemon = _start(world, state_dir, f"hub-{run}", None)
            try:
                online.append(_settled_rss(daemon))
                zigbee.join(daemon, world, settings)
                joined.append(_settled_rss(daemon))
            finally:
                daemon.stop()
            # The same hub started again: its plugs come from zigbee.db, no interview.
            daemon = _start(world, state_dir, f"hub-{run}-again", None)
            try:
                _wait_restored(daemon, args.devices)
                restored.append(_settled_rss(daemon))
            finally:
                daemon.stop()
        results.add("memory_rss_online_mb", online, "MB")
        results.add("memory_rss_joined_mb", joined, "MB")
        results.add("memory_rss_restored_mb", restored, "MB")
        results.add("memory_kb_per_plug", [(j - o) * 1024 / args.devices
                                           for o, j in zip(online, joined, strict=True)], "KB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
