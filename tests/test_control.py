from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatewayd.ctl.client import UnixHTTPConnection
from gatewayd.runtime.logsetup import Redactor
from gatewayd.state import StateStore
from tests.helpers import Gatewayd, ctl, ctl_json, ethernet_config, write_config


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Gatewayd, Path]]:
    cfg = write_config(tmp_path / "g.toml", ethernet_config(
        tmp_path, '[cloud]\ntoken = "vendor-preset-token"\n'))
    gw = Gatewayd(["--config", str(cfg)])
    sock = tmp_path / "run" / "control.sock"
    gw.wait_socket(sock)
    yield gw, sock
    assert gw.stop() == 0


def test_status_reports_state_id_uptime_and_no_secret(daemon: tuple[Gatewayd, Path],
                                                      tmp_path: Path) -> None:
    _, sock = daemon
    status = ctl_json("--socket", str(sock), "status")
    assert status["state"] == "unpaired"
    assert status["device_id"]
    assert isinstance(status["uptime"], float)
    state = StateStore(tmp_path / "state").open()
    text = json.dumps(status)
    for secret in (state.setup_code, state.device_key.hex(), "vendor-preset-token"):
        assert secret not in text
    human = ctl("--socket", str(sock), "status").stdout
    assert "state: unpaired" in human
    assert state.setup_code not in human


def test_setup_code_and_qr(daemon: tuple[Gatewayd, Path], tmp_path: Path) -> None:
    _, sock = daemon
    state = StateStore(tmp_path / "state").open()
    data = ctl_json("--socket", str(sock), "setup-code", "--qr")
    assert data["setup_code"] == state.setup_code
    assert data["payload"] == f"GWD1:{data['device_id']}:{state.setup_code}"
    assert "█" in data["qr_text"] or "▀" in data["qr_text"]
    human = ctl("--socket", str(sock), "setup-code").stdout
    assert f"{state.setup_code[:4]}-{state.setup_code[4:]}" in human


def test_ble_window_on_a_hub_without_ble_says_so(daemon: tuple[Gatewayd, Path]) -> None:
    """The BLE status object says `enabled: false` (§5.2); it was 'no such endpoint'."""
    _, sock = daemon
    assert ctl_json("--socket", str(sock), "ble-window", "status") == {"enabled": False}
    human = ctl("--socket", str(sock), "ble-window", "status")
    assert human.stdout == "BLE commissioning is disabled on this hub.\n"
    refused = ctl("--socket", str(sock), "ble-window", "open", check=False)
    assert refused.returncode == 1
    assert "BLE commissioning is disabled on this hub ([ble] enabled = false)" in refused.stderr


def test_zigbee_commands_on_a_hub_without_zigbee_say_so(daemon: tuple[Gatewayd, Path]) -> None:
    """They said 'no such endpoint: /api/v1/zigbee/permit-join'."""
    _, sock = daemon
    for command in (["permit-join"], ["zigbee", "install-code", "00:11:22:33:44:55:66:77",
                                      "83FED3407A939723A5C639B26916D505C3B5"]):
        refused = ctl("--socket", str(sock), *command, check=False)
        assert refused.returncode == 1, command
        assert "Zigbee is disabled on this hub ([zigbee] enabled = false)" in refused.stderr
    answer = ctl("--socket", str(sock), "--json", "permit-join", check=False)
    assert "Zigbee is disabled on this hub" in json.loads(answer.stdout)["error"]
    conn = UnixHTTPConnection(sock, timeout=10)
    try:
        conn.request("POST", "/api/v1/zigbee/remove", body=b'{"ieee": "00:11:22:33:44:55:66:77"}')
        reply = conn.getresponse()
        assert (reply.status, json.loads(reply.read())["error"]["code"]) == (
            409, "zigbee-disabled")
        conn.request("POST", "/api/v1/zigbee/nonsense", body=b"{}")
        assert conn.getresponse().status == 404  # not a command: no such endpoint
    finally:
        conn.close()


