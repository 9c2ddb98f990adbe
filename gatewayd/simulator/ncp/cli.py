"""``gatewayd-ncp-sim``: run the EZSP NCP emulator until SIGINT/SIGTERM.

Prints one line when listening, ``gatewayd-ncp-sim: ncp tcp://HOST:PORT control
HOST:PORT``, so that a script can read the ports (``--port 0`` picks a free one).

Hosts connect to the NCP port as to a serial port over TCP: bellows/zigpy with
``device: {path: "tcp://127.0.0.1:PORT"}`` (``tcp://``, not ``socket://``, which makes
bellows wait for an RSTACK it never needs), gatewayd with ``[zigbee] radio = "bellows"``
and ``device = "tcp://127.0.0.1:PORT"``, Zigbee2MQTT with ``serial: {port:
tcp://127.0.0.1:PORT, adapter: ember}``. The control port takes JSON lines, e.g.::

    {"op": "join", "kind": "plug"}              (permit join must be open)
    {"op": "join", "kind": "th-sensor", "wait": true}   (joins when it next opens)
    {"op": "report", "ieee": "...", "cluster": "temperature",
     "attributes": {"measured_value": 2250}}
    {"op": "fault", "noise": 0.01}   {"op": "fault", "reset": true}
    {"op": "counters"}
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from gatewayd.simulator.ncp.air import KINDS, AirError
from gatewayd.simulator.ncp.emulator import Emulator
from gatewayd.simulator.ncp.state import StateFileError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gatewayd-ncp-sim",
        description="An EZSP (Silicon Labs NCP) coordinator emulator with simulated "
                    "devices, for bellows or zigbee-herdsman over tcp://")
    parser.add_argument("--port", type=int, default=0, help="NCP TCP port (0: a free one)")
    parser.add_argument("--state", type=Path, required=True,
                        help="JSON file with the NCP's network, keys and devices")
    parser.add_argument("--control-port", type=int, default=0,
                        help="JSON-lines control port (0: a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (loopback)")
    parser.add_argument("--device", action="append", default=[], metavar="KIND",
                        choices=sorted(KINDS),
                        help="a device that waits in pairing mode and joins as soon as "
                             "joining is permitted (repeatable)")
    parser.add_argument("--noise", type=float, default=0.0,
                        help="line noise: the share of bytes corrupted or lost, each way")
    parser.add_argument("--seed", type=int, default=None, help="seed of the noise RNG")
    parser.add_argument("--delay-ms", type=float, default=0.0,
                        help="delay every frame the NCP sends (a slow NCP)")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    if not 0 <= args.noise < 1:
        parser.error("--noise must be from 0 up to 1")
    return args


async def run(args: argparse.Namespace) -> int:
    emulator = Emulator(args.state, host=args.host, port=args.port,
                        control_port=args.control_port, noise=args.noise, seed=args.seed,
                        delay_ms=args.delay_ms, devices=args.device)
    await emulator.start()
    print(f"gatewayd-ncp-sim: ncp {emulator.url} control {args.host}:{emulator.control_port}",
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await emulator.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(run(args))
    except (StateFileError, AirError, OSError) as exc:
        print(f"gatewayd-ncp-sim: {exc}", file=sys.stderr)
        return 2
