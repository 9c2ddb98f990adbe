"""``gatewayctl``: the control client for a running gatewayd (local socket, HTTP + JSON)."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gatewayd.config import ConfigError, load_config

EXIT_ERROR = 1
EXIT_UNREACHABLE = 3


class CtlError(Exception):
    def __init__(self, message: str, code: int = EXIT_ERROR, *,
                 not_running: bool = False) -> None:
        super().__init__(message)
        self.code = code
        # No daemon at all (as opposed to one we may not talk to): offline reset is safe.
        self.not_running = not_running


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self.path))
        self.sock = sock


class Client:
    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout

    def request(self, method: str, endpoint: str, body: dict[str, Any] | None = None) -> Any:
        conn = UnixHTTPConnection(self.path, self.timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, f"/api/v1/{endpoint}", body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise CtlError(f"gatewayd is not running (no control socket at {self.path}: "
                           f"{exc.strerror})", EXIT_UNREACHABLE, not_running=True) from None
        except PermissionError:
            raise CtlError(f"permission denied on {self.path}: run as root or as a member of "
                           "the control group ([hub] control_group)", EXIT_UNREACHABLE) from None
        except (TimeoutError, OSError) as exc:
            raise CtlError(f"control socket {self.path}: {exc}", EXIT_UNREACHABLE) from None
        finally:
            conn.close()
        try:
            payload = json.loads(raw or b"null")
        except json.JSONDecodeError:
            raise CtlError(f"unexpected answer from gatewayd: {raw[:200]!r}") from None
        if response.status >= 400:
            err = payload.get("error", {}) if isinstance(payload, dict) else {}
            raise CtlError(err.get("message") or f"HTTP {response.status}")
        return payload


# ---- output -------------------------------------------------------------------------------

def _print_tree(data: Any, indent: int = 0) -> None:
    pad = "  " * indent
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, (dict, list)) and value:
                print(f"{pad}{key}:")
                _print_tree(value, indent + 1)
            else:
                print(f"{pad}{key}: {_fmt(value)}")
    elif isinstance(data, list):
        for item in data:
            if isinstance(item, dict):
                print(f"{pad}-")
                _print_tree(item, indent + 1)
            else:
                print(f"{pad}- {_fmt(item)}")
    else:
        print(f"{pad}{_fmt(data)}")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, dict)):
        return "none"
    return str(value)


def emit(args: argparse.Namespace, data: Any, human: Callable[[Any], None] | None = None) -> None:
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    elif human is not None:
        human(data)
    else:
        _print_tree(data)


# ---- commands -----------------------------------------------------------------------------

def cmd_status(args: argparse.Namespace, client: Client) -> int:
    emit(args, client.request("GET", "status"))
    return 0


def _offline_reset(args: argparse.Namespace) -> dict[str, Any]:
    """Reset the state directory directly: the daemon refuses to start on a corrupt state."""
    from gatewayd.state import StateStore

    state_dir = args.state_dir or _config(args).state_dir
    store = StateStore(Path(state_dir), _config(args).hub.setup_code)
    state = store.reset()
    return {"reset": True, "offline": True, "state_dir": str(state_dir), **state.redacted()}


def cmd_reset(args: argparse.Namespace, client: Client) -> int:
    try:
        result = client.request("POST", "reset", {"full": args.full})
    except CtlError as exc:
        if not exc.not_running:
            raise
        result = _offline_reset(args)
        if not args.json:
            print(f"gatewayd is not running; reset the state in {result['state_dir']} directly.")
            print("Start gatewayd again (systemctl start gatewayd) to pair the hub.")
            return 0
    emit(args, result, lambda r: print(f"Hub reset; state: {r.get('state')}. "
                                       "It is back in pairing mode."))
    return 0


def cmd_setup_code(args: argparse.Namespace, client: Client) -> int:
    data = client.request("GET", "setup-code")

    def human(d: dict[str, str]) -> None:
        print(f"Setup code: {d['setup_code'][:4]}-{d['setup_code'][4:]}")
        print(f"Device id:  {d['device_id']}")
        if args.qr:
            import segno

            segno.make(d["payload"], error="m").terminal(compact=True)
            print(f"QR payload: {d['payload']}")

    if args.json and args.qr:
        import io

        import segno

        buf = io.StringIO()
        segno.make(data["payload"], error="m").terminal(out=buf, compact=True)
        data = {**data, "qr_text": buf.getvalue()}
    emit(args, data, human)
    return 0


def _config(args: argparse.Namespace) -> Any:
    if getattr(args, "_config", None) is None:
        args._config = load_config(args.config)
    return args._config


def resolve_socket(args: argparse.Namespace) -> Path:
    if args.socket:
        return Path(args.socket)
    if args.sim:
        sim = json.loads((Path(args.sim) / "sim.json").read_text())
        return Path(sim["control_socket"])
    env = os.environ.get("GATEWAYD_SOCKET")
    if env:
        return Path(env)
    return Path(_config(args).control_socket)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gatewayctl", description="Control a running gatewayd.")
    p.add_argument("--socket", help="control socket (default from the config: "
                                    "/run/gatewayd/control.sock; or $GATEWAYD_SOCKET)")
    p.add_argument("--sim", metavar="WORKDIR",
                   help="talk to `gatewayd --simulate --workdir WORKDIR` (reads its sim.json)")
    p.add_argument("--config", type=Path, default=None, help="gatewayd config file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("status", help="what the hub is doing (never shows secrets)")
    s.set_defaults(func=cmd_status)
    s = sub.add_parser("reset", help="factory reset: forget credentials, back to pairing mode")
    s.add_argument("--full", action="store_true",
                   help="also forget what survives a normal reset (the Zigbee network)")
    s.add_argument("--state-dir", help="state directory to reset when gatewayd is not running")
    s.set_defaults(func=cmd_reset)
    s = sub.add_parser("setup-code", help="the hub's setup code (for BLE pairing, the label)")
    s.add_argument("--qr", action="store_true", help="also draw it as a QR code")
    s.set_defaults(func=cmd_setup_code)
    from gatewayd.ctl_devices import add_commands as add_device_commands

    add_device_commands(sub)
    from gatewayd.ctl_ble import add_ble_commands

    add_ble_commands(sub)
    from gatewayd.ctl_zigbee import add_zigbee_commands

    add_zigbee_commands(sub)
    for parent in (p, *sub.choices.values()):
        # `--json` works before or after the command.
        if parent is not p:
            parent.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                                help="machine-readable output")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        client = Client(resolve_socket(args))
        return int(args.func(args, client))
    except ConfigError as exc:
        print(f"gatewayctl: configuration error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except CtlError as exc:
        if args.json:
            print(json.dumps({"error": str(exc)}))
        print(f"gatewayctl: {exc}", file=sys.stderr)
        return exc.code
    except (OSError, ValueError, KeyError) as exc:
        print(f"gatewayctl: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
