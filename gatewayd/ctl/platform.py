"""``gatewayctl platform ...``: the platform API, for vendors, support staff and developers.

* ``platform request ENDPOINT [--data JSON] [--timeout S]`` asks the platform through the
  daemon's platform client (control socket) and prints the decrypted answer;
* ``platform log`` (simulator: ``--sim DIR``) shows the simulated Business Platform's
  record of every exchange, from its control interface (``sim.json`` ``platform.control``).
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from gatewayd.ctl.client import EXIT_UNREACHABLE, Client, CtlError, emit

HTTP_MARGIN = 10.0  # the socket waits this much longer than the request may take


def add_platform_commands(sub: Any) -> None:
    p = sub.add_parser("platform", help="the platform API (REQ/RES): requests, the "
                                        "simulated platform's log")
    psub = p.add_subparsers(dest="platform_command", required=True, metavar="ACTION")
    s = psub.add_parser("request", help="send a request to the platform, print its answer")
    s.add_argument("endpoint", help="e.g. echo, time, rfid/authorize")
    s.add_argument("--data", default="null", help="the request's data, as JSON "
                                                  "(default null)")
    s.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    s.set_defaults(func=cmd_request)
    s = psub.add_parser("log", help="simulator: every exchange the simulated platform had")
    s.set_defaults(func=cmd_log)
    for parser in psub.choices.values():
        parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                            help="machine-readable output")


def cmd_request(args: argparse.Namespace, client: Client) -> int:
    try:
        data = json.loads(args.data)
    except json.JSONDecodeError as exc:
        raise CtlError(f"--data: not JSON ({exc.msg} at character {exc.pos})") from None
    waiting = Client(client.path, timeout=args.timeout + HTTP_MARGIN)
    answer = waiting.request("POST", "platform/request", {
        "endpoint": args.endpoint, "data": data, "timeout": args.timeout})
    emit(args, answer, lambda a: print(json.dumps(a["data"])))
    return 0


def cmd_log(args: argparse.Namespace, client: Client) -> int:
    url = _control_url(args)
    try:
        with urllib.request.urlopen(f"{url}/log", timeout=10) as response:  # noqa: S310
            exchanges = json.loads(response.read())["exchanges"]
    except (OSError, ValueError, KeyError) as exc:
        raise CtlError(f"the simulated platform at {url} did not answer: {exc}",
                       EXIT_UNREACHABLE) from None
    emit(args, exchanges, _print_log)
    return 0


def _control_url(args: argparse.Namespace) -> str:
    if not args.sim:
        raise CtlError("the platform log is the simulator's: give --sim WORKDIR")
    sim = json.loads((Path(args.sim) / "sim.json").read_text())
    platform = sim.get("platform")
    if not isinstance(platform, dict) or not platform.get("control"):
        raise CtlError("this simulator runs without the built-in platform (--no-platform)")
    return str(platform["control"])


def _print_log(exchanges: list[dict[str, Any]]) -> None:
    if not exchanges:
        print("no exchanges yet")
        return
    for e in exchanges:
        when = time.strftime("%H:%M:%S", time.localtime(e.get("at", 0)))
        outcome = e.get("error") or f"status {e.get('status')} code {e.get('code')}"
        print(f"{when}  {e.get('device_id', '?'):<20} {e.get('endpoint', '?'):<20} {outcome}")
        if "request" in e:
            print(f"    request:  {json.dumps(e['request'])}")
        if "response" in e:
            print(f"    response: {json.dumps(e['response'])}")