def test_socket_is_private_and_logs_hold_no_secret(daemon: tuple[Gatewayd, Path],
                                                  tmp_path: Path) -> None:
    gw, sock = daemon
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    ctl("--socket", str(sock), "setup-code")
    ctl("--socket", str(sock), "reset")
    state = StateStore(tmp_path / "state").open()
    assert gw.stop() == 0
    log = gw.output()
    assert "factory reset" in log
    assert state.setup_code not in log and "vendor-preset-token" not in log


def test_ctl_reports_a_daemon_that_is_not_running(tmp_path: Path) -> None:
    result = ctl("--socket", str(tmp_path / "none.sock"), "status", check=False)
    assert result.returncode == 3
    assert "not running" in result.stderr
    result = ctl("--socket", str(tmp_path / "none.sock"), "--json", "status", check=False)
    assert "not running" in json.loads(result.stdout)["error"]


def test_redactor_masks_secrets_in_messages_args_and_tracebacks(
        caplog: pytest.LogCaptureFixture) -> None:
    redactor = Redactor()
    redactor.add("hunter2-secret")
    log = logging.getLogger("test.redact")
    handler = caplog.handler
    handler.addFilter(redactor)
    try:
        log.warning("token is %s", "hunter2-secret")
        try:
            raise ValueError("bad hunter2-secret")
        except ValueError:
            log.exception("failed")
    finally:
        handler.removeFilter(redactor)
    assert "hunter2-secret" not in caplog.text
    assert "token is ***" in caplog.text


def test_control_group_opens_the_socket_to_that_group_only(tmp_path: Path) -> None:
    """``[hub] control_group``: mode 0660 and that group; still nobody else."""
    import grp

    group = grp.getgrgid(1).gr_name  # "daemon" on Debian: any group other than ours
    cfg = write_config(tmp_path / "g.toml", ethernet_config(tmp_path).replace(
        "[hub]\n", f'[hub]\ncontrol_group = "{group}"\n', 1))
    gw = Gatewayd(["--config", str(cfg)])
    sock = tmp_path / "run" / "control.sock"
    try:
        gw.wait_socket(sock)
        info = sock.stat()
        assert stat.S_IMODE(info.st_mode) == 0o660 and info.st_gid == 1
        assert ctl_json("--socket", str(sock), "status")["state"] == "unpaired"
    finally:
        assert gw.stop() == 0


def test_socket_modes_of_the_web_server(tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    from gatewayd.runtime.webserver import WebServer

    def app(environ: object, start_response: object) -> list[bytes]:
        return []

    for group, mode, gid in (("", 0o600, 0), ("daemon", 0o660, 1),
                             ("no-such-group-here", 0o660, 0)):
        sock = tmp_path / f"{group or 'private'}.sock"
        server = WebServer(app, name="t", unix_socket=sock, socket_group=group).start()
        try:
            info = sock.stat()
            assert (stat.S_IMODE(info.st_mode), info.st_gid) == (mode, gid), group
        finally:
            server.stop()
        assert not sock.exists()
    assert "cannot give control socket to group 'no-such-group-here'" in caplog.text


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root to run the server as another user")
def test_a_control_group_the_daemons_user_is_not_in_is_explained() -> None:
    """As the packaged daemon runs (its own user, no CAP_CHOWN): a group it is not in cannot
    be given the socket, and the warning says how to make it one (it said EPERM)."""
    # Not under tmp_path: the user nobody cannot reach root's pytest directory.
    run_dir = Path(tempfile.mkdtemp(prefix="gatewayd-nobody-"))
    run_dir.chmod(0o777)
    script = ("import logging, sys; logging.basicConfig(stream=sys.stdout); "
              "from pathlib import Path; from gatewayd.runtime.webserver import WebServer; "
              f"WebServer(lambda e, s: [], name='t', "
              f"unix_socket=Path({str(run_dir / 'c.sock')!r}), "
              "socket_group='daemon').start().stop()")
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
         script], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    shutil.rmtree(run_dir)
    assert result.returncode == 0, result.stderr
    assert ("cannot give control socket to group 'daemon': the user nobody is not a member "
            "(as root: adduser nobody daemon, then restart gatewayd)") in result.stdout


