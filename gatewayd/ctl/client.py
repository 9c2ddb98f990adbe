"""What every gatewayctl command module shares: the control-socket client, errors, output.

Command modules (:mod:`gatewayd.ctl.devices`, :mod:`gatewayd.ctl.ble`, ...) import this
module; :mod:`gatewayd.ctl.main` imports them and builds the parser. Nothing here imports a
command module, so the imports flow one way.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gatewayd.runtime.jsonbody import BadBody, NotJson, loads

EXIT_ERROR = 1
EXIT_UNREACHABLE = 3
# How long `reset` and `button` wait for their answer: the daemon allows a factory reset
# 60 s (gatewayd.hub.RESET_TIMEOUT; gatewayctl does not import the daemon side) and then
# answers itself, so the socket waits longer than that, not the 30 s other commands get.
RESET_WAIT = 75.0
# The control socket's body limit (gatewayd.control.slots.MAX_BODY; a test keeps the two
# equal): a larger request is refused here, in words, before it is sent.
MAX_BODY = 64 * 1024


class CtlError(Exception):
    def __init__(self, message: str, code: int = EXIT_ERROR, *,
                 not_running: bool = False, answer: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        # No daemon at all (as opposed to one we may not talk to): offline reset is safe.
        self.not_running = not_running
        # What --json adds to the error: the refusal's "code" and "details", when it is
        # an answer's (the control socket's, the simulated platform's); docs/interfaces.md.
        self.answer = answer or {}


def refused(error: Any, fallback: str) -> CtlError:
    """The CtlError for an answer's ``{"error": {"code", "message", "details"}}``: its
    message (``fallback`` without one), and its code and details for --json."""
    error = error if isinstance(error, dict) else {}
    message = error.get("message")
    answer = {key: error[key] for key in ("code", "details")
              if isinstance(error.get(key), str if key == "code" else dict)}
    return CtlError(message if isinstance(message, str) and message else fallback,
                    answer=answer)


def json_argument(text: str, what: str, *, else_text: bool = False) -> Any:
    """A JSON argument of gatewayctl's (``--data``, a ``KEY=VALUE``'s VALUE), read as the
    daemon reads a body (gatewayd.runtime.jsonbody: at most 32 levels deep, finite numbers)
    so that no input gives a traceback or Python's own words. ``else_text``: text that is
    not JSON at all stands for itself (``kind=plug``)."""
    try:
        return loads(text, what, located=True)
    except NotJson as exc:
        if else_text:
            return text
        raise CtlError(str(exc)) from None
    except BadBody as exc:
        raise CtlError(str(exc)) from None


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

    def request(self, method: str, endpoint: str, body: dict[str, Any] | None = None, *,
                timeout: float | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        if data is not None and len(data) > MAX_BODY:
            raise CtlError(f"the request is {len(data)} bytes, more than gatewayd takes "
                           f"({MAX_BODY // 1024} KiB)")
        conn = UnixHTTPConnection(self.path, self.timeout if timeout is None else timeout)
        try:
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
        except TimeoutError:
            waited = self.timeout if timeout is None else timeout
            raise CtlError(f"gatewayd did not answer on {self.path} within {waited:g} s; it may "
                           "be busy or stuck (journalctl -u gatewayd)", EXIT_UNREACHABLE) from None
        except http.client.HTTPException:
            raise CtlError(f"gatewayd's answer on {self.path} broke off (did it stop? "
                           "journalctl -u gatewayd)", EXIT_UNREACHABLE) from None
        except OSError as exc:
            raise CtlError(f"control socket {self.path}: {exc.strerror or type(exc).__name__}",
                           EXIT_UNREACHABLE) from None
        finally:
            conn.close()
        try:
            payload = json.loads(raw or b"null")
        except (ValueError, RecursionError):
            raise _not_json(response.status, response.reason) from None
        if response.status >= 400:
            raise refused(payload.get("error") if isinstance(payload, dict) else None,
                          f"HTTP {response.status}")
        return payload


def _not_json(status: int, reason: str) -> CtlError:
    """An answer that is not JSON: the socket's web server's own (plain text), or a
    daemon of another version; its text is not shown (it may be a page of HTML)."""
    if status == 413:
        return CtlError(f"gatewayd refused the request as too large (HTTP 413; it takes at "
                        f"most {MAX_BODY // 1024} KiB)")
    answer = f"HTTP {status} {reason}".rstrip()
    if status >= 400:
        return CtlError(f"gatewayd refused the request ({answer}) without saying why in "
                        "JSON; see its log (journalctl -u gatewayd)")
    return CtlError(f"unexpected answer from gatewayd: {answer} that is not JSON "
                    "(gatewayctl and gatewayd of different versions?)")


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
