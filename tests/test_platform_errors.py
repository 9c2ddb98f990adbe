"""What a user of `gatewayctl platform ...` is told when a request goes wrong: on a real
broker, through the hub's cloud link and platform client, its control socket (served as the
daemon serves it) and gatewayctl itself; the platform is the simulated one or the test
publishing answers as the platform would (the broker's monitor user).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import subprocess
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from paho.mqtt.enums import CallbackAPIVersion

from gatewayd.cloud.attempts import CloudOutcome
from gatewayd.cloud.link import CloudLink
from gatewayd.control.app import create_control_app
from gatewayd.control.platform import platform_blueprint
from gatewayd.credentials import mqtt_username
from gatewayd.runtime.corecall import CoreCall
from gatewayd.runtime.webserver import WebServer
from gatewayd.simulator.broker import PLATFORM_USER, Broker
from gatewayd.simulator.platform import SimPlatform
from tests.cloud_helpers import HUB_ID, TOKEN, WSP, Monitor, creds_for, make_link
from tests.helpers import BIN, wait_for

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

ROOT = mqtt_username(WSP)
T = TypeVar("T")


@dataclass
class Hub:
    """The hub's side: its cloud link online on the broker, its control socket."""

    socket: Path
    link: CloudLink
    loop: asyncio.AbstractEventLoop

    def on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "gatewayctl"), "--socket", str(self.socket), *args],
                              capture_output=True, text=True, timeout=60, check=False)

    def ctl_started(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([str(BIN / "gatewayctl"), "--socket", str(self.socket), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def dropped(self) -> dict[str, int]:
        async def read() -> dict[str, int]:
            return dict(self.link.platform.status()["dropped"])
        return self.on_loop(read())


@pytest.fixture
def hub(broker: Broker, core_loop: asyncio.AbstractEventLoop,
        tmp_path: Path) -> Iterator[Hub]:
    link = make_link()
    h = Hub(tmp_path / "run" / "control.sock", link, core_loop)
    h.on_loop(link.start(creds_for(broker)))
    assert h.on_loop(link.wait_result(5)).outcome is CloudOutcome.CONNECTED
    call = CoreCall(core_loop)
    app = create_control_app(object(), call,  # type: ignore[arg-type]
                             extra=[platform_blueprint(link.platform, call)])
    server = WebServer(app, name="control", unix_socket=h.socket, threads=2).start()
    try:
        yield h
    finally:
        server.stop()
        h.on_loop(link.stop())


@pytest.fixture
def platform(broker: Broker, hub: Hub, tmp_path: Path) -> Iterator[SimPlatform]:
    """The simulated platform, and a sim.json for `gatewayctl --sim` that names it."""
    sim = SimPlatform(broker.host, broker.port, PLATFORM_USER, broker.platform_password,
                      tmp_path / "platform.json").start()
    (tmp_path / "sim.json").write_text(json.dumps({
        "control_socket": str(hub.socket), "platform": {"control": sim.control_url}}))
    try:
        yield sim
    finally:
        sim.stop()


def can(sim: SimPlatform, **responses: Any) -> None:
    """Canned answers in the simulated platform's platform.json, as a developer edits it."""
    settings = json.loads(sim.responses.read_text())
    settings["responses"].update(responses)
    sim.responses.write_text(json.dumps(settings))


def test_a_timeout_says_which_answers_were_dropped(
        broker: Broker, hub: Hub, platform: SimPlatform) -> None:
    """Before: `big: no response within 3 s`, while the status counted the answer dropped
    as too large; nor did answers without an id or on another endpoint's topic show."""
    can(platform, big={"status": 1, "code": 200, "data": "x" * 800_000})
    result = hub.ctl("platform", "request", "big", "--timeout", "3")
    assert result.returncode == 1
    found = re.fullmatch(r"gatewayctl: big: no response within 3 s \(an answer was too large "
                         r"\((\d+) bytes, at most 1 MiB\) and was dropped\)\n", result.stderr)
    assert found is not None, result.stderr
    assert int(found.group(1)) > 1024 * 1024
    platform.stop()  # from here the test answers as the platform

    with Monitor(broker, f"{ROOT}/req/#") as mon:
        waiting = hub.ctl_started("platform", "request", "door/a", "--timeout", "5")
        request = mon.wait_for(f"{ROOT}/req/{HUB_ID}/door/a", timeout=10).json()
        res = f"{ROOT}/res/{HUB_ID}"
        mon.publish(f"{res}/door/a", "not json")
        mon.publish(f"{res}/door/a", json.dumps({"status": 1, "code": 200}))
        mon.publish(f"{res}/door/b", json.dumps({"status": 1, "code": 200,
                                                 "id": request["id"], "data": ""}))
        mon.publish(f"{res}/door/c", "{}")  # no request waits on door/c: not door/a's
        wait_for(lambda: hub.dropped() == {"malformed": 3, "too-large": 1, "unknown-id": 1},
                 10, "the hub to drop the four answers")
        _, stderr = waiting.communicate(timeout=30)
    assert waiting.returncode == 1
    assert stderr == (
        "gatewayctl: door/a: no response within 5 s (2 answers were malformed (first: the "
        "response is not JSON) and were dropped; an answer came with its id on another "
        "endpoint's topic (door/b) and was dropped)\n")


def test_a_request_over_64_kib_is_answered_413_and_warned_of_as_deprecated(
        hub: Hub, platform: SimPlatform, caplog: pytest.LogCaptureFixture) -> None:
    """Before: sent, and the simulated platform ignored it: `echo: no response within 5 s`.
    0.1.2 set no limit, so the hub still sends one (interfaces.md section 1: a tightening
    needs a release of notice) and says once per caller and endpoint that 0.2 refuses it;
    the simulated platform answers it 413. A request ({"data", "key", "id"}) is 107 bytes
    besides its data."""
    caplog.set_level(logging.WARNING, logger="gatewayd.cloud.reqres")
    largest = "x" * (64 * 1024 - 107 - 2)  # a JSON string: 2 quotes
    answer = hub.ctl("--json", "platform", "request", "echo", "--data", json.dumps(largest))
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout) == {"endpoint": "echo", "data": largest}
    assert not caplog.records
    too_large = json.dumps(largest + "x")
    for _ in range(2):
        result = hub.ctl("platform", "request", "echo", "--data", too_large, "--timeout", "5")
        assert (result.returncode, result.stderr) == (1, (
            "gatewayctl: echo: the platform refused the request (code 413): the request is "
            "65537 bytes, and a request is at most 65536 bytes (64 KiB)\n"))
    assert [r.getMessage() for r in caplog.records] == [
        "platform request echo from control is 65537 bytes, over the 65536 a request may "
        "be: sent, but deprecated: gatewayd 0.2 refuses it before sending (the simulated "
        "platform already answers 413)"]


def test_the_simulated_platform_answers_a_request_over_64_kib_413(
        broker: Broker, platform: SimPlatform, tmp_path: Path) -> None:
    """Before: no answer at all, only `request too large` in its log. Another hub (any
    client) may send one: the hub's own refuses them before sending."""
    key = os.urandom(32)
    answers: list[dict[str, Any]] = []
    got = threading.Condition()

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with got:
            answers.append(json.loads(msg.payload))
            got.notify_all()

    other = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="other-hub")
    other.username_pw_set(ROOT, TOKEN)
    other.on_message = on_message
    subscribed = threading.Event()
    other.on_subscribe = lambda *args: subscribed.set()
    other.connect(broker.host, broker.port)
    other.subscribe(f"{ROOT}/res/other-hub/#", qos=1)
    other.loop_start()
    try:
        assert subscribed.wait(5)
        request = {"data": "x" * 70_000, "key": base64.b64encode(key).decode(), "id": "1" * 32}
        size = len(json.dumps(request))
        other.publish(f"{ROOT}/req/other-hub/echo", json.dumps(request),
                      qos=1).wait_for_publish(5)
        with got:
            assert got.wait_for(lambda: answers, 10), "no answer to the large request"
        # Past 1 MiB it is not read (nor answered): the log says so.
        huge = json.dumps({**request, "data": "x" * 1024 * 1024, "id": "2" * 32})
        other.publish(f"{ROOT}/req/other-hub/echo", huge, qos=1).wait_for_publish(5)
        wait_for(lambda: len(platform.log()) == 2, 10, "the huge request in the log")
    finally:
        other.disconnect()
        other.loop_stop()
    message = (f"the request is {size} bytes, and a request is at most 65536 bytes "
               "(64 KiB)")
    answer = answers[0]
    assert (answer["status"], answer["code"], answer["id"]) == (0, 413, "1" * 32)
    sealed = base64.b64decode(answer["data"])
    assert json.loads(AESGCM(key).decrypt(sealed[:12], sealed[12:], None)) == {
        "message": message}
    result = subprocess.run([str(BIN / "gatewayctl"), "--sim", str(tmp_path), "--json",
                             "platform", "log"], capture_output=True, text=True, timeout=60,
                            check=False)
    entry, unread = json.loads(result.stdout)
    assert (entry["error"], entry["status"], entry["code"], "request" in entry) == (
        message, 0, 413, False)
    assert unread["error"] == (f"the request is {len(huge)} bytes, too large to read (a "
                               "request is at most 65536 bytes)")
    assert "status" not in unread and "request" not in unread


def test_the_platforms_refusal_is_shown_on_one_line_and_cut(
        hub: Hub, platform: SimPlatform) -> None:
    """Before: 20,074 bytes printed, the escape sequence reaching the terminal, and a
    line break in the message printed two lines."""
    can(platform,
        long={"status": 0, "code": 403, "data": {"message": "x" * 20_000 + "\x1b[31m"}},
        lines={"status": 0, "code": 403, "data": {"message": "one\ntwo \x1b[31mred\x07"}},
        odd={"status": 0, "code": 403, "data": ["\x1b[2J", "x" * 600]})
    result = hub.ctl("platform", "request", "long")
    assert (result.returncode, result.stderr) == (1, (
        "gatewayctl: long: the platform refused the request (code 403): "
        f"{'x' * 500}... (cut: 20005 characters in all)\n"))
    result = hub.ctl("platform", "request", "lines")
    assert (result.returncode, result.stderr) == (1, (
        "gatewayctl: lines: the platform refused the request (code 403): "
        "one two \ufffd[31mred\ufffd\n"))
    result = hub.ctl("platform", "request", "odd")  # not {"message"}: shown as JSON, cut
    odd = json.dumps(["\x1b[2J", "x" * 600])  # which escapes the escape character
    assert (result.returncode, result.stderr) == (1, (
        "gatewayctl: odd: the platform refused the request (code 403): "
        f"{odd[:500]}... (cut: {len(odd)} characters in all)\n"))


def test_json_errors_carry_the_sockets_code_and_details(
        broker: Broker, hub: Hub, platform: SimPlatform, tmp_path: Path) -> None:
    """Before: `{"error": "<message>"}` alone, the same for a refusal, a timeout, an
    offline link or a full queue."""
    result = hub.ctl("--json", "platform", "request", "nope")
    assert result.returncode == 1
    assert json.loads(result.stdout) == {
        "error": "nope: the platform refused the request (code 404): unknown endpoint 'nope'",
        "code": "platform-refused", "details": {"status": 0, "code": 404}}
    result = hub.ctl("--json", "platform", "request", "a/b/c")  # the socket's own refusal
    assert result.returncode == 1 and json.loads(result.stdout)["code"] == "invalid"
    # the simulated platform's control interface (without its provisioning side here)
    result = subprocess.run([str(BIN / "gatewayctl"), "--sim", str(tmp_path), "--json",
                             "platform", "approve", "abcdef"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert (result.returncode, json.loads(result.stdout)) == (1, {
        "error": "/operations/abcdef/approve", "code": "not-found"})
    platform.stop()
    result = hub.ctl("--json", "platform", "request", "echo", "--timeout", "0.5")
    assert (result.returncode, json.loads(result.stdout)) == (1, {
        "error": "echo: no response within 0.5 s", "code": "timeout"})
    # gatewayctl's own refusals are not the socket's: no code
    result = hub.ctl("--json", "platform", "request", "echo", "--data", "{")
    assert (result.returncode, json.loads(result.stdout)) == (1, {
        "error": "--data is not JSON (line 1, column 2)"})


def test_a_refusal_without_a_code_says_so_in_words(broker: Broker, hub: Hub) -> None:
    """Before: `the platform refused the request (code None): no details`."""
    with Monitor(broker, f"{ROOT}/req/#") as mon:
        waiting = hub.ctl_started("--json", "platform", "request", "nocode")
        request = mon.wait_for(f"{ROOT}/req/{HUB_ID}/nocode", timeout=10).json()
        mon.publish(f"{ROOT}/res/{HUB_ID}/nocode", json.dumps({"status": 0,
                                                               "id": request["id"]}))
        stdout, stderr = waiting.communicate(timeout=30)
    assert waiting.returncode == 1
    assert stderr == ("gatewayctl: nocode: the platform refused the request (without a code): "
                      "no details\n")
    assert json.loads(stdout)["details"] == {"status": 0, "code": 500}
