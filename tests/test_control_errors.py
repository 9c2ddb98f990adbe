"""What the control socket says when a request fails: our components' refusals read through
(their messages are written for the person asking); a library's exception or a bug gets a
fixed sentence, its text and traceback going to the log only. Through the real control app,
with real components whose radio or link is a stand-in that fails in a library's words."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from gatewayd.bridge import ZigbeeBridge
from gatewayd.cloud.reqres import MAX_TIMEOUT, BadRequest, PlatformClient
from gatewayd.config import Config, ZigbeeConfig, with_overrides
from gatewayd.control.app import create_control_app
from gatewayd.control.devices import devices_blueprint
from gatewayd.control.parts import DeviceProviders
from gatewayd.control.platform import platform_blueprint
from gatewayd.control.zigbee import zigbee_blueprint
from gatewayd.ctl import platform as ctl_platform
from gatewayd.ctl.client import EXIT_UNREACHABLE
from gatewayd.ctl.main import main as gatewayctl
from gatewayd.hub import INTERNAL_MESSAGE, Hub
from gatewayd.identity import Identity
from gatewayd.runtime.corecall import CoreCall
from gatewayd.runtime.logsetup import Redactor
from gatewayd.runtime.sdnotify import Notifier
from gatewayd.state import StateStore
from tests.test_portal_zigbee import Radio
from tests.test_virtual_host import FakePublisher

LIBRARY_TEXT = "'NoneType' object has no attribute 'x'"
INTERNAL = {"error": {"code": "internal", "message": INTERNAL_MESSAGE}}


def on_loop(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    return asyncio.run_coroutine_threadsafe(coro, loop).result(10)


@pytest.fixture
def zigbee(core_loop: asyncio.AbstractEventLoop,
           tmp_path: Path) -> Iterator[tuple[FlaskClient, ZigbeeBridge, Radio]]:
    bridge = ZigbeeBridge(ZigbeeConfig(), tmp_path, FakePublisher())
    call = CoreCall(core_loop)
    app = create_control_app(object(), call,  # type: ignore[arg-type]
                             extra=[zigbee_blueprint(bridge, call)])
    yield app.test_client(), bridge, Radio()


def radio_up(loop: asyncio.AbstractEventLoop, bridge: ZigbeeBridge, radio: Radio) -> None:
    async def up() -> None:
        bridge.app = radio  # type: ignore[assignment]
        bridge.radio_up.set()
    on_loop(loop, up())


def test_zigbee_refusals_read_through(zigbee: tuple[FlaskClient, ZigbeeBridge, Radio]) -> None:
    client, _, _ = zigbee
    reply = client.post("/api/v1/zigbee/permit-join", json={"seconds": 30})
    assert (reply.status_code, reply.get_json()) == (409, {"error": {
        "code": "UNREACHABLE", "message": "the Zigbee radio is not running (starting)"}})
    reply = client.post("/api/v1/zigbee/install-code", json={"ieee": "xyz", "code": "00"})
    assert (reply.status_code, reply.get_json()) == (400, {"error": {
        "code": "VALIDATION", "message": "'xyz' is not an IEEE address (16 hex digits)"}})
    reply = client.post("/api/v1/zigbee/permit-join", json={"seconds": 255})
    assert (reply.status_code, reply.get_json()) == (400, {"error": {
        "code": "invalid", "message": "seconds: must be an integer 0-254"}})
    reply = client.post("/api/v1/zigbee/sim", json={"action": "join", "kind": "plug"})
    assert (reply.status_code, reply.get_json()["error"]["code"]) == (409, "not-simulated")


def test_a_damaged_virtual_world_file_is_named_to_zigbee_sim(
        core_loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    """`gatewayctl zigbee sim` on a virtual radio whose world file cannot be read: 503 with
    the file and what is wrong, as the hub's Zigbee status says it (not 500 internal)."""
    (tmp_path / "zigbee-virtual.json").write_text("{}")
    bridge = ZigbeeBridge(ZigbeeConfig(enabled=True, radio="virtual"), tmp_path,
                          FakePublisher())
    call = CoreCall(core_loop)
    client = create_control_app(object(), call,  # type: ignore[arg-type]
                                extra=[zigbee_blueprint(bridge, call)]).test_client()
    reply = client.post("/api/v1/zigbee/sim", json={"action": "list"})
    assert reply.status_code == 503
    assert reply.get_json()["error"] == {"code": "sim-unavailable", "message": (
        f"{tmp_path / 'zigbee-virtual.json'} is not a virtual radio world file "
        "('radio_ieee' is missing); delete it to start an empty one")}


