"""What gatewayctl says when something outside it fails: a sentence naming what (the bus,
BlueZ, a file), the exit code the contract gives, the JSON shape the contract gives, and
never a traceback or a library's own text."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gatewayd.ctl.client import EXIT_UNREACHABLE, Client, CtlError
from gatewayd.simulator.dbus_daemon import PrivateBus
from tests.helpers import AS_NOBODY, BIN, REPO, ROOT_ONLY, reachable_tmp

UNAVAILABLE = "Bluetooth is not available on this machine: "


def run_ctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "gatewayctl"), *args], capture_output=True, text=True,
                          timeout=60, env=env, check=False)


@pytest.fixture
def bus_without_bluez(tmp_path: Path) -> Iterator[PrivateBus]:
    bus = PrivateBus(tmp_path / "bus").start()
    yield bus
    bus.stop()


def ble_pair(env: dict[str, str], *, as_json: bool) -> subprocess.CompletedProcess[str]:
    return run_ctl(*(["--json"] if as_json else []), "ble-pair", "--setup-code", "12345678",
                   "--scan-timeout", "1", env=env)


@pytest.mark.parametrize("as_json", [True, False])
def test_ble_pair_without_bluez_on_the_bus_says_bluetooth_is_unavailable(
        bus_without_bluez: PrivateBus, as_json: bool) -> None:
    result = ble_pair(bus_without_bluez.env(dict(os.environ)), as_json=as_json)
    message = (f"{UNAVAILABLE}BlueZ (org.bluez) is not running on the system bus "
               f"{bus_without_bluez.address}")
    assert result.returncode == 1
    if as_json:
        assert json.loads(result.stdout) == {
            "ok": False, "error": {"code": "bluetooth-unavailable", "message": message},
            "events": []}
        assert result.stderr == ""
    else:
        assert (result.stdout, result.stderr) == (
            "", f"gatewayctl: BLE pairing failed: {message}\n")


@pytest.mark.parametrize(("address", "reason"), [
    ("unix:path={tmp}/no-bus-here", "no D-Bus system bus answers at unix:path={tmp}/no-bus-here"),
    ("not-an-address", "the system bus address 'not-an-address' is not valid"),
], ids=["no-bus", "bad-address"])
def test_ble_pair_without_a_system_bus_says_bluetooth_is_unavailable(
        tmp_path: Path, address: str, reason: str) -> None:
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": address.format(tmp=tmp_path)}
    result = ble_pair(env, as_json=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert json.loads(result.stdout)["error"] == {
        "code": "bluetooth-unavailable", "message": UNAVAILABLE + reason.format(tmp=tmp_path)}


def test_a_configuration_error_is_json_too_with_json(tmp_path: Path) -> None:
    config = tmp_path / "gatewayd.toml"
    config.write_text("[hub]\nstate_dir = 5\n")
    result = run_ctl("--json", "--config", str(config), "status")
    message = f"configuration error: {config}: hub.state_dir: must be a string, got int 5"
    assert (result.returncode, result.stderr) == (1, f"gatewayctl: {message}\n")
    assert json.loads(result.stdout) == {"error": message}


@pytest.mark.skipif(os.geteuid() != 0, reason=ROOT_ONLY)
@pytest.mark.parametrize("as_json", [True, False])
def test_an_offline_reset_it_may_not_write_names_the_directory(as_json: bool) -> None:
    with reachable_tmp() as tmp:
        state_dir = tmp / "state"
        state_dir.mkdir(mode=0o755)  # root's: another user may not write there
        result = subprocess.run(
            [*AS_NOBODY, str(BIN / "gatewayctl"), *(["--json"] if as_json else []),
             "--socket", str(tmp / "none"), "reset", "--state-dir", str(state_dir)],
            capture_output=True, text=True, timeout=60, check=False)
        assert sorted(state_dir.iterdir()) == []
    message = (f"cannot reset the state in {state_dir}: Permission denied; run it as root "
               "or as the directory's owner")
    assert (result.returncode, result.stderr) == (1, f"gatewayctl: {message}\n")
    assert result.stdout == (json.dumps({"error": message}) + "\n" if as_json else "")


# gatewayctl as installed, but with the packaged config's path moved into the test's directory.
WITH_DEFAULT_CONFIG = ("import sys; from pathlib import Path; import gatewayd.config as c; "
                       "c.DEFAULT_CONFIG_PATH = Path(sys.argv[1]); "
                       "from gatewayd.ctl.main import main; sys.exit(main(sys.argv[2:]))")


@pytest.mark.skipif(os.geteuid() != 0, reason=ROOT_ONLY)
@pytest.mark.parametrize("explicit", [False, True])
def test_a_control_group_member_who_may_not_read_the_config_reaches_the_default_socket(
        explicit: bool) -> None:
    """/etc/gatewayd/gatewayd.toml is root:gatewayd 0640: a member of [hub] control_group
    is not in group gatewayd. Plain `gatewayctl status` then uses the default socket; a
    config named with --config is meant, and not reading it stays an error."""
    with reachable_tmp() as tmp:
        config = tmp / "gatewayd.toml"
        config.write_text("[hub]\nruntime_dir = '/run/elsewhere'\n")
        config.chmod(0o640)
        result = subprocess.run(
            [*AS_NOBODY, sys.executable, "-c", WITH_DEFAULT_CONFIG, str(config),
             *(["--config", str(config)] if explicit else []), "--json", "status"],
            capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "PYTHONPATH": str(REPO)})
    if explicit:
        message = f"configuration error: {config}: cannot read: Permission denied"
        code = 1
    else:
        # A machine where gatewayd once ran keeps a root-only /run/gatewayd: what matters is
        # that the default socket is the one tried.
        message = ("permission denied on /run/gatewayd/control.sock: run as root or as a "
                   "member of the control group ([hub] control_group)"
                   if os.path.isdir("/run/gatewayd") else
                   "gatewayd is not running (no control socket at "
                   "/run/gatewayd/control.sock: No such file or directory)")
        code = EXIT_UNREACHABLE
    assert (result.returncode, result.stderr) == (code, f"gatewayctl: {message}\n")
    assert json.loads(result.stdout) == {"error": message}


@contextlib.contextmanager
def silent_daemon(path: Path) -> Iterator[threading.Event]:
    """A control socket that takes a request and never answers; the event is set once a
    whole request has arrived: gatewayctl is then waiting for its answer."""
    received = threading.Event()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.settimeout(60)  # accept() gives up if gatewayctl never connects
    server.bind(str(path))
    server.listen(1)
    held: list[socket.socket] = []

    def serve() -> None:
        conn, _ = server.accept()
        held.append(conn)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            body += conn.recv(4096)
        received.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        server.close()
        for conn in held:
            conn.close()
        thread.join(10)


@pytest.mark.parametrize(("command", "message"), [
    ("reset", "interrupted; a reset already sent goes on in the hub; see gatewayctl status"),
    ("status", "interrupted"),
])
def test_ctrl_c_while_waiting_for_the_hub_is_a_sentence_and_exit_130(
        command: str, message: str) -> None:
    with reachable_tmp() as tmp, silent_daemon(tmp / "control.sock") as received:
        proc = subprocess.Popen([str(BIN / "gatewayctl"), "--socket", str(tmp / "control.sock"),
                                 command], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            assert received.wait(60), "gatewayctl never sent its request"
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert (proc.returncode, out, err) == (130, "", f"gatewayctl: {message}\n")


@contextlib.contextmanager
def one_connection(path: Path, handle: Callable[[socket.socket], None]) -> Iterator[None]:
    """A control socket at ``path`` that takes one connection and gives it to ``handle``."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            handle(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(30)
        server.close()


