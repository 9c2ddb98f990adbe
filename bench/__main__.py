"""Run the benchmarks: ``python -m bench`` (``make bench``); see bench/README.md."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import hub, provisioning, startup, zigbee
from bench.harness import BenchWorld, Results
from bench.settings import FULL, QUICK

OUT = Path(__file__).resolve().parent / "out" / "results.json"
PARTS = ("imports", "hub", "zigbee", "provisioning")


def machine() -> dict[str, Any]:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.partition(":")[2].strip()
            break
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text()
                  .splitlines() if line.startswith("MemTotal:"))
    mosquitto = subprocess.run([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-h"],
                               capture_output=True, text=True).stdout.splitlines()[:1]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=Path(__file__).resolve().parent.parent).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_mb": mem_kb // 1024,
            "kernel": platform.release(), "python": platform.python_version(),
            "mosquitto": mosquitto[0] if mosquitto else "", "commit": commit,
            "loadavg_at_start": os.getloadavg()[0],
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: few devices, short phases (about a minute)")
    parser.add_argument("--only", action="append", choices=PARTS,
                        help="run only this part (repeatable); 'zigbee' needs 'hub'")
    parser.add_argument("--devices", type=int, help="simulated Zigbee plugs (default 200)")
    parser.add_argument("--hubs", type=int, help="hubs provisioning at once (default 50)")
    parser.add_argument("--flood-seconds", type=float,
                        help="length of the 10x flood (default 120; 600 for the full 10 min)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"JSON file (default {OUT})")
    parser.add_argument("--workdir", type=Path, help="keep the world and logs here")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.devices:
        settings = dataclasses.replace(settings, devices=args.devices)
    if args.hubs:
        settings = dataclasses.replace(settings, provisioning_hubs=args.hubs)
    if args.flood_seconds:
        settings = dataclasses.replace(settings, flood_seconds=args.flood_seconds)
    parts = set(args.only or PARTS)
    if "zigbee" in parts:
        parts.add("hub")  # the full hub starts from the state the pairing benchmark made

    started = time.monotonic()
    results = Results()
    info = machine()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gatewayd-bench-"))
    if "imports" in parts:
        startup.run(settings, results)
    if "hub" in parts:
        with BenchWorld(workdir) as world:
            paired = hub.run(world, settings, results)
            if "zigbee" in parts:
                zigbee.run(world, settings, results, paired)
    if "provisioning" in parts:
        provisioning.run(settings, results, workdir / "provisioning")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    results.note("bench_seconds", round(elapsed, 1))
    # Flat: every key is a number, except "machine", which describes where it ran.
    out: dict[str, Any] = {**results.flat(), "quick": int(args.quick), "machine": info}
    out.update({f"setting_{k}": v for k, v in dataclasses.asdict(settings).items()})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print()
    print(results.table())
    print(f"\n{len(results.samples)} figures in {elapsed:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