@pytest.mark.parametrize("failure", [AttributeError(LIBRARY_TEXT),
                                     ValueError("300 is not a valid EmberStatus")])
def test_a_radio_library_failure_is_not_shown(
        zigbee: tuple[FlaskClient, ZigbeeBridge, Radio], core_loop: asyncio.AbstractEventLoop,
        caplog: pytest.LogCaptureFixture, failure: Exception) -> None:
    """Before: a ValueError from inside the bridge was answered 400 invalid, in its text."""
    client, bridge, radio = zigbee
    radio_up(core_loop, bridge, radio)
    assert client.post("/api/v1/zigbee/permit-join", json={"seconds": 30}).get_json() == {
        "permit_join": 30}
    radio.failure = failure
    reply = client.post("/api/v1/zigbee/permit-join", json={"seconds": 30})
    assert (reply.status_code, reply.get_json()) == (500, INTERNAL)
    assert str(failure) in caplog.text and "Traceback" in caplog.text
    assert radio.permits == [30]


class Link:
    """Stands in for the cloud link; its ``publish`` fails as paho's does for a payload
    over the broker's limit."""

    def __init__(self) -> None:
        self.connected = False

    def publish(self, topic: str, payload: str, **kwargs: Any) -> None:
        raise ValueError("Payload too large.")

    def add_subscription(self, topic_filter: str, handler: Any) -> None:
        pass

    def add_listener(self, listener: Any) -> None:
        pass


def test_platform_refusals_read_through_and_a_library_failure_does_not(
        core_loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture) -> None:
    """Before: the library's ValueError was answered 400 invalid, 'Payload too large.'"""
    link = Link()
    platform = PlatformClient(link, bytes(32), "dc-a6-32-12-34-56")
    call = CoreCall(core_loop)
    client = create_control_app(object(), call,  # type: ignore[arg-type]
                                extra=[platform_blueprint(platform, call)]).test_client()
    url = "/api/v1/platform/request"
    reply = client.post(url, json={"endpoint": "echo", "data": {}})
    assert (reply.status_code, reply.get_json()) == (503, {"error": {
        "code": "cloud-offline", "message": "echo: the cloud link is not connected"}})
    reply = client.post(url, json={"endpoint": "a/b/c"})
    assert (reply.status_code, reply.get_json()["error"]["code"]) == (400, "invalid")
    assert "endpoint" in reply.get_json()["error"]["message"]
    link.connected = True
    reply = client.post(url, json={"endpoint": "echo", "data": {}})
    assert (reply.status_code, reply.get_json()) == (500, INTERNAL)
    assert "Payload too large." in caplog.text
    reply = client.post(url, json={"endpoint": "echo", "timeout": 301})
    assert (reply.status_code, reply.get_json()) == (400, {"error": {"code": "invalid", (
        "message"): "timeout: a number of seconds, above 0 and at most 300"}})
    # A plugin's data that is not JSON: the client's refusal, not json's "Object of type set
    # is not JSON serializable"; nor is NaN, which json.dumps wrote as NaN onto the wire.
    not_json = ("data: must be JSON: objects with text keys, lists, text, finite numbers, "
                "true, false and null")
    for data in ({1, 2}, float("nan"), {"level": [float("inf")]}):
        with pytest.raises(BadRequest) as refused:
            on_loop(core_loop, platform.request("echo", data))
        assert str(refused.value) == not_json
    # gatewayctl --data NaN: Python's json reads and writes NaN, so the control socket gets
    # it, and refuses it where every body is read, as 1e400 (read as infinity).
    for body, shown in ((b'{"endpoint": "echo", "data": NaN}', "NaN"),
                        (b'{"endpoint": "echo", "data": [-Infinity]}', "-Infinity"),
                        (b'{"endpoint": "echo", "timeout": 1e400}', "1e400")):
        reply = client.post(url, data=body, content_type="application/json")
        assert (reply.status_code, reply.get_json()) == (400, {"error": {
            "code": "invalid", "message": f"the body holds {shown}, which is not a finite "
                                          "number"}})


