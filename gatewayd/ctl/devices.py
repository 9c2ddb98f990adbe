"""``gatewayctl devices``, ``gatewayctl button short|long`` and ``gatewayctl identify``.

:func:`add_commands` adds the subcommands to gatewayctl's parser. It adds no ``--json``
option of its own: ``gatewayd.ctl.main.build_parser`` gives every subcommand one, so call
:func:`add_commands` before that loop runs.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Protocol

from gatewayd.ctl.client import RESET_WAIT

IDENTIFY_SECONDS = 10.0
COLUMNS = (("device_id", "DEVICE"), ("provider", "PROVIDER"), ("type", "TYPE"),
           ("state", "STATE"), ("last_seen", "HEARD"), ("lqi", "LQI"), ("name", "NAME"))


class Requester(Protocol):
    """``gatewayd.ctl.client.Client``: one JSON request over the control socket."""

    def request(self, method: str, endpoint: str, body: dict[str, Any] | None = None, *,
                timeout: float | None = None) -> Any: ...


def _emit(args: argparse.Namespace, data: Any, human: Any) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        human(data)


def _kind(device: dict[str, Any]) -> str:
    # Virtual devices say their type; Zigbee ones their model.
    return str(device.get("type") or device.get("model") or "-")


def _ago(last_seen: Any, now: float) -> str:
    """How long ago a Zigbee device was last heard: ``45s``, ``12m``, ``3h``, ``2d``."""
    if isinstance(last_seen, bool) or not isinstance(last_seen, int | float):
        return "-"
    seconds = max(0, int(now - last_seen))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _cell(device: dict[str, Any], key: str, now: float) -> str:
    if key == "type":
        return _kind(device)
    if key == "last_seen":
        return _ago(device.get(key), now)
    value = device.get(key)
    return "-" if value is None or value == "" else str(value)  # an LQI of 0 is shown


def print_devices(data: dict[str, Any]) -> None:
    devices = data.get("devices", [])
    now = time.time()
    if not devices:
        print("No child devices.")
    else:
        rows = [[_cell(d, key, now) for key, _ in COLUMNS] for d in devices]
        widths = [max(len(title), *(len(r[i]) for r in rows))
                  for i, (_, title) in enumerate(COLUMNS)]
        print("  ".join(t.ljust(w) for (_, t), w in zip(COLUMNS, widths, strict=True)).rstrip())
        for row, device in zip(rows, devices, strict=True):
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
            if device.get("error"):
                print(f"    error: {device['error']}")
    for provider, error in sorted(data.get("errors", {}).items()):
        print(f"({provider}: could not list devices: {error})")


def cmd_devices(args: argparse.Namespace, client: Requester) -> int:
    _emit(args, client.request("GET", "devices"), print_devices)
    return 0


def short_press_outcome(result: Any) -> str:
    """What a short press did, from the daemon's ``result``: ``hotspot`` (reopened, on an
    offline hub) and ``ble_window`` (opened), absent with BLE disabled (interfaces.md §5.1)."""
    result = result if isinstance(result, dict) else {}
    done = ["the hotspot is back on"] if result.get("hotspot") else []
    if "ble_window" not in result:
        done.append("BLE commissioning is disabled on this hub")
    elif result["ble_window"]:
        done.append("the BLE commissioning window is open")
    else:
        done.append("the BLE commissioning window did not open (gatewayctl ble-window status)")
    return "; ".join(done)


def cmd_button(args: argparse.Namespace, client: Requester) -> int:
    data = client.request("POST", "button", {"press": args.press}, timeout=RESET_WAIT)

    def human(d: dict[str, Any]) -> None:
        if d["press"] == "short":
            print(f"Short press: {short_press_outcome(d.get('result'))}.")
        else:
            print("Long press: factory reset done; the hub is back in pairing mode.")

    _emit(args, data, human)
    return 0


def cmd_identify(args: argparse.Namespace, client: Requester) -> int:
    data = client.request("POST", "identify", {"seconds": args.seconds})

    def human(d: dict[str, Any]) -> None:
        if d.get("led"):
            print(f"The status LED blinks its identify pattern for {d['seconds']:g} s.")
        else:
            print("This hub has no status LED configured ([led] enabled = false).")

    _emit(args, data, human)
    return 0


def add_commands(sub: Any) -> None:
    """Add ``devices``, ``button`` and ``identify`` to gatewayctl's subparsers."""
    s = sub.add_parser("devices", help="child devices (virtual, Zigbee) and their state")
    s.set_defaults(func=cmd_devices)
    s = sub.add_parser("button", help="press the hub's button: short opens the BLE "
                                      "commissioning window, long is a factory reset")
    s.add_argument("press", choices=("short", "long"))
    s.set_defaults(func=cmd_button)
    s = sub.add_parser("identify", help="blink the status LED to find this hub")
    s.add_argument("--seconds", type=float, default=IDENTIFY_SECONDS,
                   help=f"how long (default {IDENTIFY_SECONDS:g})")
    s.set_defaults(func=cmd_identify)
