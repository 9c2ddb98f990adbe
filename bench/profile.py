"""Profile the daemon under Zigbee load: ``python -m bench.profile`` (see bench/README.md).

Sets up what the benchmarks use (the simulated world, a paired full hub, N plugs), starts
a report stream and samples the running gatewayd with py-spy, which attaches to a live
process and needs no change to it. Writes a flame graph (SVG) and, with ``--raw``, the
collapsed stacks for grep and diff.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench import hub, zigbee
from bench.harness import CLK_TCK, BenchError, BenchWorld, Results, copy_state, cpu_s
from bench.peers.measure import MODULO, PEERS_FULL, Plugs, form_and_join, plug_ieees, stream
from bench.peers.ncp import NcpProcess
from bench.peers.stacks import Gatewayd
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
    parser.add_argument("--radio", choices=("virtual", "bellows"), default="virtual",
                        help="the in-process virtual radio (the bench's series), or bellows "
                             "on the EZSP emulator (a real hub's path; bench/peers)")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        raise SystemExit("py-spy is not installed: scripts/setup.sh installs it (.[bench])")
    out = args.out or OUT / ("profile.txt" if args.raw else "profile.svg")
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = dataclasses.replace(QUICK, repeats=1, devices=args.devices)
    workdir = Path(tempfile.mkdtemp(prefix="gatewayd-profile-"))
    # --nonblocking: stopping the process for each sample (py-spy's default) lands the
    # samples where it resumes, after system calls: asyncio.get_running_loop() (a getpid()
    # in 3.11) showed as 17 % of the daemon, which it is not.
    record = [py_spy, "record", "--nonblocking", "--duration", str(int(args.seconds)),
              "--rate", "200", "--format", "raw" if args.raw else "flamegraph",
              "--output", str(out)]
    try:
        with BenchWorld(workdir) as world:
            paired = hub.pair_to_online(world, settings, Results())
            if args.radio == "bellows":
                _bellows(world, paired, args, record)
                print(f"-> {out}")
                return 0
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
                subprocess.run([*record, "--pid", str(daemon.proc.pid)], check=True)
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


def _thread_ticks(pid: int) -> dict[int, int]:
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        out[int(task.name)] = int(fields[11]) + int(fields[12])
    return out


def _thread_names(py_spy: str, pid: int) -> dict[int, str]:
    """Thread id -> Python thread name, from ``py-spy dump``."""
    dump = subprocess.run([py_spy, "dump", "--pid", str(pid)], capture_output=True,
                          text=True).stdout
    return {int(m.group(1)): m.group(2)
            for m in re.finditer(r'^Thread (\d+) \([^)]*\): "([^"]*)"', dump, re.M)}


def _bellows(world: BenchWorld, paired: Path, args: argparse.Namespace,
             record: list[str]) -> None:
    """The hub as a user runs it (bench/peers/gatewayd.toml), bellows on the emulator."""
    ncp = NcpProcess(world.workdir / "ncp")
    stack = Gatewayd(world, ncp.url, world.workdir / "gwd", paired)
    try:
        ieees = plug_ieees(args.devices)
        form_and_join(stack, ncp, ieees, replace(PEERS_FULL, devices=args.devices), Results())
        plugs = Plugs(stack, ieees)
        rate = args.rate
        # Unlimited rate: as with the virtual radio, more than the sampling can use;
        # stopped afterwards.
        count = int(rate * (args.seconds + 5)) if rate else MODULO * len(ieees) - 1
        stream(ncp, plugs, count, rate)
        names = _thread_names(record[0], stack.pid())
        sent0 = ncp.call("stream_status")["sent"]
        cpu0, at0, ticks0 = cpu_s(stack.pids()), time.monotonic(), _thread_ticks(stack.pid())
        print(f"sampling gatewayd (pid {stack.pid()}) for {args.seconds:g} s", flush=True)
        subprocess.run([*record, "--pid", str(stack.pid())], check=True)
        cpu1, at1, ticks1 = cpu_s(stack.pids()), time.monotonic(), _thread_ticks(stack.pid())
        status = ncp.call("stream_stop")
        # A/B instrument: at a paced --rate the emulator's own speed does not enter it,
        # as it does in the saturated throughput figure (bench/README.md).
        per_report = (cpu1 - cpu0) / max(1, status["sent"] - sent0) * 1e6
        print(f"gatewayd used {(cpu1 - cpu0) / (at1 - at0):.3f} cores while sampled, "
              f"{per_report:.1f} us per report; the stream had sent {status['sent']} of "
              f"{status['count']}", flush=True)
        # py-spy's samples say where a thread is, not whether it burns CPU there (a
        # thread in select() may be spinning or asleep): the kernel's per-thread counts do.
        for tid, ticks in sorted(ticks1.items(), key=lambda kv: kv[1] - ticks0.get(kv[0], 0),
                                 reverse=True):
            used = (ticks - ticks0.get(tid, 0)) / CLK_TCK / (at1 - at0)
            if used >= 0.005:
                print(f"  {used:5.2f} cores  thread {tid} {names.get(tid, '?')}", flush=True)
    finally:
        try:
            stack.stop()
        finally:
            ncp.close()


if __name__ == "__main__":
    sys.exit(main())
