"""Run the chaos suite: ``python -m chaos [--short|--long] [--seed N] [--only CAMPAIGN]``.

``make chaos`` is the long form, ``make chaos-short`` (and tests/test_chaos.py) the short
one; docs/chaos.md says what each campaign does and how to read the table. The exit
status is 0 when every pass/fail count is 0, else 1.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench.__main__ import machine
from chaos import ble_burst, broker_kill, http_fuzz, kill9, mqtt_flood, report
from chaos.settings import LONG, SHORT, Settings
from chaos.tally import Tally
from chaos.world import ChaosWorld

OUT = Path(__file__).resolve().parent / "out" / "chaos.json"
Campaign = Callable[[ChaosWorld, Settings, int, Path, Tally], None]
CAMPAIGNS: dict[str, Campaign] = {
    "http_fuzz": http_fuzz.run, "kill9": kill9.run, "broker_kill": broker_kill.run,
    "mqtt_flood": mqtt_flood.run, "ble_burst": ble_burst.run,
}


def _terminate(_signum: int, _frame: object) -> None:
    raise SystemExit(143)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--long", action="store_true",
                      help="the acceptance's amounts (the default; about 20 minutes)")
    form.add_argument("--short", action="store_true",
                      help="every campaign, smaller: the CI form (about 2 minutes)")
    parser.add_argument("--seed", type=int, default=1, help="seed of every generator (1)")
    parser.add_argument("--only", action="append", choices=list(CAMPAIGNS),
                        help="run only this campaign (repeatable)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"JSON file (default {OUT})")
    parser.add_argument("--workdir", type=Path,
                        help="keep the world, configs and daemon logs here")
    args = parser.parse_args(argv)
    settings = SHORT if args.short else LONG
    command = "python -m chaos " + shlex.join(
        argv if argv is not None else sys.argv[1:])
    names = [n for n in CAMPAIGNS if not args.only or n in args.only]
    # Absolute: the configs it writes name their directories from it (gatewayd refuses a
    # relative state_dir).
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="gatewayd-chaos-"))).resolve()
    info = machine()
    started = time.monotonic()
    tallies: list[Tally] = []
    print(f"chaos: {settings.form} form, seed {args.seed}, {', '.join(names)} in {workdir}",
          flush=True)
    world = ChaosWorld(workdir)
    with world:
        # The simulated world's GLib main loop may have taken SIGINT; Ctrl-C and SIGTERM
        # must end a campaign through its cleanup (hubs stopped, the world torn down).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _terminate)
        for name in names:
            print(f"  {name} ...", flush=True)
            began = time.monotonic()
            tally = Tally(name)
            try:
                CAMPAIGNS[name](world, settings, args.seed, workdir / "out", tally)
            except Exception:
                print(traceback.format_exc(), file=sys.stderr, flush=True)
                tally.aborted = traceback.format_exc()
            finally:
                tally.seconds = time.monotonic() - began
                world.stop_hubs()
            tallies.append(tally)
            # after every campaign, so a run stopped later keeps what it found
            report.write(args.out, tallies, settings, args.seed, command, info,
                         time.monotonic() - started, finished=name == names[-1])
            verdict = "passed" if tally.passed() else "FAILED"
            print(f"  {name}: {tally.inputs} inputs, {verdict} in {tally.seconds:.0f} s",
                  flush=True)
    seconds = time.monotonic() - started
    print()
    print(report.render(tallies, settings, args.seed, command))
    print(f"\n{seconds:.0f} s -> {args.out}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if all(t.passed() for t in tallies) else 1


if __name__ == "__main__":
    sys.exit(main())
