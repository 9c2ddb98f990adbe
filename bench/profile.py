"""Profile the daemon under Zigbee load: ``python -m bench.profile`` (see bench/README.md).

Sets up what the benchmarks use (the simulated world, a paired full hub, N plugs), starts
a report stream and samples the running gatewayd with py-spy, which attaches to a live
process and needs no change to it. Writes a flame graph (SVG) and, with ``--raw``, the
collapsed stacks for grep and diff.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import hub, zigbee
from bench.harness import BenchError, BenchWorld, Results, copy_state
from bench.settings import QUICK
from gatewayd.simulator.procs import wait_until

OUT = Path(__file__).resolve().parent / "out"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--rate", type=float, default=0.0,
                        help="reports per second (default 0: as fast as possible)")
    parser.add_argument("--seconds", type=float, default=15.0, help="how long to sample")
    parser.add_argument("--raw", action="store_true", help="collapsed stacks, not SVG")
    parser.add_argument("--out", type=Path, help=f"output file (default in {OUT})")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        raise SystemExit("py-spy is not installed: scripts/setup.sh installs it (.[bench])")
    out = args.out or OUT / ("profile.txt" if args.raw else "profile.svg")
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = dataclasses.replace(QUICK, repeats=1, devices=args.devices)
    workdir = Path(tempfile.mkdtemp(prefix="gatewayd-profile-"))
    try:
        with BenchWorld(workdir) as world:
            paired = hub.pair_to_online(world, settings, Results())
            daemon = world.start_daemon("profile", copy_state(paired, workdir / "full"),
                                        zigbee=True, ble=True, virtual=True)
            try:
                daemon.wait_ready()
                wait_until(lambda: daemon.api("GET", "status").get("state") == "online", 60,
                           "the hub to go online")
                plugs = zigbee.join(daemon, world, settings)
                rate = args.rate
                # Unlimited rate: more than the sampling can use; stopped afterwards.
                count = int(rate * (args.seconds + 5)) if rate else \
                    zigbee.MODULO * len(plugs.ieees) - 1
                zigbee.stream(daemon, plugs, count, rate)
                print(f"sampling gatewayd (pid {daemon.proc.pid}) for {args.seconds:g} s",
                      flush=True)
                subprocess.run([py_spy, "record", "--pid", str(daemon.proc.pid),
                                "--duration", str(int(args.seconds)), "--rate", "200",
                                "--format", "raw" if args.raw else "flamegraph",
                                "--output", str(out)], check=True)
                daemon.api("POST", "zigbee/sim", {"action": "stream_stop"})
            finally:
                daemon.stop()
    except (BenchError, TimeoutError) as exc:
        print(f"profile: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
