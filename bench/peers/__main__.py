"""Run the side-by-side benchmark: ``python -m bench.peers`` (``make bench-peers``).

Writes ``bench/out/peers.json`` (flat: ``<stack>_<figure>`` medians with ``_min``,
``_max``, ``_n``; ``ratio_<figure>`` = gwd / z2m; the machine and its noise) and
``bench/out/peers.png``; the plot's raw data is ``bench/out/peers-trace.json``.
"""

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

from bench import noise
from bench.harness import Results, machine
from bench.peers.hostspeed import HOST_SPEED_PHASES, annotate, host_speed
from bench.peers.measure import PEERS_FULL, PEERS_QUICK, plug_ieees, run_stack
from bench.peers.stacks import Z2M_MAIN, Z2M_MISSING, peers_world, stack_named

OUT = Path(__file__).resolve().parents[1] / "out"
STACKS = ("z2m", "gwd")


def ratios(flat: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in flat.items():
        if (not key.startswith("gwd_") or key.endswith(("_min", "_max", "_n"))
                or key.startswith(("gwd_noise_", "gwd_emulator_"))):
            continue
        figure = key[4:]
        peer = flat.get(f"z2m_{figure}")
        if isinstance(peer, int | float) and peer:
            out[f"ratio_{figure}"] = round(value / peer, 4)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 10 plugs, short phases (a few minutes)")
    parser.add_argument("--only", choices=STACKS, action="append",
                        help="run only this stack (repeatable)")
    parser.add_argument("--devices", type=int, help="simulated plugs (default 200)")
    parser.add_argument("--out", type=Path, default=OUT / "peers.json")
    parser.add_argument("--workdir", type=Path, help="keep the world, configs and logs here")
    args = parser.parse_args(argv)
    settings = PEERS_QUICK if args.quick else PEERS_FULL
    if args.devices:
        settings = dataclasses.replace(settings, devices=args.devices)
    which = [s for s in STACKS if s in (args.only or STACKS)]
    if "z2m" in which and not Z2M_MAIN.exists():
        print(Z2M_MISSING, file=sys.stderr)
        return 2

    started = time.monotonic()
    info = machine()
    monitor = noise.NoiseMonitor()
    results = Results()
    trace: dict[str, Any] = {"devices": settings.devices}
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gatewayd-peers-"))
    ieees = plug_ieees(settings.devices)
    try:
        with peers_world(workdir) as (world, paired, ncp):
            for name in which:
                stack = stack_named(name, world, ncp.url, workdir, paired)
                stack_start = time.monotonic()
                try:
                    run_stack(stack, ncp, ieees, settings, results, trace)
                finally:
                    stack.close()
                window = monitor.window(stack_start, time.monotonic())
                results.note(f"{name}_noise_other_cores", round(window["other_cores"], 3))
                results.note(f"{name}_noise_host_probe_us", round(window["host_probe_us"], 1))
                phases = trace.get("phases", {}).get(name, {})
                for phase, label in HOST_SPEED_PHASES.items():
                    if phase in phases:
                        window = monitor.window(*phases[phase])
                        results.note(f"{name}_noise_host_probe_us_{label}",
                                     round(window["host_probe_us"], 1))
    finally:
        figures, reasons = monitor.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    annotate(trace.get("repeats", {}), lambda a, b: monitor.window(a, b)["host_probe_us"])
    flat = results.flat()
    reasons += host_speed(flat, figures)
    flat.update(ratios(flat))
    flat.update(figures)
    elapsed = time.monotonic() - started
    out: dict[str, Any] = {**flat, "quick": int(args.quick), "bench_seconds": round(elapsed, 1),
                           "machine": info}
    out.update({f"setting_{k}": v for k, v in dataclasses.asdict(settings).items()
                if not isinstance(v, tuple)})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    trace_file = args.out.with_name(args.out.stem + "-trace.json")
    trace_file.write_text(json.dumps(trace) + "\n")
    print()
    print(results.table())
    for key, value in sorted(flat.items()):
        if key.startswith("ratio_"):
            print(f"{key:44s} {value:>10.3f}")
    print(f"\n{len(results.samples)} figures in {elapsed:.0f} s -> {args.out}")
    png = args.out.with_suffix(".png")
    try:
        from bench.peers.plot import plot  # matplotlib: the [peers] extra
    except ImportError as exc:
        print(f"\nNO PLOT: {exc}; `make bench-peers` installs matplotlib (the [peers] extra),"
              f" or run `python -m bench.peers.plot {args.out}` where it is installed\n",
              flush=True)
    else:
        plot(out, trace, png)
        print(f"plot -> {png}")
    noise.warn(reasons)
    return 0


if __name__ == "__main__":
    sys.exit(main())