@pytest.mark.parametrize("hangs_up", [False, True])
def test_a_daemon_that_does_not_answer_or_hangs_up_is_said_in_words(tmp_path: Path,
                                                                   hangs_up: bool) -> None:
    """It printed Python's words: "control socket …: timed out", or "Remote end closed
    connection without response"."""
    path = tmp_path / "control.sock"

    def no_answer(conn: socket.socket) -> None:
        conn.recv(65536)
        if not hangs_up:
            conn.recv(65536)  # until the client gives up and closes

    with one_connection(path, no_answer), pytest.raises(CtlError) as refused:
        Client(path, timeout=0.5).request("GET", "status")
    assert refused.value.code == EXIT_UNREACHABLE
    expected = ("gatewayd's answer on {} broke off" if hangs_up else
                "gatewayd did not answer on {} within 0.5 s").format(path)
    assert str(refused.value).startswith(expected), str(refused.value)


def test_an_answer_without_a_field_the_command_reads_is_said_in_words(tmp_path: Path) -> None:
    """A daemon of another version answering without a field printed "gatewayctl: 'key'"."""
    path = tmp_path / "control.sock"

    def empty_answer(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")

    with one_connection(path, empty_answer):
        result = run_ctl("--socket", str(path), "setup-code")
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(
        "gatewayctl: unexpected answer from gatewayd: it has no 'setup_code'"), result.stderr


@pytest.mark.parametrize(("status", "expected"), [
    ("413 Request Entity Too Large",
     "gatewayd refused the request as too large (HTTP 413; it takes at most 64 KiB)"),
    ("500 Internal Server Error",
     "gatewayd refused the request (HTTP 500 Internal Server Error) without saying why in "
     "JSON; see its log (journalctl -u gatewayd)"),
    ("200 OK", "unexpected answer from gatewayd: HTTP 200 OK that is not JSON (gatewayctl "
               "and gatewayd of different versions?)")])
def test_an_answer_that_is_not_json_is_said_in_words(tmp_path: Path, status: str,
                                                     expected: str) -> None:
    """waitress' plain-text 413 printed "unexpected answer from gatewayd: b'Request Entity
    Too Large...'"."""
    path = tmp_path / "control.sock"
    text = f"{status.partition(' ')[2]}\n\n<html>library text</html>".encode()

    def plain(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: "
                     f"{len(text)}\r\nConnection: close\r\n\r\n".encode() + text)

    with one_connection(path, plain):
        result = run_ctl("--socket", str(path), "--json", "status")
    assert (result.returncode, result.stderr) == (1, f"gatewayctl: {expected}\n")
    assert json.loads(result.stdout) == {"error": expected}


def test_a_request_over_the_sockets_limit_is_refused_before_it_is_sent(tmp_path: Path) -> None:
    result = run_ctl("--socket", str(tmp_path / "none.sock"), "platform", "request", "echo",
                     "--data", json.dumps("x" * 70000))
    assert (result.returncode, result.stderr) == (1, (
        "gatewayctl: the request is 70049 bytes, more than gatewayd takes (64 KiB)\n"))


DEEP = "[" * 2000 + "]" * 2000
LONG_NUMBER = "1" * 5000


@pytest.mark.parametrize(("argv", "expected"), [
    (["platform", "request", "echo", "--data", DEEP], "--data nests deeper than 32 levels"),
    (["platform", "request", "echo", "--data", LONG_NUMBER],
     "--data holds a number of more than 4300 digits"),
    (["platform", "request", "echo", "--data", "{"],
     "--data is not JSON (line 1, column 2)"),
    (["platform", "request", "echo", "--data", "[NaN]"],
     "--data holds NaN, which is not a finite number"),
    (["zigbee", "sim", "report", f"attributes={DEEP}"], "attributes nests deeper than 32 levels"),
    (["zigbee", "sim", "report", f"value={LONG_NUMBER}"],
     "value holds a number of more than 4300 digits")])
def test_a_json_argument_gatewayctl_cannot_use_is_said_in_words(
        tmp_path: Path, argv: list[str], expected: str) -> None:
    """Before: a RecursionError traceback, or Python's "Exceeds the limit (4300 digits) ...
    sys.set_int_max_str_digits()"; refused before anything is sent (no daemon here)."""
    socket_path = str(tmp_path / "control.sock")
    result = run_ctl("--socket", socket_path, *argv)
    assert (result.returncode, result.stderr) == (1, f"gatewayctl: {expected}\n")
    result = run_ctl("--socket", socket_path, "--json", *argv)
    assert (result.returncode, json.loads(result.stdout)) == (1, {"error": expected})


def test_a_simulated_platform_that_is_not_running_is_said_in_words(tmp_path: Path) -> None:
    """Before: "did not answer: <urlopen error [Errno 111] Connection refused>"."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}"
    (tmp_path / "sim.json").write_text(json.dumps({
        "control_socket": str(tmp_path / "control.sock"), "platform": {"control": url}}))
    expected = f"the simulated platform at {url} did not answer: connection refused (is the " \
               "simulator running?)"
    for argv in (["platform", "log"], ["platform", "operations"],
                 ["platform", "approve", "abcdef"]):
        result = run_ctl("--sim", str(tmp_path), *argv)
        assert (result.returncode, result.stderr) == (3, f"gatewayctl: {expected}\n")


@pytest.mark.parametrize("argv", [["log"], ["operations"], ["approve", "abcdef"],
                                  ["reject", "abcdef"], ["revoke", "hub-1"]])
def test_a_simulator_command_without_sim_names_itself(
        tmp_path: Path, argv: list[str]) -> None:
    """Before: `the platform log is the simulator's: give --sim WORKDIR` for all five."""
    result = run_ctl("--socket", str(tmp_path / "control.sock"), "platform", *argv)
    assert (result.returncode, result.stderr) == (1, (
        f"gatewayctl: platform {argv[0]} works on the simulated platform only: give --sim "
        "WORKDIR (the --workdir of gatewayd --simulate)\n"))


@pytest.mark.parametrize(("args", "message"), [
    (("close", "--seconds", "5"), "--seconds applies to 'ble-window open' only, not to 'close'"),
    (("status", "--authorize"), "--authorize applies to 'ble-window open' only, not to 'status'"),
    (("close", "--authorize", "--seconds", "5"),
     "--authorize and --seconds apply to 'ble-window open' only, not to 'close'"),
])
def test_window_options_other_than_open_are_a_usage_error(args: tuple[str, ...],
                                                          message: str) -> None:
    """Before: `ble-window close --seconds 5` was sent and the option silently dropped.
    Now it is refused before anything is sent (nothing listens on the socket: asking the
    daemon would be exit 3), as argparse refuses its own usage errors."""
    with reachable_tmp() as tmp:
        done = run_ctl("--socket", str(tmp / "control.sock"), "ble-window", *args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("usage: gatewayctl ble-window ")
    assert done.stderr.endswith(f"gatewayctl ble-window: error: {message}\n")
