"""The simulated Business Platform in-process: its answers from platform.json and its
control interface, without a broker (the REQ/RES round trip is tests/test_e2e_platform.py)."""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import types
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from gatewayd.provisioning import codec
from gatewayd.simulator import platform as sim_platform
from gatewayd.simulator.broker import Broker
from gatewayd.simulator.platform import SimPlatform
from gatewayd.simulator.provisioning import SimProvisioning
from gatewayd.simulator.provisioning_model import SIM_TOKEN
from gatewayd.simulator.provisioning_ops import attach
from gatewayd.simulator.world import SIM_ACCOUNT


@pytest.fixture
def sim(tmp_path: Path) -> SimPlatform:
    return SimPlatform("127.0.0.1", 1, "platform", "pw", tmp_path / "platform.json")


@pytest.fixture
def control(sim: SimPlatform) -> Iterator[tuple[str, int]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), sim_platform._handler(sim))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield "127.0.0.1", server.server_address[1]
    server.shutdown()
    server.server_close()


def post(address: tuple[str, int], length: str, body: bytes = b"") -> tuple[int, object]:
    with socket.create_connection(address, timeout=10) as conn:
        conn.sendall(f"POST /operations/abcdef/approve HTTP/1.0\r\nContent-Length: {length}"
                     "\r\n\r\n".encode() + body)
        conn.shutdown(socket.SHUT_WR)  # a server reading until EOF gets it at once
        answer = b"".join(iter(lambda: conn.recv(65536), b""))
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head, "the control interface closed the connection without an answer"
    return int(head.split()[1]), json.loads(payload)


def test_a_bad_content_length_is_refused_400_naming_it(
        control: tuple[str, int]) -> None:
    """Before: "abc" ended the connection without an answer (a traceback in the log) and
    "-1" read the body until the client hung up."""
    for length in ("abc", "-1", "+2", "1_0"):
        assert post(control, length, b"{}") == (400, {"error": {
            "code": "invalid",
            "message": f"Content-Length: must be a number of bytes, got {length!r}"}})
    assert post(control, "9" * 5000)[0] == 413
    assert post(control, "2", b"{}") == (404, {"error": {
        "code": "not-found", "message": "/operations/abcdef/approve"}})


def test_a_canned_answer_replaces_a_built_in_endpoint_but_not_the_simulators_own(
        sim: SimPlatform, caplog: pytest.LogCaptureFixture) -> None:
    """Before: a canned echo, time or rfid/authorize was ignored, without a word. A release
    stays the simulator's (it ends the hub's enrollment), and says its entry is unused."""
    released: list[str] = []
    sim.on_release.append(lambda device, data: released.append(device))
    data = json.loads(sim.responses.read_text())
    data["responses"].update({
        "echo": {"status": 0, "code": 503, "data": {"message": "down"}},
        "time": {"data": {"time": 0}}, "rfid/authorize": {"data": {"authorized": False}},
        "device/ownership": {"status": 0, "code": 500}})
    sim.responses.write_text(json.dumps(data))
    assert sim._handle("echo", "hub", 1) == (0, 503, {"message": "down"})
    assert sim._handle("time", "hub", None) == (1, 200, {"time": 0})
    assert sim._handle("rfid/authorize", "hub", {"tag": "DEADBEEF"}) == (
        1, 200, {"authorized": False})
    release = {"event": "released", "device_id": "hub", "children": []}
    for _ in range(2):
        assert sim._handle("device/ownership", "hub", release) == (1, 200, {"released": "hub"})
    assert released == ["hub", "hub"]
    assert [r.getMessage() for r in caplog.records] == [
        f"simulated platform: {sim.responses}: responses: device/ownership: not used (the "
        "simulator answers device/ownership itself)"]


