"""Time gatewayd's restart both ways in one world: ``python -m bench.peers.restart_ab``.

bench/README.md, "A restart timed by the status line": the same gatewayd (the peers
configuration, 200 plugs over bellows on the EZSP emulator) is restarted ``--rounds``
times per way, alternating, and timed from its start to every plug ready, as told by

* ``socket``: the control socket (``GET /devices`` every 0.1 s; what the peers bench did
  until 4643107, which makes the daemon build its web app during the start);
* ``status``: its status line on the notify socket, as systemd reads it (what it does now);
* ``mqtt``: every plug's ``$state`` on MQTT, what the cloud sees (after the republished
  retained trees).

The RSS of the daemon ``--idle`` seconds after each start is taken too. Prints a median
(min-max) per way; nothing is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.harness import Monitor, Results, rss_mb
from bench.peers.measure import PEERS_FULL, form_and_join, plug_ieees
from bench.peers.stacks import ZIGBEE_PREFIX, Gatewayd, peers_world
from gatewayd.simulator.procs import wait_until

WAYS = ("socket", "status", "mqtt")


def _mqtt_ready(states: Monitor, count: int) -> bool:
    ready = [topic for topic, state in states.last_payloads().items()
             if state == "ready" and topic.split("/")[-2].startswith(ZIGBEE_PREFIX)]
    return len(ready) >= count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.restart_ab",
                                     description=__doc__)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--idle", type=float, default=30.0, help="s after a start to take RSS")
    parser.add_argument("--ways", default="socket,status",
                        help=f"comma-separated, of {', '.join(WAYS)}")
    args = parser.parse_args(argv)
    ways = [w for w in args.ways.split(",") if w]
    if not ways or any(w not in WAYS for w in ways):
        parser.error(f"--ways: each of {', '.join(WAYS)}")
    workdir = Path(tempfile.mkdtemp(prefix="gatewayd-restart-ab-"))
    ieees = plug_ieees(args.devices)
    wanted = set(ieees)
    figures: dict[str, dict[str, list[float]]] = {w: {"ready_s": [], "rss_mb": []} for w in ways}
    try:
        with peers_world(workdir) as (world, paired, ncp):
            stack = Gatewayd(world, ncp.url, workdir / "gwd", paired)
            states = Monitor(world, f"{world.root}/sweet-home/+/$state", keep_last=True)
            try:
                form_and_join(stack, ncp, ieees,
                              dataclasses.replace(PEERS_FULL, devices=args.devices), Results())
                for n in range(args.rounds):
                    for way in ways if n % 2 == 0 else ways[::-1]:
                        stack.stop()
                        states.forget()  # a graceful stop left every plug `disconnected`
                        stack.start()
                        if way == "socket":
                            done = lambda: wanted <= stack.ready()  # noqa: E731
                        elif way == "status":
                            done = lambda: stack.all_ready(wanted)  # noqa: E731
                        else:
                            done = lambda: _mqtt_ready(states, len(wanted))  # noqa: E731
                        wait_until(done, 120, f"every plug ready ({way})", interval=0.1)
                        figures[way]["ready_s"].append(time.monotonic() - stack.started_at)
                        delay = stack.started_at + args.idle - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)  # a measurement schedule
                        figures[way]["rss_mb"].append(rss_mb(stack.pids()))
                        print(f"  {way}: {figures[way]['ready_s'][-1]:.3f} s, "
                              f"{figures[way]['rss_mb'][-1]:.1f} MB", flush=True)
            finally:
                stack.stop()
                stack.close()
                states.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for way, values in figures.items():
        text = ", ".join(f"{name} {statistics.median(v):.3f} ({min(v):.3f}-{max(v):.3f})"
                         for name, v in values.items())
        print(f"{way}: {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
