"""Run the benchmarks: ``python -m bench`` (``make bench``); see bench/README.md."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import hub, noise, pizero, provisioning, startup, zigbee
from bench.harness import BenchWorld, Results, machine
from bench.peers.measure import plug_ieees
from bench.settings import FULL, QUICK

OUT = Path(__file__).resolve().parent / "out" / "results.json"
PARTS = ("imports", "hub", "zigbee", "provisioning", "pizero")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: few devices, short phases (about a minute)")
    parser.add_argument("--only", action="append", choices=PARTS,
                        help="run only this part (repeatable); 'zigbee' needs 'hub'; "
                             "'pizero' is the hub under a CPU limit (bench/README.md)")
    parser.add_argument("--devices", type=int, help="simulated Zigbee plugs (default 200)")
    parser.add_argument("--hubs", type=int, help="hubs provisioning at once (default 50)")
    parser.add_argument("--flood-seconds", type=float,
                        help="length of the 10x flood (default 120; 600 for the full 10 min)")
    parser.add_argument("--pizero-cores", type=float,
                        help="the Pi Zero run's CPU limit in cores (default 0.25)")
    parser.add_argument("--pizero-rate", type=float,
                        help="the Pi Zero run's offered reports/s (default 250)")
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

    pizero_settings = pizero.PIZERO_QUICK if args.quick else pizero.PIZERO_FULL
    if args.pizero_cores:
        pizero_settings = dataclasses.replace(pizero_settings, cores=args.pizero_cores)
    if args.pizero_rate:
        pizero_settings = dataclasses.replace(pizero_settings, rate=args.pizero_rate)
    if args.devices:
        pizero_settings = dataclasses.replace(pizero_settings, devices=args.devices)

    started = time.monotonic()
    results = Results()
    info = machine()
    monitor = noise.NoiseMonitor()
    # Absolute: the configs it writes name their directories from it (gatewayd refuses a
    # relative state_dir).
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="gatewayd-bench-"))).resolve()
    try:
        if "imports" in parts:
            startup.run(settings, results)
        if parts & {"hub", "pizero"}:
            with BenchWorld(workdir) as world:
                if "hub" in parts:
                    paired = hub.run(world, settings, results)
                else:
                    paired = hub.pair_to_online(world, dataclasses.replace(settings, repeats=1),
                                                Results())
                if "zigbee" in parts:
                    zigbee.run(world, settings, results, paired)
                if "pizero" in parts:
                    pizero.run(world, paired, pizero_settings, results,
                               plug_ieees(pizero_settings.devices))
        if "provisioning" in parts:
            provisioning.run(settings, results, workdir / "provisioning")
    finally:
        figures, reasons = monitor.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    results.note("bench_seconds", round(elapsed, 1))
    # Flat: every key is a number, except "machine", which describes where it ran.
    out: dict[str, Any] = {**results.flat(), **figures, "quick": int(args.quick),
                           "machine": info}
    out.update({f"setting_{k}": v for k, v in dataclasses.asdict(settings).items()})
    out.update({f"setting_pizero_{k}": v
                for k, v in dataclasses.asdict(pizero_settings).items()})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print()
    print(results.table())
    print(f"\n{len(results.samples)} figures in {elapsed:.0f} s -> {args.out}")
    if "pizero" in parts and results.extra.get("pizero_skipped"):
        print("\nTHE PI ZERO BUDGET RUN WAS SKIPPED: it does not meet the target.", flush=True)
    noise.warn(reasons)
    return 0


if __name__ == "__main__":
    sys.exit(main())
