"""``gatewayctl zigbee sim`` end to end through the control socket's code: the actions on
the NCP emulator's control port and on the virtual radio, and every way they are refused."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path
from typing import Any

import pytest

from gatewayd.ctl.zigbee import cmd_sim
from gatewayd.simulator.ncp.emulator import Emulator
from gatewayd.zigbee.simlink import (
    EmulatorLink,
    SimError,
    SimUnavailable,
    VirtualLink,
    check_action,
    parse_address,
)
from tests.helpers import run_async

pytestmark = pytest.mark.timeout(60)


def test_actions_and_their_keys_are_checked_in_one_place() -> None:
    assert check_action("join", {"kind": "plug"}) == "join"
    with pytest.raises(SimError, match="action: one of join, leave"):
        check_action("explode", {})
    with pytest.raises(SimError, match="action: one of"):
        check_action(None, {})
    with pytest.raises(SimError, match="leave takes no colour"):
        check_action("leave", {"ieee": "x", "colour": "red"})
    # Required and typed, named in the user's terms (gatewayd.zigbee.simargs), for both
    # radios and the control socket alike.
    for action, args, message in (
            ("join", {}, "join: kind is required (one of button, contact, light, motion, "
                         "plug, rgb-light, th-sensor, water-meter)"),
            ("state", {}, "state: ieee is required (text such as 00:12:4b:00:01:02:03:04)"),
            ("state", {"ieee": ["x"]},
             "ieee: must be text such as 00:12:4b:00:01:02:03:04, got an array"),
            ("report", {"ieee": "x", "cluster": "on_off", "attributes": "x"},
             "attributes: must be an object of attribute names and raw values, such as "
             "{\"on_off\": 1}, got 'x'"),
            ("noise", {}, "noise: rate is required (a number from 0 up to 1: the share of "
                          "bytes corrupted or lost, such as 0.01)"),
            ("slow", {"ms": "fast"}, "ms: must be a number of milliseconds from 0 to 60000, "
                                     "such as 200, got 'fast'"),
            ("stream", {"count": True}, "count: must be an integer: how many reports, got "
                                        "true or false")):
        with pytest.raises(SimError) as refused:
            check_action(action, args)
        assert str(refused.value) == message
    assert parse_address("127.0.0.1:4000") == ("127.0.0.1", 4000)
    assert parse_address("[::1]:4000") == ("::1", 4000)
    for bad in ("127.0.0.1", "host:port", ":80", "127.0.0.1:70000"):
        with pytest.raises(ValueError, match="not a host:port"):
            parse_address(bad)


def test_the_emulator_link_maps_actions_to_the_control_port(tmp_path: Path) -> None:
    async def main() -> None:
        emu = await Emulator(tmp_path / "ncp.json").start()
        link = EmulatorLink(f"127.0.0.1:{emu.control_port}")
        try:
            assert await link.call("kinds", {}) == [
                "button", "contact", "light", "motion", "plug", "rgb-light", "th-sensor",
                "water-meter"]
            # As the virtual radio says it: the control port's advice names its own `wait`,
            # which the hub's join does not take.
            with pytest.raises(SimError) as closed:
                await link.call("join", {"kind": "plug"})
            assert str(closed.value) == "permit join is closed"
            with pytest.raises(SimError, match="leave: ieee is required"):
                await link.call("leave", {})
            assert await link.call("list", {}) == []
            assert await link.call("noise", {"rate": 0.02}) == {"noise": 0.02}
            assert await link.call("slow", {"ms": 5}) == {"delay_ms": 5.0}
            with pytest.raises(SimError, match="noise rate must be"):
                await link.call("noise", {"rate": 1})
            with pytest.raises(SimError, match="ms: must be a number"):
                await link.call("slow", {"ms": "fast"})
            with pytest.raises(SimError, match=r"noise: rate is required \(.*such as 0\.01\)"):
                await link.call("noise", {})
            counters = await link.call("counters", {})
            assert (counters["noise"], counters["delay_ms"]) == (0.02, 5.0)
            assert await link.call("reset", {}) is None  # no host: the NCP restarts alone
            assert (await link.call("counters", {}))["resets"] == 1
            assert await link.call("unplug", {}) is None
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", emu.port), timeout=5).close()
            assert await link.call("replug", {}) is None
            socket.create_connection(("127.0.0.1", emu.port), timeout=5).close()
        finally:
            await link.close()
            await emu.stop()
        # The emulator is gone: the hub says so (503), it does not crash.
        with pytest.raises(SimUnavailable) as gone:
            await link.call("list", {})
        assert str(gone.value) == (
            f"the NCP emulator at {link.address} does not answer (nothing listens there: is "
            "the emulator running, and is zigbee.sim_control its control port?)")

    run_async(main())


def test_the_virtual_radio_has_no_wire_to_fault(tmp_path: Path) -> None:
    from gatewayd.zigbee.virtual.radio import VirtualNetwork

    async def main() -> None:
        link = VirtualLink(VirtualNetwork(tmp_path / "world.json"))
        for action, args in (("reset", {}), ("noise", {"rate": 0.01}), ("counters", {})):
            with pytest.raises(SimError, match="the virtual radio has no wire"):
                await link.call(action, args)
        with pytest.raises(SimError, match="not running"):
            await link.call("join", {"kind": "plug"})
        with pytest.raises(SimError, match="leave: ieee is required"):
            await link.call("leave", {})
        assert await link.call("list", {}) == []

    run_async(main())


def test_a_bug_in_the_virtual_radio_is_an_internal_error_with_details_in_the_log(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from gatewayd.zigbee.virtual.radio import VirtualNetwork

    network = VirtualNetwork(tmp_path / "world.json")

    def broken() -> None:
        raise AttributeError("'NoneType' object has no attribute 'secret_detail'")

    network.list = broken  # type: ignore[method-assign]
    with pytest.raises(SimError) as refused:
        run_async(VirtualLink(network).call("list", {}))
    assert str(refused.value) == "internal error in list; the details are in the hub's log"
    failed = [r for r in caplog.records if r.getMessage() == "zigbee sim list failed"]
    assert failed and "secret_detail" in str(failed[0].exc_info and failed[0].exc_info[1])


class Client:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def request(self, method: str, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        self.sent.append((method, endpoint, body))
        return {"action": body["action"], "result": None}


def test_gatewayctl_takes_a_bare_value_for_join_noise_and_slow() -> None:
    client = Client()
    for argv in (["noise", "0.01"], ["slow", "250"], ["join", "plug"],
                 ["join", "kind=light", "ieee=00:0d:6f:00:00:00:00:01"], ["reset"]):
        args = argparse.Namespace(action=argv[0], args=argv[1:], json=True)
        assert cmd_sim(args, client) == 0
    assert [body for _, _, body in client.sent] == [
        {"action": "noise", "rate": 0.01}, {"action": "slow", "ms": 250},
        {"action": "join", "kind": "plug"},
        {"action": "join", "kind": "light", "ieee": "00:0d:6f:00:00:00:00:01"},
        {"action": "reset"}]
    from gatewayd.ctl.client import CtlError

    with pytest.raises(CtlError, match="expected KEY=VALUE"):
        cmd_sim(argparse.Namespace(action="leave", args=["00:11"], json=True), client)
