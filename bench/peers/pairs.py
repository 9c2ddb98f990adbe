"""Both stacks in alternating pairs of runs: ``python -m bench.peers.pairs``.

bench/README.md, "Paired runs". ``bench.peers`` measures one stack and then the other,
minutes apart, and this machine's host changes speed within seconds ("The host's two
speeds"): a ratio of two medians taken minutes apart carries whatever the host did in
between. Here both stacks form their networks and join ``--devices`` plugs once, each on
its own EZSP emulator (two instances of the same emulator, so that neither stack has to
leave its network to the other), and both stay running. Then each of ``--pairs`` rounds
runs one flood of ``--reports`` reports (or, with ``--rate``, one paced run of
``--seconds``) on each stack, back to back, gatewayd first in even rounds and
Zigbee2MQTT first in odd ones (ABBA), after ``--warmup`` unrecorded runs each. A pair's
ratio (gwd / z2m) compares two runs seconds apart. It prints each run, then per figure
each stack's median (min-max), the ratio of the medians and the pairs' ratios' median
(min-max). While one stack runs the other idles; its CPU is not counted. Nothing is
written but ``--out`` (JSON: the runs, the summary, the noise monitor's figures).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench import noise
from bench.harness import Results, percentile, subscriber
from bench.peers.measure import PEERS_FULL, Plugs, flood, form_and_join, paced, plug_ieees
from bench.peers.ncp import NcpProcess
from bench.peers.stacks import Z2M_MAIN, Stack, peers_world, stack_named

STACKS = ("gwd", "z2m")


def order(pair: int) -> tuple[str, ...]:
    """ABBA: gatewayd first in even rounds, Zigbee2MQTT first in odd ones."""
    return STACKS if pair % 2 == 0 else STACKS[::-1]


def _range(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4),
            "max": round(max(values), 4), "n": len(values)}


def summarise(runs: list[dict[str, Any]], figures: list[str]) -> dict[str, dict[str, Any]]:
    """Per figure: each stack's median (min-max) over its runs, the ratio of the two
    medians, and the median (min-max) of the pairs' ratios (gwd / z2m within a round;
    a round without both runs, or with Zigbee2MQTT's value 0, has no ratio)."""
    out: dict[str, dict[str, Any]] = {}
    for figure in figures:
        by_pair: dict[int, dict[str, float]] = {}
        for run in runs:
            by_pair.setdefault(run["pair"], {})[run["stack"]] = run[figure]
        entry: dict[str, Any] = {}
        for name in STACKS:
            values = [run[figure] for run in runs if run["stack"] == name]
            if values:
                entry[name] = _range(values)
        if all(name in entry for name in STACKS) and entry["z2m"]["median"]:
            entry["ratio_of_medians"] = round(entry["gwd"]["median"] / entry["z2m"]["median"], 4)
        ratios = [pair["gwd"] / pair["z2m"] for pair in by_pair.values()
                  if len(pair) == 2 and pair["z2m"]]
        if ratios:
            entry["pair_ratios"] = _range(ratios)
        out[figure] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.pairs", description=__doc__)
    parser.add_argument("--devices", type=int, default=PEERS_FULL.devices)
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=1, help="unrecorded runs per stack first")
    parser.add_argument("--reports", type=int, default=PEERS_FULL.throughput_reports,
                        help="reports a flood")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="paced runs at this many reports a second instead of floods")
    parser.add_argument("--seconds", type=float, default=PEERS_FULL.latency_seconds,
                        help="a paced run's length")
    parser.add_argument("--out", type=Path, help="the runs and the summary as JSON")
    args = parser.parse_args(argv)
    if not Z2M_MAIN.exists():
        raise SystemExit(f"{Z2M_MAIN} is missing: `make bench-peers` installs Zigbee2MQTT")
    tag = f"{args.rate:g}"
    figures = ([f"cpu_us_per_report_{tag}", f"latency_p50_ms_{tag}", f"latency_p99_ms_{tag}"]
               if args.rate else ["cpu_us_per_report", "reports_per_s"])
    workdir = Path(tempfile.mkdtemp(prefix="gatewayd-pairs-"))
    monitor = noise.NoiseMonitor()
    runs: list[dict[str, Any]] = []
    try:
        with peers_world(workdir) as (world, paired, ncp), contextlib.ExitStack() as cleanup:
            # the second emulator, then the stacks: closed in the reverse order
            radios = {"gwd": ncp, "z2m": NcpProcess(workdir / "ncp-z2m")}
            cleanup.callback(radios["z2m"].close)
            stacks: dict[str, Stack] = {}
            for name in STACKS:
                stacks[name] = stack_named(name, world, radios[name].url, workdir, paired)
                cleanup.callback(_stop, stacks[name])
            _pairs(stacks, radios, args, monitor, runs)
    finally:
        noise_figures, _ = monitor.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    summary = summarise(runs, figures)
    for figure, entry in summary.items():
        parts = [f"{name} {_text(entry[name])}" for name in STACKS if name in entry]
        if "ratio_of_medians" in entry:
            parts.append(f"ratio of medians {entry['ratio_of_medians']:.3f}")
        if "pair_ratios" in entry:
            parts.append(f"pairs' ratios {_text(entry['pair_ratios'], 3)}")
        print(f"{figure}: " + "; ".join(parts))
    if args.out:
        args.out.write_text(json.dumps({"runs": runs, "summary": summary, **noise_figures},
                                       indent=1) + "\n")
    return 0


