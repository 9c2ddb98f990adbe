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
ratio (gwd / z2m) compares two runs seconds apart. Before each run the tool waits until
both stacks and both emulators are quiet (:func:`quiet`), so that no run is billed for
the tail of the one before it (at each pair's boundary a stack runs twice in a row).
While one stack runs the other idles; its CPU is not counted, but it is kept with the
run (``others_cores``: the idle stack's and its emulator's), as are the running
stack's emulator's CPU a report and a paced run's delivered share and how late its
emulator was. It prints each run, then per figure each
stack's median (min-max), the ratio of the medians and the pairs' ratios' median
(min-max). Nothing is written but ``--out`` (JSON: the runs, the summary, the noise
monitor's figures; the runs made so far if the tool fails).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import noise
from bench.harness import Results, cpu_s, percentile, subscriber
from bench.harness import summary as median_min_max
from bench.peers.measure import PEERS_FULL, Plugs, flood, form_and_join, paced, plug_ieees
from bench.peers.ncp import NcpProcess
from bench.peers.stacks import (
    Stack,
    peers_world,
    require_zigbee2mqtt,
    stack_named,
    stop_and_close,
)

STACKS = ("gwd", "z2m")
QUIET_CORES = 0.03  # "quiet": at most this much CPU over a QUIET_WINDOW (3 clock ticks)
QUIET_WINDOW = 1.0
QUIET_TIMEOUT = 20.0


def order(pair: int) -> tuple[str, ...]:
    """ABBA: gatewayd first in even rounds, Zigbee2MQTT first in odd ones."""
    return STACKS if pair % 2 == 0 else STACKS[::-1]


def quiet(pids: Callable[[], list[int]], timeout: float = QUIET_TIMEOUT) -> float:
    """Wait until the processes ``pids()`` use at most :data:`QUIET_CORES` over a
    :data:`QUIET_WINDOW` (or ``timeout`` passed); returns the wait."""
    start = time.monotonic()
    while True:
        before, at = cpu_s(pids()), time.monotonic()
        time.sleep(QUIET_WINDOW)  # the measuring window
        used = (cpu_s(pids()) - before) / (time.monotonic() - at)
        if used <= QUIET_CORES or time.monotonic() - start >= timeout:
            return time.monotonic() - start


def _range(values: list[float]) -> dict[str, float]:
    return {**{key: round(value, 4) for key, value in median_min_max(values).items()},
            "n": len(values)}


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
    if args.rate < 0 or (args.rate and int(args.rate * args.seconds) < 1):
        parser.error("--rate and --seconds must make at least one report")
    require_zigbee2mqtt()
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
                cleanup.callback(stop_and_close, stacks[name])
            _pairs(stacks, radios, args, monitor, runs)
    finally:
        noise_figures, _ = monitor.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        summary = summarise(runs, figures)
        if args.out:
            args.out.write_text(json.dumps({"runs": runs, "summary": summary,
                                            **noise_figures}, indent=1) + "\n")
    for figure, entry in summary.items():
        parts = [f"{name} {_text(entry[name])}" for name in STACKS if name in entry]
        if "ratio_of_medians" in entry:
            parts.append(f"ratio of medians {entry['ratio_of_medians']:.3f}")
        if "pair_ratios" in entry:
            parts.append(f"pairs' ratios {_text(entry['pair_ratios'], 3)}")
        print(f"{figure}: " + "; ".join(parts))
    return 0


def _text(entry: dict[str, float], digits: int | None = None) -> str:
    if digits is None:
        digits = 2 if entry["max"] < 10 else 1  # milliseconds want their hundredths
    return (f"{entry['median']:.{digits}f} ({entry['min']:.{digits}f}-{entry['max']:.{digits}f}),"
            f" n={entry['n']}")


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

        def everything() -> list[int]:
            return [pid for name in STACKS
                    for pid in (*stacks[name].pids(), radios[name].pid)]

        def one(name: str) -> dict[str, Any]:
            stack, ncp = stacks[name], radios[name]
            other = STACKS[1 - STACKS.index(name)]

            def others() -> list[int]:
                return [*stacks[other].pids(), radios[other].pid]

            waited = quiet(everything)
            before, at = cpu_s(others()), time.monotonic()
            if args.rate:
                count = int(args.rate * args.seconds)
                run = paced(stack, ncp, plugs[name], subs[name], count, args.rate)
                tag = f"{args.rate:g}"
                out = {"start": run.start, "end": run.end,
                       f"cpu_us_per_report_{tag}": run.cpu_us,
                       f"latency_p50_ms_{tag}": percentile(run.latencies_ms, 50),
                       f"latency_p99_ms_{tag}": percentile(run.latencies_ms, 99),
                       "delivered_ratio": run.seen / count,
                       "emulator_behind_p50_ms": run.emulator["behind_p50_s"] * 1000,
                       "emulator_behind_p99_ms": run.emulator["behind_p99_s"] * 1000,
                       "emulator_cpu_us_per_report": run.emulator_cpu_us}
            else:
                done = flood(stack, ncp, plugs[name], subs[name], args.reports)
                out = {"start": done.start, "end": done.end,
                       "cpu_us_per_report": done.cpu_us, "reports_per_s": done.rate,
                       "emulator_cpu_us_per_report": done.emulator_cpu_us}
            out["others_cores"] = (cpu_s(others()) - before) / (time.monotonic() - at)
            out["quiet_wait_s"] = waited
            return out

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
    return (f"pair {run['pair']} {run['stack']}: {values}; host probe inside "
            f"{run['probe_us_inside']:.0f} µs")


if __name__ == "__main__":
    raise SystemExit(main())
