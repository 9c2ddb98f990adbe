"""``gatewayctl permit-join`` and ``gatewayctl zigbee ...``."""

from __future__ import annotations

import argparse
from typing import Any

from gatewayd.ctl.client import CtlError, emit, json_argument


def add_zigbee_commands(sub: Any) -> None:
    s = sub.add_parser("permit-join", help="let Zigbee devices join for SECONDS (0 closes)")
    s.add_argument("seconds", nargs="?", type=int, default=None,
                   help="default: [zigbee] permit_join_max")
    s.set_defaults(func=cmd_permit_join)

    z = sub.add_parser("zigbee", help="Zigbee: install codes, removal, simulator events")
    zsub = z.add_subparsers(dest="zigbee_command", required=True, metavar="ACTION")
    s = zsub.add_parser("install-code", help="let a Zigbee 3.0 device join with its "
                                             "install code (CRC checked)")
    s.add_argument("ieee", help="the device's IEEE address, e.g. 00:12:4b:00:01:02:03:04")
    s.add_argument("code", help="the install code from the device's label (hex)")
    s.set_defaults(func=cmd_install_code)
    s = zsub.add_parser("remove", help="ask a device to leave and forget it")
    s.add_argument("ieee")
    s.set_defaults(func=cmd_remove)
    s = zsub.add_parser("sim", help="simulator only: inject an event into the simulated radio "
                                    "(join KIND, leave, report, command, unplug, stream, ...) "
                                    "or a fault on the NCP's wire (reset, drop, noise, slow)")
    s.add_argument("action", help="join, leave, silence, report, command, set_link, unplug, "
                                  "replug, list, kinds, state, stream, stream_status, "
                                  "stream_stop; with the NCP emulator also reset, drop, "
                                  "noise RATE, slow MS, counters")
    s.add_argument("args", nargs="*", help="KEY=VALUE; VALUE is JSON when it parses, e.g. "
                                           "kind=plug attributes='{\"on_off\": 1}'; "
                                           "join KIND, noise RATE and slow MS take it bare")
    s.set_defaults(func=cmd_sim)
    for parser in zsub.choices.values():  # gatewayctl adds --json to the top-level ones
        parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                            help="machine-readable output")


def cmd_permit_join(args: argparse.Namespace, client: Any) -> int:
    body = {} if args.seconds is None else {"seconds": args.seconds}
    data = client.request("POST", "zigbee/permit-join", body)
    emit(args, data, lambda d: print(f"Zigbee joining open for {d['permit_join']} s"
                                     if d["permit_join"] else "Zigbee joining closed"))
    return 0


def cmd_install_code(args: argparse.Namespace, client: Any) -> int:
    data = client.request("POST", "zigbee/install-code", {"ieee": args.ieee, "code": args.code})
    emit(args, data, lambda d: print(f"{d['ieee']} may join with its install code now"))
    return 0


def cmd_remove(args: argparse.Namespace, client: Any) -> int:
    data = client.request("POST", "zigbee/remove", {"ieee": args.ieee})
    emit(args, data, lambda d: print(f"removed {d['removed']}"))
    return 0


# The key a lone VALUE stands for: `zigbee sim noise 0.01`, `slow 200`, `join plug`.
BARE_KEYS = {"noise": "rate", "slow": "ms", "join": "kind"}


def cmd_sim(args: argparse.Namespace, client: Any) -> int:
    body: dict[str, Any] = {"action": args.action}
    for n, item in enumerate(args.args):
        key, sep, value = item.partition("=")
        if not sep:
            if n == 0 and args.action in BARE_KEYS:
                key, value = BARE_KEYS[args.action], item
            else:
                raise CtlError(f"expected KEY=VALUE, got {item!r}")
        body[key] = json_argument(value, key, else_text=True)
    emit(args, client.request("POST", "zigbee/sim", body))
    return 0
