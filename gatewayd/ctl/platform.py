"""``gatewayctl platform ...``: the platform API, for vendors, support staff and developers.

* ``platform request ENDPOINT [--data JSON] [--timeout S]`` asks the platform through the
  daemon's platform client (control socket) and prints the decrypted answer;
* ``platform log`` (simulator: ``--sim DIR``) shows the simulated Business Platform's
  record of every exchange, from its control interface (``sim.json`` ``platform.control``);
* ``platform operations|approve OP|reject OP|revoke DEVICE`` (simulator): the operator's
  side of provisioning (docs/provisioning.md) on the same interface.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import re
import time
import urllib.error
import urllib.request
from typing import Any

from gatewayd.ctl.client import (
    EXIT_UNREACHABLE,
    Client,
    CtlError,
    emit,
    json_argument,
    refused,
)
from gatewayd.ctl.simjson import require_sim_json
from gatewayd.runtime.jsonbody import BadBody, loads

WAIT = 10.0  # seconds the simulated platform's control interface has to answer
HTTP_MARGIN = 10.0  # the socket waits this much longer than the request may take
# The daemon's bound on a request's timeout, which its control socket enforces
# (gatewayd.cloud.reqres.MAX_TIMEOUT; gatewayctl does not import the daemon side, a test
# keeps the two equal). Checked here too: an infinite timeout would crash the socket's
# settimeout before the daemon could refuse it.
MAX_TIMEOUT = 300.0
OPERATION_RE = re.compile(r"[0-9a-f]{6,32}")
DEVICE_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}[a-z0-9]")


def add_platform_commands(sub: Any) -> None:
    p = sub.add_parser("platform", help="the platform API (REQ/RES): requests, the "
                                        "simulated platform's log")
    psub = p.add_subparsers(dest="platform_command", required=True, metavar="ACTION")
    s = psub.add_parser("request", help="send a request to the platform, print its answer")
    s.add_argument("endpoint", help="e.g. echo, time, rfid/authorize")
    s.add_argument("--data", default="null", help="the request's data, as JSON "
                                                  "(default null)")
    s.add_argument("--timeout", type=_timeout, default=10.0,
                   help=f"seconds, at most {MAX_TIMEOUT:g} (default 10)")
    s.set_defaults(func=cmd_request)
    s = psub.add_parser("log", help="simulator: every exchange the simulated platform had")
    s.set_defaults(func=cmd_log)
    s = psub.add_parser("operations", help="simulator: provisioning operations and "
                                           "registrations")
    s.set_defaults(func=cmd_operations)
    s = psub.add_parser("approve", help="simulator: approve a provisioning operation")
    s.add_argument("operation", help="its id (or at least 6 of its first digits)")
    s.add_argument("--account", help="the account e-mail the hub joins (default: the "
                                     "simulator's developer account)")
    s.set_defaults(func=cmd_approve)
    s = psub.add_parser("reject", help="simulator: reject a provisioning operation")
    s.add_argument("operation", help="its id (or at least 6 of its first digits)")
    s.add_argument("--reason", default="", help="what the hub shows")
    s.set_defaults(func=cmd_reject)
    s = psub.add_parser("revoke", help="simulator: revoke a hub's registration")
    s.add_argument("device", help="the device id")
    s.set_defaults(func=cmd_revoke)
    for parser in psub.choices.values():
        parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                            help="machine-readable output")


def _timeout(text: str) -> float:
    """``--timeout``'s type; argparse puts the option's name before the refusal."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_TIMEOUT:  # also refuses nan, whose comparisons are all false
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds above 0 and at most {MAX_TIMEOUT:g}")
    return value


def cmd_request(args: argparse.Namespace, client: Client) -> int:
    data = json_argument(args.data, "--data")
    waiting = Client(client.path, timeout=args.timeout + HTTP_MARGIN)
    answer = waiting.request("POST", "platform/request", {
        "endpoint": args.endpoint, "data": data, "timeout": args.timeout})
    emit(args, answer, lambda a: print(json.dumps(a["data"])))
    return 0


def cmd_log(args: argparse.Namespace, client: Client) -> int:
    url = _control_url(args)
    answer = _exchange(url, urllib.request.Request(f"{url}/log"))  # noqa: S310
    if not isinstance(answer, dict) or not isinstance(answer.get("exchanges"), list):
        raise CtlError(f"unexpected answer from the simulated platform at {url}: it has no "
                       "list 'exchanges'")
    emit(args, answer["exchanges"], _print_log)
    return 0