def _text(entry: dict[str, float], digits: int | None = None) -> str:
    if digits is None:
        digits = 2 if entry["max"] < 10 else 1  # milliseconds want their hundredths
    return (f"{entry['median']:.{digits}f} ({entry['min']:.{digits}f}-{entry['max']:.{digits}f}),"
            f" n={entry['n']}")


def _stop(stack: Stack) -> None:
    try:
        stack.stop()
    except AssertionError:
        pass  # it never started: the error that stopped it is the news
    stack.close()


def _pairs(stacks: dict[str, Stack], radios: dict[str, NcpProcess], args: argparse.Namespace,
           monitor: noise.NoiseMonitor, runs: list[dict[str, Any]]) -> None:
    ieees = plug_ieees(args.devices)
    settings = dataclasses.replace(PEERS_FULL, devices=args.devices)
    for name in STACKS:
        form_and_join(stacks[name], radios[name], ieees, settings, Results())
    plugs = {name: Plugs(stacks[name], ieees) for name in STACKS}
    world = stacks["gwd"].world
    with subscriber(world, stacks["gwd"].power_filter) as gwd_sub, \
            subscriber(world, stacks["z2m"].power_filter) as z2m_sub:
        subs = {"gwd": gwd_sub, "z2m": z2m_sub}

        def one(name: str) -> dict[str, Any]:
            stack, ncp = stacks[name], radios[name]
            if args.rate:
                run = paced(stack, ncp, plugs[name], subs[name],
                            int(args.rate * args.seconds), args.rate)
                tag = f"{args.rate:g}"
                return {"start": run.start, "end": run.end,
                        f"cpu_us_per_report_{tag}": run.cpu_us,
                        f"latency_p50_ms_{tag}": percentile(run.latencies_ms, 50),
                        f"latency_p99_ms_{tag}": percentile(run.latencies_ms, 99)}
            done = flood(stack, ncp, plugs[name], subs[name], args.reports)
            return {"start": done.start, "end": done.end, "cpu_us_per_report": done.cpu_us,
                    "reports_per_s": done.rate}

        for i in range(args.warmup):
            for name in order(i):
                one(name)
        for i in range(args.pairs):
            for name in order(i):
                run = {"pair": i, "stack": name, **one(name)}
                run["probe_us_inside"] = monitor.window(run["start"], run["end"])[
                    "host_probe_us"]
                runs.append(run)
                print(_run_text(run), flush=True)


def _run_text(run: dict[str, Any]) -> str:
    values = ", ".join(f"{key} {value:.2f}" for key, value in run.items()
                       if key not in ("pair", "stack", "start", "end", "probe_us_inside"))
    return (f"pair {run['pair'] + 1} {run['stack']}: {values}; host probe inside "
            f"{run['probe_us_inside']:.0f} µs")



if __name__ == "__main__":
    raise SystemExit(main())
