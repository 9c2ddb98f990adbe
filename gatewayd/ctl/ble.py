"""``gatewayctl ble-window`` and ``gatewayctl ble-pair``.

Mount in :func:`gatewayd.ctl.main.build_parser` with ``add_ble_commands(sub)`` before the loop
that adds ``--json`` to every subcommand. ``ble-window`` talks to the daemon over the
control socket (``/api/v1/ble/window``); ``ble-pair`` is a phone: it runs the bleak client
in this process and needs the control socket only to look up the setup code when
``--setup-code`` is not given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from gatewayd.ctl.client import Client, CtlError, emit
from gatewayd.ctl.simjson import require_sim_json

if TYPE_CHECKING:
    from gatewayd.ble.phone import BlePairError

# Flags of ``ble-pair`` -> the /pair field names the pairing service validates.
PAIR_OPTIONS = {"ssid": "ssid", "psk": "psk", "wsp": "wsp", "token": "token", "host": "host",
                "brport": "brport", "root_topic": "rootTopic", "mqtts_port": "mqtts_port"}
SECRET_ENV = {"psk": "GATEWAYD_BLE_PSK", "token": "GATEWAYD_BLE_TOKEN"}
DEFAULT_SYSTEM_BUS = "unix:path=/var/run/dbus/system_bus_socket"
# D-Bus errors for "nobody owns org.bluez": bluetoothd is not running.
NO_OWNER = ("org.freedesktop.DBus.Error.ServiceUnknown",
            "org.freedesktop.DBus.Error.NameHasNoOwner")
# bleak's BleakBluetoothNotAvailableReason names, in our words.
NOT_AVAILABLE = {
    "NO_BLUETOOTH": "BlueZ knows no Bluetooth adapter",
    "NO_BLE_CENTRAL_ROLE": "no Bluetooth adapter can scan for Bluetooth LE devices",
    "POWERED_OFF": "the Bluetooth adapter is powered off (bluetoothctl power on)",
    "DENIED_BY_SYSTEM": "the system bus refused this user access to BlueZ",
}


def add_ble_commands(sub: Any) -> None:
    """Add the two subcommands to gatewayctl's subparsers."""
    s = sub.add_parser("ble-window", help="open or close the BLE commissioning window")
    s.add_argument("action", choices=("open", "close", "status"))
    s.add_argument("--authorize", action="store_true",
                   help="also authorize Improv, as a short press of the hub's button does")
    s.add_argument("--seconds", type=float, help="close the window this long from now "
                                                  "(default: keep it open at least [ble] "
                                                  "window_seconds from now)")
    window = s
    s.set_defaults(func=cmd_ble_window, check=lambda args: _check_window(window, args))

    s = sub.add_parser("ble-pair", help="pair a hub over BLE, as a phone app would (bleak)")
    s.add_argument("--device-id", help="the hub's device id (as on its label)")
    s.add_argument("--name", help="the hub's BLE name, e.g. 'gatewayd hub 3456'")
    s.add_argument("--setup-code", help="the 8-digit setup code on the label (default: ask "
                                        "the local gatewayd)")
    s.add_argument("--improv", action="store_true",
                   help="use Improv Wi-Fi: Wi-Fi only (the cloud account comes from vendor "
                        "presets, or is paired later on the LAN)")
    s.add_argument("--adapter", help="the phone's Bluetooth adapter (default hci0; hci1 with "
                                     "--sim)")
    s.add_argument("--ssid")
    s.add_argument("--psk", help=f"Wi-Fi passphrase (or ${SECRET_ENV['psk']})")
    s.add_argument("--hidden", action="store_true", help="the network does not broadcast")
    s.add_argument("--wsp", help="account e-mail")
    s.add_argument("--token", help=f"account token (or ${SECRET_ENV['token']})")
    s.add_argument("--host", help="MQTT broker host")
    s.add_argument("--brport", help="MQTT broker port")
    s.add_argument("--root-topic")
    s.add_argument("--mqtts-port")
    s.add_argument("--scan-timeout", type=float, default=10.0)
    s.add_argument("--timeout", type=float, default=120.0,
                   help="seconds to wait for the hub to come online (and for the button)")
    s.set_defaults(func=cmd_ble_pair)