def test_a_socket_that_cannot_be_put_in_place_is_not_left_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gatewayd.runtime.webserver import WebServer

    def refuse(src: object, dst: object) -> None:
        raise OSError("read-only file system")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="read-only"):
        WebServer(lambda environ, start_response: [], name="t",
                  unix_socket=tmp_path / "control.sock")
    assert list(tmp_path.iterdir()) == []


def test_a_group_socket_appears_only_with_its_group(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A client (a group member's gatewayctl at start-up) never finds the socket before
    its group is set: it is bound under another name and renamed into place."""
    from gatewayd.runtime.webserver import WebServer

    sock = tmp_path / "control.sock"
    visible_at_chown = []
    chown = os.chown

    def watching_chown(path: str | Path, uid: int, gid: int) -> None:
        visible_at_chown.append(sock.exists())
        chown(path, uid, gid)

    monkeypatch.setattr(os, "chown", watching_chown)
    server = WebServer(lambda environ, start_response: [], name="t", unix_socket=sock,
                       socket_group="daemon").start()
    try:
        assert visible_at_chown == [False]
        info = sock.stat()
        assert (stat.S_IMODE(info.st_mode), info.st_gid, info.st_uid) \
            == (0o660, 1, os.geteuid())  # the group given; still the daemon's own
        assert sorted(p.name for p in tmp_path.iterdir()) == ["control.sock"]
    finally:
        server.stop()


def test_a_control_socket_request_carries_the_peers_uid(tmp_path: Path) -> None:
    """The control app bounds its users by uid (control/slots.py): waitress gives every
    Unix-socket peer the address ``localhost``; the request says who asked instead."""
    from gatewayd.runtime.webserver import WebServer

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["REMOTE_ADDR"].encode()]

    sock = tmp_path / "run" / "gatewayd" / "control.sock"  # its directory made as well
    server = WebServer(app, name="control", unix_socket=sock).start()
    try:
        conn = UnixHTTPConnection(sock, timeout=10)
        try:
            conn.request("GET", "/")
            reply = conn.getresponse()
            assert (reply.status, reply.read()) == (200, f"uid {os.getuid()}".encode())
        finally:
            conn.close()
    finally:
        server.stop()


class FailingHub:
    """A hub whose status fails the way a library fails: with text no answer may carry."""

    def status(self) -> dict[str, object]:
        raise RuntimeError("EZSP 0x42 on /dev/ttyUSB0 with token vendor-preset-token")


def test_an_unexpected_error_answers_json_500_without_its_text(
        core_loop: asyncio.AbstractEventLoop, tmp_path: Path,
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    from gatewayd.control.app import create_control_app
    from gatewayd.ctl.main import main as gatewayctl
    from gatewayd.hub import INTERNAL_MESSAGE
    from gatewayd.runtime.corecall import CoreCall
    from gatewayd.runtime.webserver import WebServer
    from tests.portal_helpers import fast_stopping

    app = create_control_app(FailingHub(), CoreCall(core_loop))  # type: ignore[arg-type]
    client = app.test_client()
    reply = client.get("/api/v1/status")
    assert reply.status_code == 500
    assert reply.get_json() == {"error": {"code": "internal", "message": INTERNAL_MESSAGE}}
    assert "0x42" not in reply.get_data(as_text=True)
    assert "EZSP 0x42" in caplog.text and "Traceback" in caplog.text  # the log has it all

    # Werkzeug's own errors answer JSON too, not its HTML page.
    reply = client.post("/api/v1/reset", data=b"{}" + b" " * 65536,
                        content_type="application/json")
    assert reply.status_code == 413
    assert reply.get_json()["error"]["code"] == "request-entity-too-large"

    sock = tmp_path / "control.sock"
    server = fast_stopping(WebServer(app, name="control", unix_socket=sock))
    try:
        assert gatewayctl(["--socket", str(sock), "status"]) == 1
    finally:
        server.stop()
    assert capsys.readouterr().err == f"gatewayctl: {INTERNAL_MESSAGE}\n"


def test_zigbee_refusals_say_what_was_wrong(core_loop: asyncio.AbstractEventLoop) -> None:
    """Before: an ieee that was a number was refused as "required"."""
    from gatewayd.control.app import create_control_app
    from gatewayd.control.zigbee import zigbee_blueprint
    from gatewayd.runtime.corecall import CoreCall

    call = CoreCall(core_loop)
    bridge: Any = object()  # refused before the bridge is asked anything
    app = create_control_app(object(), call,  # type: ignore[arg-type]
                             extra=[zigbee_blueprint(bridge, call)])
    client = app.test_client()
    for body, message in (({}, "ieee: required"),
                          ({"ieee": 5}, "ieee: must be text such as 8b:b3:00:00:00:00:00:01")):
        reply = client.post("/api/v1/zigbee/remove", json=body)
        assert reply.status_code == 400
        assert reply.get_json()["error"] == {"code": "invalid", "message": message}


def test_a_body_over_the_limit_is_refused_in_json(daemon: tuple[Gatewayd, Path]) -> None:
    """Before: waitress and Flask shared the 64 KiB limit, so waitress refused first, in
    plain text ("Request Entity Too Large ..."), which gatewayctl printed as bytes."""
    from gatewayd.control.slots import MAX_BODY
    from gatewayd.ctl import client

    assert client.MAX_BODY == MAX_BODY  # gatewayctl does not import the daemon side
    _, sock = daemon
    for size in (MAX_BODY + 1, MAX_BODY + 1024):
        conn = client.UnixHTTPConnection(sock, timeout=10)
        conn.request("POST", "/api/v1/reset", body=b"{}" + b" " * (size - 2),
                     headers={"Content-Type": "application/json"})
        reply = conn.getresponse()
        assert reply.status == 413
        error = json.loads(reply.read())["error"]
        assert error == {"code": "request-entity-too-large", "message": "the body is over 64 "
                         "KiB, the most the control socket takes"}  # not werkzeug's words
        conn.close()
    assert ctl_json("--socket", str(sock), "status")["state"] == "unpaired"  # nothing reset


def test_a_short_press_on_a_hub_without_ble_says_so(daemon: tuple[Gatewayd, Path]) -> None:
    """Before: "Short press: the BLE commissioning window is open." with BLE disabled."""
    _, sock = daemon
    data = ctl_json("--socket", str(sock), "button", "short")
    assert data["result"] == {"hotspot": False}
    out = ctl("--socket", str(sock), "button", "short").stdout
    assert out == "Short press: BLE commissioning is disabled on this hub.\n"


@pytest.mark.parametrize("refused", ["BadRequest", "UnsupportedMediaType", "NotImplemented"])
def test_generic_http_errors_are_answered_in_the_hubs_words(
        core_loop: asyncio.AbstractEventLoop, refused: str) -> None:
    """Before: the control socket passed werkzeug's description as the message ("The
    browser (or proxy) sent a request that this server could not understand."), library
    wording shown to whoever ran gatewayctl."""
    from flask import Blueprint
    from werkzeug import exceptions

    from gatewayd.control.app import create_control_app
    from gatewayd.runtime.corecall import CoreCall

    exc_type = getattr(exceptions, refused)
    bp = Blueprint("refusing", __name__)

    @bp.post("/api/v1/refusing")
    def refusing() -> Any:
        raise exc_type()

    app = create_control_app(object(), CoreCall(core_loop), extra=[bp])  # type: ignore[arg-type]
    reply = app.test_client().post("/api/v1/refusing", json={})
    status, name = exc_type.code, exc_type().name
    assert reply.status_code == status
    error = reply.get_json()["error"]
    assert error["code"] == name.lower().replace(" ", "-")
    assert error["message"] == ("the request could not be read" if status == 400 else
                                f"the control socket cannot take this request ({status} {name})")
    assert exc_type.description not in error["message"]
