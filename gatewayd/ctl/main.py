"""``gatewayctl``: the control client for a running gatewayd (local socket, HTTP + JSON)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from gatewayd.config import Config, ConfigError, load_config
from gatewayd.ctl.ble import add_ble_commands
from gatewayd.ctl.client import EXIT_ERROR, RESET_WAIT, Client, CtlError, emit
from gatewayd.ctl.devices import add_commands as add_device_commands
from gatewayd.ctl.platform import add_platform_commands
from gatewayd.ctl.simjson import read_sim_json
from gatewayd.ctl.zigbee import add_zigbee_commands
from gatewayd.runtime.atomicfile import directory_owner
from gatewayd.state import LOCK_FILE, StateBusy, StateStore
from gatewayd.zigbee.new_network import forget as forget_zigbee_network

EXIT_INTERRUPTED = 130  # as a shell reports a command Ctrl-C stopped (128 + SIGINT)


def cmd_status(args: argparse.Namespace, client: Client) -> int:
    emit(args, client.request("GET", "status"))
    return 0


def _offline_reset(args: argparse.Namespace) -> dict[str, Any]:
    """Reset the state directory directly: the daemon refuses to start on a corrupt state.

    The directory is the one the options name: ``--state-dir``, else the simulator's
    (``--sim DIR``: its sim.json, or DIR/state), else the config's. ``--full`` also forgets
    the Zigbee network, as the daemon's full reset does: the network lives on the radio, so
    the daemon is asked to have the radio leave it and form a new one at its next start.
    """
    state_dir = Path(args.state_dir or _sim_state_dir(args) or _config(args).state_dir)
    if not state_dir.is_dir():
        # A mistyped --state-dir would otherwise get a brand-new state, and a "success".
        raise CtlError(f"gatewayd is not running and there is no state directory {state_dir} "
                       "to reset (see --state-dir)")
    try:
        store = StateStore(state_dir, _config(args).hub.setup_code, directory_owner(state_dir))
        try:
            store.claim(timeout=0)
        except StateBusy:
            raise CtlError(f"gatewayd is running on {state_dir} (it holds {state_dir}/"
                           f"{LOCK_FILE}), but its control socket did not answer: check "
                           "--socket (or GATEWAYD_SOCKET), or wait until it has started, "
                           "and reset through it") from None
        # Kept for the daemon to release at the next pairing, under the id it publishes as.
        state = store.reset(keep_account=True, hub_id=_config(args).hub.device_id)
        # As a daemon with Zigbee disabled does (gatewayd/zigbee/new_network.py).
        forgotten = (forget_zigbee_network(state_dir, directory_owner(state_dir))
                     if args.full else [])
    except OSError as exc:
        hint = ("; run it as root or as the directory's owner"
                if isinstance(exc, PermissionError) else "")
        raise CtlError(f"cannot reset the state in {state_dir}: "
                       f"{exc.strerror or type(exc).__name__}{hint}") from None
    return {"reset": True, "offline": True, "state_dir": str(state_dir), "full": args.full,
            "forgotten": forgotten, "new_network": args.full, **state.redacted()}


def _sim_state_dir(args: argparse.Namespace) -> str | None:
    if not args.sim:
        return None
    sim = read_sim_json(args.sim)
    return str(sim.state_dir() if sim is not None else Path(args.sim) / "state")


def cmd_reset(args: argparse.Namespace, client: Client) -> int:
    try:
        result = client.request("POST", "reset", {"full": args.full}, timeout=RESET_WAIT)
    except CtlError as exc:
        if not exc.not_running:
            raise
        result = _offline_reset(args)
        if not args.json:
            print(f"gatewayd is not running; reset the state in {result['state_dir']} directly.")
            if result.get("release_pending"):
                print("The old cloud account is released when the hub is next paired.")
            if result["new_network"]:
                print("At its next start the Zigbee radio leaves its network and forms a new "
                      "one; pair the Zigbee devices again then.")
            mode = _config(args).provisioning.mode
            how = (f"gatewayd --simulate --workdir {shlex.quote(args.sim)}" if args.sim
                   else "systemctl start gatewayd")
            print(f"Start gatewayd again ({how}) to "
                  + ("pair the hub." if mode == "pairing" else
                     f"have it provisioned again ([provisioning] mode {mode})."))
            return 0
    emit(args, result, lambda r: print(f"Hub reset; state: {r.get('state')}. "
                                       + _after_reset(r) + _zigbee_after_reset(r, args.full)))
    return 0


def _zigbee_after_reset(status: dict[str, Any], full: bool) -> str:
    """A plain reset keeps the Zigbee network (it lives on the radio): say so, since a
    user resetting a hub may take it to have forgotten everything."""
    zigbee = status.get("zigbee")
    devices = zigbee.get("devices") if isinstance(zigbee, dict) else None
    if full or not isinstance(devices, int) or devices < 1:
        return ""
    return (f" Its {devices} Zigbee device{'s stay' if devices > 1 else ' stays'} paired "
            "(gatewayctl reset --full forgets the Zigbee network).")


def _after_reset(status: dict[str, Any]) -> str:
    provisioning = status.get("provisioning")
    mode = provisioning.get("mode") if isinstance(provisioning, dict) else None
    if mode in (None, "pairing"):
        return "It is back in pairing mode."
    # Nobody pairs it: it asks its platform for an account again (docs/provisioning.md).
    return f"It asks the platform to provision it again ([provisioning] mode {mode})."


def cmd_setup_code(args: argparse.Namespace, client: Client) -> int:
    data = client.request("GET", "setup-code")

    def human(d: dict[str, str]) -> None:
        print(f"Setup code: {d['setup_code'][:4]}-{d['setup_code'][4:]}")
        print(f"Device id:  {d['device_id']}")
        if d.get("serial"):
            print(f"Serial:     {d['serial']}")
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
        sim = read_sim_json(args.sim)
        if sim is None:  # the simulator never got ready: its default place
            return Path(args.sim) / "run" / "control.sock"
        return sim.control_socket()
    env = os.environ.get("GATEWAYD_SOCKET")
    if env:
        return Path(env)
    try:
        return Path(_config(args).control_socket)
    except ConfigError as exc:
        # The packaged config is root:gatewayd 0640, so a member of [hub] control_group may
        # not read it; the socket is then where it is by default. A --config given is meant.
        if args.config is not None or os.access(exc.file, os.R_OK):
            raise
        return Config().control_socket


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
    s = sub.add_parser("reset", help="factory reset: forget credentials, back to pairing "
                                          "mode (or provisioning)")
    s.add_argument("--full", action="store_true",
                   help="also forget what survives a normal reset (the Zigbee network)")
    s.add_argument("--state-dir", help="state directory to reset when gatewayd is not running")
    s.set_defaults(func=cmd_reset)
    s = sub.add_parser("setup-code", help="the hub's setup code (for BLE pairing, the label)")
    s.add_argument("--qr", action="store_true", help="also draw it as a QR code")
    s.set_defaults(func=cmd_setup_code)
    add_device_commands(sub)
    add_ble_commands(sub)
    add_zigbee_commands(sub)
    add_platform_commands(sub)
    for parent in (p, *sub.choices.values()):
        # `--json` works before or after the command.
        if parent is not p:
            parent.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                                help="machine-readable output")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, where a closed pipe can still be handled
        return code
    except KeyboardInterrupt:  # before the command started (the imports, the parser)
        print("gatewayctl: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`gatewayctl devices | head`): nothing is wrong. Point stdout
        # at /dev/null so the interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    check = getattr(args, "check", None)
    if check is not None:
        check(args)  # a usage error argparse cannot see exits 2, as its own do
    try:
        client = Client(resolve_socket(args))
        return int(args.func(args, client))
    except KeyboardInterrupt:
        # Ctrl-C stops the waiting here, not what the hub was already asked to do.
        sent = ("; a reset already sent goes on in the hub; see gatewayctl status"
                if args.func is cmd_reset else "")
        return _fail(args, f"interrupted{sent}", EXIT_INTERRUPTED)
    except ConfigError as exc:
        return _fail(args, f"configuration error: {exc}", EXIT_ERROR)
    except CtlError as exc:
        return _fail(args, str(exc), exc.code, exc.answer)
    except BrokenPipeError:
        raise
    except OSError as exc:
        return _fail(args, _os_error(exc), EXIT_ERROR)
    except KeyError as exc:  # a field the command reads is not in the daemon's answer
        return _fail(args, f"unexpected answer from gatewayd: it has no {exc.args[0]!r} (are "
                           "gatewayctl and the daemon of one version? gatewayctl status shows "
                           "the daemon's)", EXIT_ERROR)
    except ValueError as exc:
        return _fail(args, str(exc), EXIT_ERROR)


def _fail(args: argparse.Namespace, message: str, code: int,
          answer: dict[str, Any] | None = None) -> int:
    if args.json:  # the contract: with --json an error is also JSON on stdout
        print(json.dumps({"error": message, **(answer or {})}))
    print(f"gatewayctl: {message}", file=sys.stderr)
    return code


def _os_error(exc: OSError) -> str:
    """The file and the system's reason, not Python's ``[Errno 13] ...: '/path'``."""
    reason = exc.strerror or type(exc).__name__
    return f"{exc.filename}: {reason}" if exc.filename else reason


if __name__ == "__main__":
    sys.exit(main())
