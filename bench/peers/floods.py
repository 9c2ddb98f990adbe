"""One stack, many saturated runs, each with the host's speed: ``python -m bench.peers.floods``.

bench/README.md, "The saturated figure's modes are gatewayd's coalescing passes": the
stack (the peers configuration, ``--devices`` plugs over bellows or Zigbee2MQTT's ember
driver on the EZSP emulator) joins its plugs once, then takes ``--runs`` floods of
``--reports`` reports, as ``bench.peers``' throughput phase does (but with the
subscriber keeping every message), with a pause of 1-3 s between them. For each run it
prints the stack's CPU µs a report (and cores), the emulator's, the reports/s, the
messages the subscriber got and the longest gaps between them (gatewayd's coalescing
passes show there), and the host's speed (``bench.noise.probe``'s µs: just before, the
noise monitor's median inside the run, just after; lower is faster); at the end, the
median (min-max) of the runs with the probe fast inside them (:data:`FAST_LIMIT`), of
those with it slow, and of those no probe fell inside. Nothing is written but ``--out``
(JSON).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import noise
from bench.harness import Results, subscriber
from bench.peers.measure import PEERS_FULL, Plugs, flood, form_and_join, plug_ieees
from bench.peers.ncp import NcpProcess
from bench.peers.stacks import (
    Stack,
    peers_world,
    require_zigbee2mqtt,
    stack_named,
    stop_and_close,
)

# A run counts as at the host's fast speed when the probe's median inside it is at most
# this much above the 10th percentile of every probe the tool took (the two speeds'
# probes: 210-240 and 290-390 µs on this machine).
FAST_LIMIT = 1.15


def _summary(values: list[float]) -> str:
    if not values:
        return "none"
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f}), n={len(values)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.floods", description=__doc__)
    parser.add_argument("--stack", choices=("gwd", "z2m"), default="gwd")
    parser.add_argument("--devices", type=int, default=PEERS_FULL.devices)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--reports", type=int, default=PEERS_FULL.throughput_reports)
    parser.add_argument("--out", type=Path, help="the runs as JSON")
    args = parser.parse_args(argv)
    if args.stack == "z2m":
        require_zigbee2mqtt()
    workdir = Path(tempfile.mkdtemp(prefix="gatewayd-floods-"))
    monitor = noise.NoiseMonitor()
    runs: list[dict[str, Any]] = []
    try:
        with peers_world(workdir) as (world, paired, ncp):
            stack = stack_named(args.stack, world, ncp.url, workdir, paired)
            try:
                _floods(stack, ncp, args, monitor, runs)
            finally:
                stop_and_close(stack)
    finally:
        figures, _ = monitor.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    limit = FAST_LIMIT * figures["noise_host_probe_us_p10"]
    groups = (("host fast", [r for r in runs if 0 < r["probe_us_inside"] <= limit]),
              ("host slow", [r for r in runs if r["probe_us_inside"] > limit]),
              ("no probe inside", [r for r in runs if not r["probe_us_inside"]]))
    for name, part in groups:
        print(f"{name}: {_summary([r['cpu_us_per_report'] for r in part])} µs a report, "
              f"{_summary([r['reports_per_s'] for r in part])} reports/s")
    print(f"(fast: the probe inside the run at most {limit:.0f} µs, {FAST_LIMIT} x the 10th "
          f"percentile of every probe this tool took, the join's included)")
    if args.out:
        args.out.write_text(json.dumps({"runs": runs, "fast_limit_us": limit, **figures},
                                       indent=1) + "\n")
    return 0


def _floods(stack: Stack, ncp: NcpProcess, args: argparse.Namespace,
            monitor: noise.NoiseMonitor, runs: list[dict[str, Any]]) -> None:
    ieees = plug_ieees(args.devices)
    form_and_join(stack, ncp, ieees, dataclasses.replace(PEERS_FULL, devices=args.devices),
                  Results())
    plugs = Plugs(stack, ieees)
    with subscriber(stack.world, stack.power_filter) as sub:
        for i in range(args.runs):
            if i:
                time.sleep(1.0 + i % 3)  # varied pauses, not in step with the host
            before = noise.probe()
            run = flood(stack, ncp, plugs, sub, args.reports, keep=True)
            after = noise.probe()
            inside = monitor.window(run.start, run.end)["host_probe_us"]
            arrivals = sorted(r[0] for r in run.records)
            gaps = sorted(round((b - a) * 1000, 1)
                          for a, b in itertools.pairwise(arrivals))[-3:]
            runs.append({"start": run.start, "end": run.end, "cpu_us_per_report": run.cpu_us,
                         "reports_per_s": run.rate,
                         "emulator_cpu_us_per_report": run.emulator_cpu_us,
                         "probe_us_before": before,
                         "probe_us_inside": inside, "probe_us_after": after,
                         "messages": len(arrivals), "longest_gaps_ms": gaps})
            print(f"run {i + 1}: {run.cpu_us:.1f} µs a report ({run.cpu_us * run.rate / 1e6:.2f} "
                  f"core; the emulator {run.emulator_cpu_us:.1f} µs, "
                  f"{run.emulator_cpu_us * run.rate / 1e6:.2f} core), {run.rate:.0f} reports/s in "
                  f"{run.end - run.start:.3f} s; {len(arrivals)} messages, longest gaps "
                  f"{gaps} ms; host probe {before:.0f} / {inside:.0f} / {after:.0f} µs",
                  flush=True)

if __name__ == "__main__":
    raise SystemExit(main())