def _check_window(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``--authorize`` and ``--seconds`` are the window's opening terms: with ``close`` or
    ``status`` they would be ignored, so they are refused as a usage error (exit 2)."""
    if args.action == "open":
        return
    given = [flag for flag, used in (("--authorize", args.authorize),
                                     ("--seconds", args.seconds is not None)) if used]
    if given:
        verb = "applies" if len(given) == 1 else "apply"
        parser.error(f"{' and '.join(given)} {verb} to 'ble-window open' only, "
                     f"not to {args.action!r}")


def cmd_ble_window(args: argparse.Namespace, client: Client) -> int:

    if args.action == "status":
        data = client.request("GET", "ble/window")
    else:
        body: dict[str, Any] = {"action": args.action}
        if args.action == "open":
            body["authorize"] = bool(args.authorize)
            if args.seconds is not None:
                body["seconds"] = args.seconds
        data = client.request("POST", "ble/window", body)

    def human(d: dict[str, Any]) -> None:
        window = d.get("window") or {}
        if not d.get("enabled", True):
            print("BLE commissioning is disabled on this hub.")
        elif window.get("open"):
            print(f"BLE commissioning window open as {d.get('name')!r}; closes in "
                  f"{window.get('closes_in')} s.")
            improv_state = (d.get("improv") or {}).get("state")
            if improv_state:
                print(f"Improv: {improv_state}")
        else:
            print("BLE commissioning window closed.")
        if (d.get("secure") or {}).get("locked"):
            print("The secure service is locked after wrong setup codes; open the window "
                  "again (or press the button) to allow more.")

    emit(args, data, human)
    return 0


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for option, name in PAIR_OPTIONS.items():
        value = getattr(args, option, None)
        if value is None and option in SECRET_ENV:
            value = os.environ.get(SECRET_ENV[option])
        if value is not None:
            fields[name] = value
    if args.hidden:
        fields["hidden"] = True
    return fields


def _sim_bus(args: argparse.Namespace) -> None:
    """With --sim, the phone talks to the simulator's BlueZ (its private system bus)."""
    if getattr(args, "sim", None) and "DBUS_SYSTEM_BUS_ADDRESS" not in os.environ:
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = require_sim_json(args.sim).system_bus()


def cmd_ble_pair(args: argparse.Namespace, client: Client) -> int:
    from gatewayd.ble import phone as ble_client

    logging.getLogger("bleak").setLevel(logging.ERROR)  # MTU fallbacks are not news here
    _sim_bus(args)
    adapter = args.adapter or ("hci1" if getattr(args, "sim", None) else "hci0")
    fields = _fields(args)
    events: list[dict[str, Any]] = []

    def on_event(kind: str, data: dict[str, Any]) -> None:
        events.append({"event": kind, **data})
        if not args.json:
            _print_event(kind, data)

    try:
        if args.improv:
            if "ssid" not in fields:
                raise CtlError("--improv needs --ssid (and --psk unless the network is open)")
            outcome = asyncio.run(ble_client.pair_improv(
                adapter=adapter, ssid=fields["ssid"], psk=fields.get("psk", ""),
                device_id=args.device_id, name=args.name, scan_timeout=args.scan_timeout,
                authorization_timeout=args.timeout, timeout=args.timeout, events=on_event))
        else:
            code = args.setup_code or client.request("GET", "setup-code")["setup_code"]
            outcome = asyncio.run(ble_client.pair_secure(
                adapter=adapter, setup_code=code, fields=fields, device_id=args.device_id,
                name=args.name, scan_timeout=args.scan_timeout, timeout=args.timeout,
                events=on_event))
    except Exception as exc:
        failure = exc if isinstance(exc, ble_client.BlePairError) else _bluetooth_failure(
            exc, adapter, found=bool(events))
        if failure is None:
            raise
        if args.json:
            print(json.dumps({"ok": False, "error": {"code": failure.code,
                                                     "message": failure.message,
                                                     **_plain(failure.details)},
                              "events": events}, indent=2, sort_keys=True))
        else:
            print(f"gatewayctl: BLE pairing failed: {failure.message}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({**outcome, "events": events}, indent=2, sort_keys=True))
    elif args.improv:
        url = outcome.get("redirect_url")
        print("Provisioned: the hub is on the network." + (f" Continue at {url}" if url
                                                           else ""))
    else:
        print(f"Paired: hub {outcome['device'].get('device_id')} is online.")
    return 0


def _bluetooth_failure(exc: Exception, adapter: str, *, found: bool) -> BlePairError | None:
    """bleak's and the bus's errors in our words; None for one that is not about Bluetooth.

    Before a hub was found the error came from reaching BlueZ (the bus, bluetoothd, the
    adapter): ``bluetooth-unavailable``. After, it is the link to that hub: ``failed``.
    """
    from bleak.exc import BleakBluetoothNotAvailableError, BleakDBusError, BleakError
    from dbus_fast.errors import AuthError, DBusFastError, InvalidAddressError

    from gatewayd.ble.phone import BlePairError

    bus = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", DEFAULT_SYSTEM_BUS)
    reason = None
    if isinstance(exc, BleakBluetoothNotAvailableError):
        reason = NOT_AVAILABLE.get(exc.reason.name, f"BlueZ cannot use adapter {adapter}")
    elif isinstance(exc, BleakDBusError) and exc.dbus_error in NO_OWNER:
        reason = f"BlueZ (org.bluez) is not running on the system bus {bus}"
    elif isinstance(exc, InvalidAddressError):
        reason = f"the system bus address {bus!r} is not valid"
    elif isinstance(exc, AuthError):
        reason = f"the system bus {bus} refused this user"
    elif isinstance(exc, BleakError) and str(exc).startswith("adapter "):
        reason = f"there is no Bluetooth adapter {adapter}"
    elif isinstance(exc, OSError) and not found and not isinstance(exc, TimeoutError):
        reason = f"no D-Bus system bus answers at {bus}"
    if reason is not None:
        return BlePairError(f"Bluetooth is not available on this machine: {reason}",
                            "bluetooth-unavailable")
    if isinstance(exc, TimeoutError):
        return BlePairError("the hub did not answer over Bluetooth in time", "timeout")
    if isinstance(exc, BleakError | DBusFastError | OSError):
        name = f" ({exc.dbus_error})" if isinstance(exc, BleakDBusError) else ""
        return BlePairError(f"the Bluetooth link to the hub failed{name}", "failed")
    return None


def _plain(details: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in details.items() if isinstance(v, str | int | float | bool | dict)
            or v is None}


def _print_event(kind: str, data: dict[str, Any]) -> None:
    if kind == "found":
        print(f"Found {data.get('name') or '?'} ({data.get('address')})")
    elif kind == "session":
        print(f"Secure session up. Verification code: {data.get('verification_code')} "
              f"(device {data.get('device_id')})")
    elif kind == "accepted":
        print("Pairing request accepted.")
    elif kind == "progress":
        step = f" ({data['step']})" if data.get("step") else ""
        failure = data.get("last_failure") or {}
        reason = f": {failure.get('reason')}" if failure else ""
        print(f"  {data.get('state')}{step}{reason}")
    elif kind == "authorize":
        print("Authorization required: press the button on the hub.")
    elif kind == "improv-state":
        print(f"  improv: {data.get('state')}")