def test_a_request_it_cannot_read_is_logged_in_its_own_words(sim: SimPlatform) -> None:
    """Before: a request nesting a few thousand levels deep or holding a number of more than
    4300 digits raised out of paho's callback (RecursionError, ValueError), unlogged."""
    topic = "platform/req/hub/echo"
    for payload in (b"[" * 5000 + b"]" * 5000, b'{"id": "1", "n": ' + b"1" * 5000 + b"}",
                    b'{"id": "1", "data": NaN}', b"{"):
        sim._answer(topic, payload)
    assert [entry["error"] for entry in sim.log()] == [
        "the request nests deeper than 32 levels",
        "the request holds a number of more than 4300 digits",
        "the request holds NaN, which is not a finite number",
        "the request is not JSON"]


def test_a_problem_in_platform_json_is_logged_once_however_many_requests_meet_it(
        sim: SimPlatform, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Before: every REQ/RES request the file could not answer logged it again, and a
    refresh twice (the settings' log-once, then the platform's own): a batch of hubs filled
    the log with one line. Each request is still answered 500 with the problem."""
    accounts = Broker(tmp_path / "broker")
    prov = SimProvisioning(tmp_path / "prov", accounts, accounts.add_account(*SIM_ACCOUNT),
                           sim.responses)
    attach(sim, prov)
    key = base64.b64encode(bytes(32)).decode()
    polled: list[dict[str, object]] = []
    endpoint = types.SimpleNamespace(publish=lambda _t, body, qos: polled.append(
        json.loads(body)))

    def ask(name: str) -> str:
        sim._answer(f"root/req/hub/{name}",
                    json.dumps({"id": "1", "key": key, "data": {}}).encode())
        entry = sim.log()[-1]
        assert (entry["status"], entry["code"]) == (0, 500), entry
        return str(entry["error"])

    def poll() -> str:
        op, _ = codec.new_operation()
        msg = mqtt.MQTTMessage(
            topic=codec.request_topic(codec.token_user(SIM_TOKEN), op, "poll").encode())
        msg.payload = codec.request_body("r1", {"operation": op}).encode()
        prov._on_message(endpoint, None, msg)  # type: ignore[arg-type]
        assert polled[-1]["code"] == 500
        return str(polled[-1]["data"]["message"])  # type: ignore[index]

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]

    bad_setting = f"{sim.responses}: provisioning: auto_approve: must be true or false, " \
        "got 'false'"
    sim.responses.write_text('{"provisioning": {"auto_approve": "false"}}')
    assert {ask("provisioning/refresh"), ask("provisioning/refresh"), poll(), poll(),
            ask("provisioning/refresh")} == {bad_setting}
    assert warnings() == [f"simulated platform: {bad_setting}"]
    sim.responses.write_text('{"responses": ')
    not_json = {ask("echo"), ask("time"), ask("provisioning/refresh"), poll()}
    assert len(not_json) == 1 and next(iter(not_json)).startswith(
        f"{sim.responses}: not JSON (")
    assert len(warnings()) == 2
    sim.responses.write_text('{"provisioning": {"auto_approve": "false"} }')  # edited again
    assert ask("provisioning/refresh") == bad_setting
    assert warnings()[2:] == [f"simulated platform: {bad_setting}"]


def test_a_broken_platform_json_fails_every_endpoint_but_device_ownership(
        sim: SimPlatform) -> None:
    """What docs/interfaces.md §9 says, which contradicted itself before ("the built-in
    endpoints do not read the file"): a canned answer may replace echo, time and
    rfid/authorize, so they need the file; a release does not."""
    sim.responses.write_text('{"responses": \n')
    problem = f"{sim.responses}: not JSON (line 2, column 1)"
    for endpoint, data in (("echo", 1), ("time", None), ("rfid/authorize", {"tag": "A1"}),
                           ("no/such", None)):
        with pytest.raises(sim_platform.SettingsError, match=re.escape(problem)):
            sim._handle(endpoint, "hub", data)
    release = {"event": "released", "device_id": "hub", "children": []}
    assert sim._handle("device/ownership", "hub", release) == (1, 200, {"released": "hub"})