def cmd_operations(args: argparse.Namespace, client: Client) -> int:
    emit(args, _call(args, "GET", "/operations"), _print_operations)
    return 0


def cmd_approve(args: argparse.Namespace, client: Client) -> int:
    body = {"account": args.account} if args.account else {}
    op = _call(args, "POST", f"/operations/{_op(args.operation)}/approve", body)
    emit(args, op, lambda o: print(f"approved {o['id']} ({o['device_id']}, verification "
                                   f"code {o['verification_code']})"))
    return 0


def cmd_reject(args: argparse.Namespace, client: Client) -> int:
    op = _call(args, "POST", f"/operations/{_op(args.operation)}/reject",
               {"reason": args.reason})
    emit(args, op, lambda o: print(f"rejected {o['id']} ({o['device_id']})"))
    return 0


def cmd_revoke(args: argparse.Namespace, client: Client) -> int:
    if not DEVICE_RE.fullmatch(args.device):
        raise CtlError(f"{args.device!r} is not a device id")
    done = _call(args, "POST", f"/devices/{args.device}/revoke", {})
    emit(args, done, lambda d: print(f"revoked {d['revoked']} ({d['tokens']} token(s))"))
    return 0


def _op(text: str) -> str:
    if not OPERATION_RE.fullmatch(text):
        raise CtlError(f"{text!r} is not an operation id (6 to 32 hex digits)")
    return text


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    url = _control_url(args)
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{url}{path}", data=data, method=method,  # noqa: S310
                                     headers={"Content-Type": "application/json"})
    return _exchange(url, request)


def _exchange(url: str, request: urllib.request.Request) -> Any:
    """The simulated platform's JSON answer to ``request``; its refusals and a failure to
    reach it in words (exit 3 for the latter), never urllib's ("<urlopen error [Errno 111]
    Connection refused>")."""
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:  # noqa: S310
            raw = response.read()
    except urllib.error.HTTPError as exc:
        try:
            answer = loads(exc.read(), "its answer")
        except (OSError, BadBody):
            answer = None
        raise refused(answer.get("error") if isinstance(answer, dict) else None,
                      f"the simulated platform at {url} refused the request (HTTP "
                      f"{exc.code})") from None
    except (OSError, http.client.HTTPException) as exc:
        raise CtlError(f"the simulated platform at {url} did not answer: {_failure(exc)}",
                       EXIT_UNREACHABLE) from None
    try:
        return loads(raw, "its answer")
    except BadBody as exc:
        raise CtlError(f"unexpected answer from the simulated platform at {url}: {exc}") \
            from None


def _failure(exc: BaseException) -> str:
    """What went wrong reaching the platform, in words rather than the exception's repr."""
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    if isinstance(exc, TimeoutError):
        return f"no answer within {WAIT:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the simulator running?)"
    if isinstance(exc, ConnectionError | http.client.HTTPException):
        return "it closed the connection without a whole answer"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return "the connection failed"


def _print_operations(listing: dict[str, Any]) -> None:
    operations = listing.get("operations", [])
    if not operations:
        print("no provisioning operations yet")
    for o in operations:
        when = time.strftime("%H:%M:%S", time.localtime(o.get("created", 0)))
        print(f"{o['id']}  {o['state']:<9} code {o['verification_code']}  "
              f"{o['device_id']:<20} {when}  {o.get('mode')}"
              + (f"  ({o['reason']})" if o.get("reason") else ""))
    for r in listing.get("registrations", []):
        state = "revoked" if r.get("revoked") else f"{r.get('tokens')} token(s)"
        print(f"registered {r['device_id']:<20} {state}, {r.get('refreshes')} refresh(es)")


def _control_url(args: argparse.Namespace) -> str:
    if not args.sim:
        raise CtlError(f"platform {args.platform_command} works on the simulated platform "
                       "only: give --sim WORKDIR (the --workdir of gatewayd --simulate)")
    url = require_sim_json(args.sim).platform_control()
    if url is None:
        raise CtlError("this simulator runs without the built-in platform (--no-platform)")
    return url


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