@pytest.mark.parametrize("timeout", ["inf", "1e400", "nan", "0", "-1", "300.5", "soon"])
def test_gatewayctl_refuses_a_request_timeout_the_daemon_would_not_take(
        timeout: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: inf and 1e400 crashed with a traceback (OverflowError from the socket's
    settimeout), nan printed Python's "Invalid value NaN (not a number)"."""
    argv = ["--socket", str(tmp_path / "control.sock"), "platform", "request", "echo"]
    with pytest.raises(SystemExit) as exited:
        gatewayctl([*argv, "--timeout", timeout])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"gatewayctl platform request: error: argument --timeout: {timeout!r} is not a number "
        "of seconds above 0 and at most 300")
    # the daemon's bound, taken: past the parser, to a socket with no daemon behind it
    assert gatewayctl([*argv, "--timeout", "300"]) == EXIT_UNREACHABLE
    assert ctl_platform.MAX_TIMEOUT == MAX_TIMEOUT


def test_a_failing_status_section_or_device_list_is_not_shown(
        core_loop: asyncio.AbstractEventLoop, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Before: the status section was {"error": "AttributeError(\"'NoneType' object ...\")"}
    and the device list's error "AttributeError: 'NoneType' object ..."."""
    cfg = with_overrides(Config(), hub={"state_dir": str(tmp_path / "state")})
    identity = Identity("dc-a6-32-12-34-56", "dc:a6:32:12:34:56", "Acme Hub")
    store = StateStore(cfg.state_dir)
    store.open(device_id=identity.device_id, mac=identity.mac)
    hub = Hub(cfg, store, identity, Notifier(), Redactor())

    def broken() -> Any:
        raise AttributeError(LIBRARY_TEXT)

    providers = DeviceProviders()
    providers.add("virtual", lambda: [{"device_id": "virtual-tea", "name": "Tea timer",
                                       "state": "ready"}])
    providers.add("zigbee", broken)
    hub.add_status("zigbee", broken)
    hub.add_status("devices", lambda: providers.collect()["devices"])  # as the daemon does
    call = CoreCall(core_loop)
    client = create_control_app(hub, call, extra=[devices_blueprint(call, providers, None)]
                                ).test_client()
    status = client.get("/api/v1/status")
    assert status.status_code == 200 and status.get_json()["state"] == "unpaired"
    assert status.get_json()["zigbee"] == {"error": INTERNAL_MESSAGE}
    assert [d["device_id"] for d in status.get_json()["devices"]] == ["virtual-tea"]
    devices = client.get("/api/v1/devices").get_json()
    assert [d["device_id"] for d in devices["devices"]] == ["virtual-tea"]
    assert devices["errors"] == {"zigbee": INTERNAL_MESSAGE}
    assert "NoneType" not in status.get_data(as_text=True) + client.get(
        "/api/v1/devices").get_data(as_text=True)
    assert "status: the zigbee section failed" in caplog.text
    assert "device list of zigbee failed" in caplog.text and LIBRARY_TEXT in caplog.text
    for _ in range(3):  # the panel asks every few seconds: one traceback, not one a call
        assert client.get("/api/v1/status").status_code == 200
    assert caplog.text.count("status: the zigbee section failed") == 1
    assert caplog.text.count("device list of zigbee failed") == 1
