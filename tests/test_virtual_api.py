"""``/api/v1/devices``, ``/button``, ``/identify`` on a real control socket, and the gatewayctl
functions that use them (mounted the way gatewayd.ctl.main mounts subcommands)."""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
import tomllib
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gatewayd.config import ButtonConfig, Config, LedConfig, parse_config, with_overrides
from gatewayd.control.app import create_control_app
from gatewayd.control.devices import devices_blueprint
from gatewayd.control.parts import DeviceProviders
from gatewayd.ctl.devices import add_commands
from gatewayd.ctl.main import Client, CtlError
from gatewayd.hardware.component import Hardware
from gatewayd.hardware.simulated import SimulatedBackend
from gatewayd.hub import INTERNAL_MESSAGE, Hub
from gatewayd.identity import Identity
from gatewayd.runtime.corecall import CoreCall
from gatewayd.runtime.logsetup import Redactor
from gatewayd.runtime.sdnotify import Notifier
from gatewayd.runtime.webserver import WebServer
from gatewayd.state import StateStore
from gatewayd.virtual import Registry
from gatewayd.virtual.host import VirtualDevices
from tests.test_virtual_host import FakePublisher

pytestmark = pytest.mark.timeout(60)
T = TypeVar("T")
ZIGBEE = [{"device_id": "zigbee-00124b0012345678", "ieee": "00:12:4b:00:12:34:56:78",
           "name": "Front door", "model": "SNZB-04", "state": "sleeping",
           "last_seen": time.time() - 2 * 3600 - 5, "lqi": 0}]


@dataclass
class Control:
    socket: Path
    hub: Hub
    hardware: Hardware
    calls: list[str]
    loop: asyncio.AbstractEventLoop

    def on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)


