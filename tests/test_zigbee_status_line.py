"""The Zigbee part of the hub's status line (gatewayd/zigbee/status_line.py): what
``systemctl status gatewayd`` and ``gatewayctl status`` say about the network."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from gatewayd.zigbee.status_line import StatusLine, describe
from tests.helpers import run_async


def test_the_line_says_the_radio_and_how_many_devices_are_in_each_state() -> None:
    assert describe("starting", []) == "zigbee: starting"
    assert describe("down: the radio on /dev/ttyUSB0 does not answer", ["ready"]) == (
        "zigbee: down: the radio on /dev/ttyUSB0 does not answer")
    assert describe("ready", []) == "zigbee: up, no devices"
    assert describe("ready", ["ready"]) == "zigbee: up, 1 device (1 ready)"
    # $state order (docs/interfaces.md §8.4), whatever order the devices come in:
    states = ["lost", "disconnected", "ready", "sleeping", "ready", "init", "alert", "ready"]
    assert describe("ready", states) == ("zigbee: up, 8 devices (3 ready, 1 sleeping, 1 init, "
                                         "1 disconnected, 1 alert, 1 lost)")
    assert describe("ready", ["ready", "odd"]) == "zigbee: up, 2 devices (1 ready, 1 odd)"


def test_a_turn_of_the_loop_sends_one_line_however_many_devices_changed_in_it() -> None:
    sent: list[str] = []
    children = {f"{n:016x}": SimpleNamespace(state="init") for n in range(200)}
    line = StatusLine(sent.append, children)

    async def main() -> None:
        line.hub_value("status", "ready")
        for child in children.values():
            child.state = "ready"
            line.changed()
        line.hub_value("device-count", 200)
        line.hub_value("channel", 15)  # not what the line says: no change
        assert sent == []  # nothing until the loop turns
        await asyncio.sleep(0)
        assert sent == ["zigbee: up, 200 devices (200 ready)"]
        line.hub_value("status", "down: radio connection lost (unplugged)")
        await asyncio.sleep(0)
        assert sent[1:] == ["zigbee: down: radio connection lost (unplugged)"]
        line.hub_value("permitjoin", 60)
        await asyncio.sleep(0)
        assert len(sent) == 2

    run_async(main())


def test_without_a_reader_no_line_is_made() -> None:
    children = {"a": SimpleNamespace(state="ready")}
    line = StatusLine(None, children)
    line.changed()
    line.send()  # nothing to send to: no error
    sent: list[str] = []
    StatusLine(sent.append, children).changed()  # no loop running: sent at once
    assert sent == ["zigbee: starting"]