@pytest.fixture
def control(tmp_path: Path) -> Iterator[Control]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="core", daemon=True)
    thread.start()
    cfg = with_overrides(Config(), hub={"state_dir": str(tmp_path / "state")})
    identity = Identity("dc-a6-32-12-34-56", "dc:a6:32:12:34:56", "Acme Hub")
    store = StateStore(cfg.state_dir)
    store.open(device_id=identity.device_id, mac=identity.mac)
    hub = Hub(cfg, store, identity, Notifier(), Redactor())
    calls: list[str] = []

    async def open_window() -> dict[str, Any]:
        calls.append("window")
        return {"hotspot": False, "ble_window": True}  # as the daemon's short press

    async def setup() -> tuple[Hardware, VirtualDevices]:
        hw = Hardware(ButtonConfig(), LedConfig(), SimulatedBackend(),
                      on_short_press=open_window, on_long_press=hub.reset)
        await hw.start()
        virtual_cfg = parse_config(tomllib.loads('[[virtual]]\ntype = "timer"\nid = "tea"\n'
                                                 'name = "Tea timer"\n'), "t.toml")
        vd = VirtualDevices(virtual_cfg.virtual, FakePublisher(), registry=Registry(group=None))
        await vd.start()
        return hw, vd

    ctl = Control(tmp_path / "run" / "control.sock", hub, None, calls, loop)  # type: ignore[arg-type]
    hw, vd = ctl.on_loop(setup())
    ctl.hardware = hw
    providers = DeviceProviders()
    providers.add("virtual", vd.devices)
    providers.add("zigbee", lambda: ZIGBEE)
    call = CoreCall(loop)
    app = create_control_app(hub, call, extra=[devices_blueprint(call, providers, hw)])
    server = WebServer(app, name="control", unix_socket=ctl.socket, threads=2).start()
    try:
        yield ctl
    finally:
        server.stop()
        ctl.on_loop(vd.stop())
        ctl.on_loop(hw.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def parser() -> argparse.ArgumentParser:
    """What gatewayd.ctl.main.build_parser does, with these subcommands added."""
    p = argparse.ArgumentParser(prog="gatewayctl")
    p.add_argument("--json", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    add_commands(sub)
    for parent in sub.choices.values():
        parent.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    return p


def gatewayctl(control: Control, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    args = parser().parse_args(argv)
    assert args.func(args, Client(control.socket, timeout=30)) == 0
    return capsys.readouterr().out


def test_devices_lists_every_provider(control: Control,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(gatewayctl(control, capsys, "devices", "--json"))
    assert [d["device_id"] for d in data["devices"]] == ["virtual-tea",
                                                         "zigbee-00124b0012345678"]
    tea, door = data["devices"]
    assert (tea["provider"], tea["type"], tea["state"]) == ("virtual", "timer", "ready")
    assert (door["provider"], door["model"]) == ("zigbee", "SNZB-04")
    assert data["errors"] == {}
    human = gatewayctl(control, capsys, "devices").splitlines()
    assert human[0].split() == ["DEVICE", "PROVIDER", "TYPE", "STATE", "HEARD", "LQI", "NAME"]
    assert human[1].split() == ["virtual-tea", "virtual", "timer", "ready", "-", "-", "Tea",
                                "timer"]
    # A Zigbee device: when it was last heard (2 hours ago) and its link quality, as
    # docs/zigbee.md promises.
    assert human[2].split() == ["zigbee-00124b0012345678", "zigbee", "SNZB-04", "sleeping",
                                "2h", "0", "Front", "door"]


def test_a_failing_provider_does_not_hide_the_others() -> None:
    providers = DeviceProviders()
    providers.add("virtual", lambda: [{"device_id": "virtual-a", "name": "A",
                                       "state": "ready"}])

    def broken() -> list[dict[str, Any]]:
        raise RuntimeError("radio gone")

    providers.add("zigbee", broken)
    data = providers.collect()
    assert [d["device_id"] for d in data["devices"]] == ["virtual-a"]
    assert data["errors"] == {"zigbee": INTERNAL_MESSAGE}  # tests/test_control_errors.py


def test_button_short_and_long(control: Control, capsys: pytest.CaptureFixture[str]) -> None:
    out = gatewayctl(control, capsys, "--json", "button", "short")
    assert json.loads(out) == {"press": "short", "action": "commissioning-window",
                               "result": {"hotspot": False, "ble_window": True}}
    assert control.calls == ["window"]
    assert "commissioning window is open" in gatewayctl(control, capsys, "button", "short")
    data = json.loads(gatewayctl(control, capsys, "button", "long", "--json"))
    assert data["action"] == "factory-reset" and data["result"]["state"] == "unpaired"
    assert control.hardware.button.counts == {"short": 2, "long": 1}
    assert control.hardware.led.overlay == "reset"


def test_identify(control: Control, capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(gatewayctl(control, capsys, "identify", "--seconds", "2", "--json"))
    assert data == {"identify": True, "seconds": 2.0, "led": False}
    assert control.hardware.led.pattern == "identify"
    assert "no status LED" in gatewayctl(control, capsys, "identify")


def test_bad_requests_and_failures_are_clear(control: Control,
                                             caplog: pytest.LogCaptureFixture) -> None:
    client = Client(control.socket)
    with pytest.raises(CtlError, match="press: must be one of short, long"):
        client.request("POST", "button", {"press": "medium"})
    with pytest.raises(CtlError, match="seconds: must be a number above 0"):
        client.request("POST", "identify", {"seconds": -1})

    async def fails() -> None:
        raise AttributeError("'NoneType' object has no attribute 'StartDiscovery'")

    control.hardware.button.hooks["short"] = fails
    # Before: "the short press failed: 'NoneType' object has no attribute 'StartDiscovery'".
    with pytest.raises(CtlError) as failed:
        client.request("POST", "button", {"press": "short"})
    assert str(failed.value) == ("the short press failed; see the hub's log "
                                 "(journalctl -u gatewayd)")
    traced = [r for r in caplog.records if r.exc_info and "StartDiscovery" in str(r.exc_info[1])]
    assert len(traced) == 1, "the traceback is logged, once (the button logs it)"
    status = control.hardware.status()["button"]["last"]  # gatewayctl status shows it
    assert status == {"press": "short", "at": status["at"], "ok": False,
                      "error": "the action failed; see the hub's log"}  # no exception text


def test_without_hardware_the_endpoints_say_so() -> None:
    from flask import Flask

    from gatewayd.control.app import ApiError, error_response

    loop = asyncio.new_event_loop()
    app = Flask("t")
    app.register_blueprint(devices_blueprint(CoreCall(loop), DeviceProviders(), None))
    app.register_error_handler(ApiError, lambda e: error_response(e.status, e.code, e.message))
    response = app.test_client().post("/api/v1/identify", json={})
    loop.close()
    assert response.status_code == 503
    assert "hardware is not set up" in response.get_json()["error"]["message"]
