"""The Zigbee bridge (issue 6): children as devices, commands, recovery, restart, radios.

Most tests run twice: on the in-process virtual radio, and on unmodified bellows talking
to the EZSP NCP emulator over tcp:// (``tests/zigbee_radios.py``); a recording publisher
validates values exactly as the cloud link does. The acceptance test at the end runs the
whole path through a real mosquitto and a real :class:`CloudLink`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import logging
import os
import random
import re
import subprocess
import sys
import threading
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gatewayd import homie
from gatewayd.bridge import ZigbeeBridge
from gatewayd.config import ZigbeeConfig
from gatewayd.state import StateStore
from gatewayd.zigbee.coalesce import Coalescer
from gatewayd.zigbee.inputs import BridgeError, crc16_x25, parse_ieee, parse_install_code
from gatewayd.zigbee.new_network import NEW_NETWORK_FILE
from gatewayd.zigbee.radio import RadioError, start_controller
from gatewayd.zigbee.simlink import SimError
from tests.helpers import ctl, run_async
from tests.test_hardware import until
from tests.zigbee_radios import RADIOS, Radio, sim

pytestmark = pytest.mark.timeout(120)

HUB_ID = "aa-bb-cc-dd-ee-ff"
INSTALL_CODE = "83FED3407A939723A5C639B26916D505C3B5"  # the Zigbee spec's example
TIMEOUT = 0.5  # zigbee.command_timeout in these tests


run = functools.partial(run_async, timeout=40.0)


@pytest.fixture(params=RADIOS)
def radio(request: pytest.FixtureRequest, tmp_path: Path) -> Radio:
    return Radio(request.param, tmp_path, TIMEOUT)


class Recorder:
    """A ChildPublisher that keeps the devices like the cloud link does, and a log."""

    def __init__(self) -> None:
        self.devices: dict[str, homie.Device] = {}
        self.log: list[tuple[Any, ...]] = []
        self.lines: list[str] = []
        self.changed = asyncio.Event()

    def _note(self, *entry: Any) -> None:
        self.log.append(entry)
        self.changed.set()

    def add_device(self, device: homie.Device) -> None:
        self.devices[device.id] = device
        self._note("add", device.id, device.state)

    def remove_device(self, device_id: str) -> None:
        self.devices.pop(device_id, None)
        self._note("remove", device_id)

    def set_value(self, device_id: str, node_id: str, property_id: str, value: Any) -> None:
        self.devices[device_id].find(f"{node_id}/{property_id}").set(value)  # validates
        self._note("value", device_id, f"{node_id}/{property_id}", value)

    def set_state(self, device_id: str, state: str) -> None:
        self.devices[device_id].state = homie.check_state(state)
        self._note("state", device_id, state)

    def line(self, text: str) -> None:
        """The bridge's part of the hub's status line (systemd's STATUS=)."""
        self.lines.append(text)
        self._note("line", text)

    def states(self, device_id: str) -> list[str]:
        return [e[2] for e in self.log if e[0] in ("add", "state") and e[1] == device_id]

    def values(self, device_id: str, path: str) -> list[Any]:
        return [e[3] for e in self.log if e[0] == "value" and e[1:3] == (device_id, path)]

    def value(self, device_id: str, path: str) -> Any:
        return self.devices[device_id].find(path).value

    async def until(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Wait for a publication that makes ``predicate`` true (no polling sleeps)."""
        async with asyncio.timeout(timeout):
            while not (result := predicate()):
                self.changed.clear()
                await self.changed.wait()
        return result

    async def state(self, device_id: str, state: str, timeout: float = 5.0) -> None:
        await self.until(lambda: device_id in self.devices
                         and self.devices[device_id].state == state, timeout)


def dev_id(ieee: str) -> str:
    return "zigbee-" + ieee.replace(":", "")


async def started(radio: Radio, **kw: Any) -> tuple[ZigbeeBridge, Recorder]:
    pub = Recorder()
    hub = homie.Device(HUB_ID, "Test hub")
    pub.add_device(hub)
    options = {"retry_min": 0.05, "retry_max": 0.2, "shutdown_timeout": 2.0,
               "status_text": pub.line, **kw}
    bridge = ZigbeeBridge(options.pop("cfg", radio.config()), radio.state_dir, pub, hub=hub,
                          **radio.bridge_options(), **options)
    radio.bridges.append(bridge)
    await bridge.start()
    async with asyncio.timeout(10):
        await bridge.radio_up.wait()
    return bridge, pub


async def formed_anew(radio: Radio, old_extended_pan_id: Any, old_device: str
                     ) -> tuple[ZigbeeBridge, Recorder]:
    """The bridge started on ``radio`` after a full reset: a network of its own (another
    extended PAN id, published), without ``old_device`` (an IEEE address) or any other,
    the request to form it done."""
    bridge, pub = await started(radio)
    assert bridge.app is not None
    info = bridge.app.state.network_info
    assert info.extended_pan_id != old_extended_pan_id
    assert pub.value(HUB_ID, "zigbee/pan-id") == f"0x{int(info.pan_id):04x}"
    assert pub.value(HUB_ID, "zigbee/device-count") == 0
    assert dev_id(old_device) not in pub.devices and await sim(bridge, "list") == []
    assert not (radio.state_dir / NEW_NETWORK_FILE).exists()
    return bridge, pub


async def join(bridge: ZigbeeBridge, pub: Recorder, kind: str, state: str = "ready",
               timeout: float = 5.0) -> str:
    if not bridge.permit_remaining():
        await bridge.permit_join(60)
    ieee: str = await sim(bridge, "join", kind=kind)
    await pub.state(dev_id(ieee), state, timeout)
    return ieee


async def device_state(bridge: ZigbeeBridge, ieee: str, cluster: str) -> dict[str, Any]:
    """A simulated device's raw attributes of one server cluster, e.g. ``1:in:on_off``."""
    state: dict[str, Any] = (await sim(bridge, "state", ieee=ieee))["state"][cluster]
    return state


def on_set(pub: Recorder, device_id: str, path: str) -> Callable[[Any], Any]:
    handler = pub.devices[device_id].find(path).on_set
    assert handler is not None
    return handler


# ---- pure helpers ----------------------------------------------------------------------------

def test_importing_the_bridge_does_not_load_zigpy() -> None:
    code = ("import sys, gatewayd.bridge; "
            "sys.exit(1 if any(m.split('.')[0] in ('zigpy', 'bellows') for m in sys.modules) "
            "else 0)")
    assert subprocess.run([sys.executable, "-c", code], timeout=30).returncode == 0


def test_install_codes_are_crc_checked() -> None:
    assert crc16_x25(b"123456789") == 0x906E  # the CRC-16/X-25 check value
    code = parse_install_code("83FE D340 7A93 9723 A5C6 39B2 6916 D505 C3B5")
    assert code.hex().upper() == INSTALL_CODE
    with pytest.raises(BridgeError, match="checksum"):
        parse_install_code(INSTALL_CODE[:-1] + "4")
    with pytest.raises(BridgeError, match="bytes"):
        parse_install_code("83FED3407A93")
    with pytest.raises(BridgeError, match="hex"):
        parse_install_code("not a code")
    assert parse_ieee("0x000D6F000A9069E7") == "00:0d:6f:00:0a:90:69:e7"
    with pytest.raises(BridgeError, match="IEEE"):
        parse_ieee("00:0d:6f")


def test_coalescer_keeps_one_value_per_property() -> None:
    async def main() -> list[tuple[Any, Any]]:
        out: list[tuple[Any, Any]] = []
        done = asyncio.Event()

        def publish(key: Any, value: Any) -> None:
            out.append((key, value))
            if value == 999:
                done.set()

        co = Coalescer(publish, 0.05)
        for i in range(1000):
            co.put(("d", "meter", "power"), i)
            co.put(("d", "meter", "energy"), i)
            assert len(co.pending) <= 2
        await asyncio.wait_for(done.wait(), 2)
        return out

    out = run(main())
    assert len(out) == 4  # first value at once, latest after the interval, per property
    assert out[-1] in ((("d", "meter", "power"), 999), (("d", "meter", "energy"), 999))


def test_coalescer_hands_over_a_changed_reading_only() -> None:
    async def main() -> list[tuple[Any, Any]]:
        out: list[tuple[Any, Any]] = []
        co = Coalescer(lambda key, value: out.append((key, value)), 3600.0)
        key = ("d", "$telemetry", "signal")
        co.put_changed(key, 78)  # the first reading goes out at once
        for _ in range(100):
            co.put_changed(key, 78)
        assert co.pending == {}  # the same reading again: nothing waits
        co.put_changed(key, 39)
        co.put_changed(key, 39)
        assert co.pending == {key: 39}
        co.flush()
        co.put_changed(key, 39)  # as published
        assert co.pending == {}
        co.forget("d")
        co.put_changed(key, 39)  # a forgotten device starts afresh
        co.cancel()
        return out

    assert run(main()) == [(("d", "$telemetry", "signal"), 78),
                           (("d", "$telemetry", "signal"), 39),
                           (("d", "$telemetry", "signal"), 39)]


def test_coalescer_reads_a_soon_value_at_the_end_of_the_pass() -> None:
    """The reading is taken after the code that queued it has run on (zigpy sets the
    device's LQI after telling its listeners), once per pass for any number of puts."""
    async def main() -> tuple[list[tuple[Any, Any]], list[int]]:
        out: list[tuple[Any, Any]] = []
        reads: list[int] = []
        lqi = {"a": 10, "b": 20}

        def reader(name: str) -> Any:
            def read() -> int:
                reads.append(lqi[name])
                return lqi[name]
            return read

        def broken() -> int:
            raise ValueError("no reading")

        co = Coalescer(lambda key, value: out.append((key, value)), 0.0)
        co.put_changed_soon(("c", "$telemetry", "signal"), broken)  # logged, others go on
        for _ in range(50):
            co.put_changed_soon(("a", "$telemetry", "signal"), reader("a"))
            co.put_changed_soon(("b", "$telemetry", "signal"), reader("b"))
        lqi["a"] = 11  # what the device takes after the listeners were told
        co.forget("b")  # removed in the same pass: nothing is read or published for it
        assert out == []
        await asyncio.sleep(0)  # one pass of the loop
        co.put_changed_soon(("a", "$telemetry", "signal"), lambda: None)  # no reading yet
        co.cancel()  # stopped before the end of the pass: nothing read
        await asyncio.sleep(0)
        return out, reads

    out, reads = run(main())
    assert out == [(("a", "$telemetry", "signal"), 11)] and reads == [11]


# ---- children ---------------------------------------------------------------------------------

def test_join_interview_values_and_commands(radio: Radio) -> None:
    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            assert pub.value(HUB_ID, "zigbee/status") == "ready"
            assert pub.value(HUB_ID, "zigbee/channel") == 15
            assert pub.value(HUB_ID, "zigbee/pan-id").startswith("0x")
            plug = await join(bridge, pub, "plug")
            sensor = await join(bridge, pub, "th-sensor", "sleeping")
            button = await join(bridge, pub, "button", "sleeping")
            contact = await join(bridge, pub, "contact", "sleeping")
            light = await join(bridge, pub, "light")
            assert pub.value(HUB_ID, "zigbee/device-count") == 5

            p = dev_id(plug)
            assert pub.states(p)[0] == "init" and pub.states(p)[-1] == "ready"
            device = pub.devices[p]
            assert device.name == "gatewayd Virtual Plug"
            assert sorted(device.nodes) == ["meter", "switch", "zigbee"]
            on_off = device.find("switch/on-off")
            assert on_off.settable and on_off.datatype is homie.Datatype.BOOLEAN
            assert on_off.value is False and device.find("meter/voltage").value == 230.0
            assert await on_set(pub, p, "switch/on-off")(True) is True
            assert await device_state(bridge, plug, "1:in:on_off") == {"on_off": 1}
            await pub.until(lambda: pub.value(p, "switch/on-off") is True)  # it reported

            s = dev_id(sensor)
            assert pub.value(s, "sensor/temperature") == 21.5
            assert pub.value(s, "$telemetry/battery") == 100
            for cluster, values in (("temperature", {"measured_value": 2345}),
                                    ("humidity", {"measured_value": 5678}),
                                    ("power", {"battery_percentage_remaining": 101})):
                await sim(bridge, "report", ieee=sensor, cluster=cluster, attributes=values)
            await pub.until(lambda: pub.value(s, "sensor/humidity") == 56.78)
            assert pub.value(s, "sensor/temperature") == 23.45
            await pub.until(lambda: pub.value(s, "$telemetry/battery") == 51)  # 50.5 %
            assert isinstance(pub.value(s, "$telemetry/signal"), int)

            b = dev_id(button)
            await sim(bridge, "command", ieee=button, cluster="on_off", command="toggle")
            await sim(bridge, "command", ieee=button, cluster="level", command="step",
                      args={"step_mode": 1, "step_size": 20, "transition_time": 0})
            await pub.until(lambda: pub.values(b, "button/event")
                            == ["toggle", "brightness-down"])
            assert not pub.devices[b].find("button/event").retained

            c = dev_id(contact)
            assert (await device_state(bridge, contact, "1:in:ias_zone"))["zone_state"] == 1
            await sim(bridge, "report", ieee=contact, cluster="ias_zone",
                      attributes={"zone_status": 1})
            await pub.until(lambda: pub.value(c, "sensor/open") is True)

            li = dev_id(light)
            assert pub.devices[li].find("switch/color-temp").format == "2000:6535"
            assert await on_set(pub, li, "switch/level")(50) == 50
            assert await on_set(pub, li, "switch/color-temp")(4000) == 4000
            assert (await device_state(bridge, light, "11:in:level"))["current_level"] == 127
            with pytest.raises(homie.CommandError) as err:
                await on_set(pub, li, "switch/color-temp")(1000)  # the lamp refuses it
            assert err.value.code == homie.ERROR and "INVALID_VALUE" in err.value.message

            listing = {d["device_id"]: d for d in bridge.devices()}
            assert listing[p]["state"] == "ready" and listing[p]["lqi"] == 200
            assert listing[s]["power"] == "battery" and listing[s]["last_seen"] > 0
            status = bridge.status()
            assert status["radio"] == radio.kind and status["up"] is True
            if radio.kind == "bellows":  # what the emulated stick reports (EmberZNet 8.0)
                assert status["ncp_version"].startswith("8.0.") and "EZSP v14" in \
                    status["ncp_version"]
            else:
                assert status["ncp_version"] is None
            await bridge.stop()

    run(main())


# `gatewayctl zigbee sim` with a value, argument or install code the simulated device cannot
# take, and the answer, whole: what was wrong and what it must be, the same on both radios,
# never Python's conversion text ("invalid literal for int()", "Failed to convert ...").
STEP = {"step_mode": 1, "step_size": 20, "transition_time": 0}
REFUSED: list[tuple[str, str, dict[str, Any], str]] = [
    ("sensor", "report", {"cluster": "temperature", "attributes": {"measured_value": "warm"}},
     "temperature.measured_value must be an integer from -32768 to 32767, got 'warm'"),
    ("sensor", "report", {"cluster": "temperature", "attributes": {"measured_value": 99999}},
     "temperature.measured_value must be an integer from -32768 to 32767, got 99999"),
    ("sensor", "report", {"cluster": "temperature", "attributes": {"measured_value": 21.7}},
     "temperature.measured_value must be an integer from -32768 to 32767, got 21.7"),
    ("sensor", "report", {"cluster": "temperature", "attributes": {"measured_value": "2170"}},
     "temperature.measured_value must be an integer from -32768 to 32767, got '2170'"),
    ("sensor", "report", {"cluster": "temperature", "attributes": {"measured_value": True}},
     "temperature.measured_value must be an integer from -32768 to 32767, got true"),
    ("button", "command", {"cluster": "level", "command": "step",
                           "args": {**STEP, "step_mode": "1"}},
     "level.step: step_mode must be an integer from 0 to 255 or a name such as Up, Down, "
     "got '1'"),
    ("sensor", "report", {"cluster": "basic", "attributes": {"model": None}},
     "basic.model must be text, got null"),
    ("sensor", "report", {"cluster": "power",
                          "attributes": {"battery_percentage_remaining": [50]}},
     "power.battery_percentage_remaining must be an integer from 0 to 255, got an array"),
    ("contact", "report", {"cluster": "ias_zone", "attributes": {"zone_status": -1}},
     "ias_zone.zone_status must be an integer from 0 to 65535, got -1"),
    ("button", "command", {"cluster": "level", "command": "step",
                           "args": {**STEP, "step_size": 300}},
     "level.step: step_size must be an integer from 0 to 255, got 300"),
    ("button", "command", {"cluster": "level", "command": "step",
                           "args": {**STEP, "step_mode": "sideways"}},
     "level.step: step_mode must be an integer from 0 to 255 or a name such as Up, Down, "
     "got 'sideways'"),
    ("button", "command", {"cluster": "level", "command": "step",
                           "args": {"step_mode": 1, "step_size": 20}},
     "level.step: transition_time is required (an integer from 0 to 65535)"),
    ("button", "command", {"cluster": "level", "command": "step", "args": {**STEP, "speed": 2}},
     "level.step takes no speed (it takes step_mode, step_size, transition_time, "
     "options_mask, options_override)"),
    ("button", "command", {"cluster": "on_off", "command": "toggle", "args": {"times": 2}},
     "on_off.toggle takes no times (it takes no arguments)"),
    ("new", "stream", {"count": 10, "cluster": "basic", "attribute": "model"},
     "basic.model is text; a stream sends numbered integers: choose an integer attribute"),
    ("new", "join", {"kind": "plug", "install_code": "not hex"},
     "install_code: an install code is hex digits, such as "
     "83FED3407A939723A5C639B26916D505C3B5"),
    ("new", "join", {"kind": "plug", "install_code": INSTALL_CODE[:12]},
     "install_code: an install code has 6, 8, 12 or 16 bytes plus a 2-byte CRC; this one "
     "has 6 bytes"),
    ("new", "join", {"kind": "plug", "install_code": INSTALL_CODE[:-1] + "0"},
     "install_code: the install code's checksum (last 4 digits) does not match: check for "
     "a typo"),
]


def test_zigbee_sim_lists_devices_alike_on_both_radios(radio: Radio) -> None:
    """An app developer switching radios sees the same listing: nwk as 0x-hex text."""
    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            plug = await join(bridge, pub, "plug")
            (listed,) = [d for d in await sim(bridge, "list") if d["ieee"] == plug]
            assert re.fullmatch(r"0x[0-9A-F]{4}", listed["nwk"]), listed["nwk"]
            assert int(listed["nwk"], 16) == (await sim(bridge, "state", ieee=plug))["nwk"]
            await bridge.stop()

    run(main())


def test_values_and_arguments_a_simulated_device_cannot_take_are_named(radio: Radio) -> None:
    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            devices = {"sensor": await join(bridge, pub, "th-sensor", "sleeping"),
                       "contact": await join(bridge, pub, "contact", "sleeping"),
                       "button": await join(bridge, pub, "button", "sleeping"),
                       "new": None}
            before = await sim(bridge, "list")
            for device, action, args, message in REFUSED:
                ieee = {"ieee": devices[device]} if devices[device] else {}
                with pytest.raises(SimError) as refused:
                    await sim(bridge, action, **ieee, **args)
                assert str(refused.value) == message
            assert await sim(bridge, "list") == before  # nothing changed, nobody joined
            await bridge.stop()

    run(main())


def test_silenced_device_times_out_and_is_disconnected(radio: Radio) -> None:
    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            quiet = await join(bridge, pub, "plug")
            await sim(bridge, "silence", ieee=quiet)

            with pytest.raises(homie.CommandError) as err:
                await on_set(pub, dev_id(quiet), "switch/on-off")(True)
            assert err.value.code == homie.TIMEOUT
            assert f"within {TIMEOUT:g} s" in err.value.message
            await pub.state(dev_id(quiet), "disconnected")

            await sim(bridge, "silence", ieee=quiet, silent=False)
            await sim(bridge, "report", ieee=quiet, cluster="electrical_measurement",
                      attributes={"active_power": 55})
            await pub.state(dev_id(quiet), "ready")  # heard again
            await bridge.stop()

    run(main())


def test_a_silent_device_holds_nobody_up(radio: Radio) -> None:
    """While one device's command waits for its timeout, another device's command is
    answered: an ordering of events (the timeout is far longer than any answer)."""
    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio, cfg=radio.config(command_timeout=3600.0))
            quiet = await join(bridge, pub, "plug")
            other = await join(bridge, pub, "plug")
            await sim(bridge, "silence", ieee=quiet)
            waiting = asyncio.ensure_future(on_set(pub, dev_id(quiet), "switch/on-off")(True))
            assert await on_set(pub, dev_id(other), "switch/on-off")(True) is True
            assert not waiting.done(), "the silent device's command is still waiting"
            waiting.cancel()
            await bridge.stop()

    run(main())


def test_chatty_device_is_coalesced(radio: Radio) -> None:
    """300 reports within one coalescing interval give at most the first value and the
    latest. The interval is an hour and the test ends it (the coalescer's flush), so the
    count does not depend on how fast the reports arrive."""
    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio, min_interval=3600.0)
            plug = await join(bridge, pub, "plug")
            p = dev_id(plug)
            before = len(pub.values(p, "meter/power"))
            # 300 reports as fast as the radio takes them (the load generator).
            await sim(bridge, "stream", count=300, offset=1)
            key = (p, "meter", "power")
            # A condition, polled with a timeout: the coalescer signals nothing while it waits.
            await until(lambda: bridge.coalescer.pending.get(key) == 30.0, 30.0,
                        "the 300th report to reach the coalescer")
            # One slot per property (the power and the link quality), whatever the rate.
            assert set(bridge.coalescer.pending) <= {key, (p, "$telemetry", "signal")}
            bridge.coalescer.flush()  # the interval is over
            published = pub.values(p, "meter/power")[before:]
            assert published[-1] == 30.0 and len(published) <= 2, published
            await bridge.stop()

    run(main())


def test_link_quality_is_published_when_it_changes(radio: Radio) -> None:
    """Every report carries the link quality; a subscriber gets it when it moves, not once
    per report (half of a busy network's publications were the same LQI again)."""
    async def main() -> None:
        async with radio:
            # no coalescing: every report would publish its link quality
            bridge, pub = await started(radio, min_interval=0.0)
            try:
                plug = await join(bridge, pub, "plug")
                p = dev_id(plug)
                before = len(pub.values(p, "$telemetry/signal"))
                await sim(bridge, "stream", count=100, offset=1)
                await pub.until(lambda: pub.value(p, "meter/power") == 10.0, 30)
                steady = pub.values(p, "$telemetry/signal")[before:]
                assert len(steady) <= 1, steady  # 100 reports: no repeated link quality
                await sim(bridge, "set_link", ieee=plug, lqi=100)
                # one report: its own link quality goes out, not the one before it
                await sim(bridge, "stream", count=1, offset=101)
                await pub.until(lambda: pub.value(p, "$telemetry/signal") == 39, 30)
                assert pub.values(p, "$telemetry/signal")[before:] == [*steady, 39]
            finally:
                await bridge.stop()

    run(main())


def test_permit_join_install_code_and_remove(radio: Radio) -> None:
    ieee = "00:0d:6f:00:0a:90:69:e7"

    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio, cfg=radio.config(permit_join_max=120))
            assert await bridge.permit_join() == 120  # default: the configured maximum
            assert pub.value(HUB_ID, "zigbee/permitjoin") == 120
            assert radio.permit_open
            assert await on_set(pub, HUB_ID, "zigbee/permitjoin")(0) == 0
            assert not radio.permit_open and bridge.permit_remaining() == 0

            with pytest.raises(homie.CommandError, match="checksum"):
                await on_set(pub, HUB_ID, "zigbee/install-code")(
                    f"{ieee} {INSTALL_CODE[:-1]}0")
            assert await on_set(pub, HUB_ID, "zigbee/install-code")(
                f"{ieee} {INSTALL_CODE}") == ieee
            # As printed on a label, in groups of four.
            spaced = " ".join(INSTALL_CODE[i:i + 4] for i in range(0, len(INSTALL_CODE), 4))
            assert await on_set(pub, HUB_ID, "zigbee/install-code")(f"{ieee} {spaced}") == ieee
            with pytest.raises(homie.CommandError, match="expected '<ieee> <install code>'"):
                await on_set(pub, HUB_ID, "zigbee/install-code")(ieee)
            assert await sim(bridge, "join", kind="plug", ieee=ieee,
                             install_code=INSTALL_CODE) == ieee
            await pub.state(dev_id(ieee), "ready")

            assert await on_set(pub, HUB_ID, "zigbee/remove")(ieee) == ieee
            await pub.until(lambda: ("remove", dev_id(ieee)) in pub.log)
            assert dev_id(ieee) not in {d["device_id"] for d in bridge.devices()}
            await asyncio.wait_for(radio.left.wait(), 5)  # zigpy told the device to leave
            assert ieee not in {d["ieee"] for d in await sim(bridge, "list")}
            with pytest.raises(BridgeError, match="no Zigbee device"):
                await bridge.remove(ieee)
            await bridge.stop()

    run(main())


def test_a_radio_that_fails_a_request_is_a_refusal_without_the_librarys_text(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    import zigpy.exceptions

    radio = Radio("virtual", tmp_path, TIMEOUT)  # the failures are made up: one radio is enough
    library_text = "Failed to deliver packet: <EmberStatus.NETWORK_BUSY: 161>"

    def failing(exc: BaseException) -> Callable[..., Any]:
        async def fail(*args: Any, **kwargs: Any) -> None:
            raise exc
        return fail

    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            ieee = await join(bridge, pub, "plug")
            assert bridge.app is not None
            monkeypatch.setattr(bridge.app, "permit", failing(
                zigpy.exceptions.DeliveryError(library_text)))
            monkeypatch.setattr(bridge.app, "permit_with_link_key", failing(TimeoutError()))
            monkeypatch.setattr(bridge.app, "remove", failing(
                zigpy.exceptions.ControllerException(library_text)))
            for action, what in ((bridge.permit_join(60), "open joining"),
                                 (bridge.permit_join(0), "close joining"),
                                 (bridge.add_install_code(ieee, INSTALL_CODE),
                                  "take the install code"),
                                 (bridge.remove(ieee), "remove the device")):
                with pytest.raises(BridgeError) as refused:
                    await action
                assert (refused.value.code, refused.value.http_status) == ("UNREACHABLE", 409)
                assert str(refused.value) == (f"the Zigbee radio failed to {what}; try again "
                                              "in a moment")
            with pytest.raises(homie.CommandError) as set_refused:  # the hub node's /set
                await on_set(pub, HUB_ID, "zigbee/permitjoin")(60)
            assert set_refused.value.code == "UNREACHABLE"
            assert library_text not in set_refused.value.message
            await bridge.stop()

    run(main())
    assert library_text in caplog.text  # the details are in the log


def test_a_value_outside_its_format_is_not_published_and_said_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A humidity sensor that overshoots (100.5 %) does so at every report: the value is
    not published (as Zigbee2MQTT does not), and the vendor's log says why once, not at
    DEBUG where nobody looks nor at every report."""
    caplog.set_level(logging.DEBUG, logger="gatewayd.zigbee.alerts")
    radio = Radio("virtual", tmp_path, TIMEOUT)

    def said(level: int) -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.levelno == level and "humidity" in r.getMessage()]

    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            sensor = await join(bridge, pub, "th-sensor", "sleeping")
            s = dev_id(sensor)
            # One at a time: reports closer than the coalescing window are one publication.
            for raw, level in ((10050, logging.WARNING), (10100, logging.DEBUG)):
                await sim(bridge, "report", ieee=sensor, cluster="humidity",
                          attributes={"measured_value": raw})
                await until(lambda level=level: said(level), what=f"the {raw} report")
            await sim(bridge, "report", ieee=sensor, cluster="humidity",
                      attributes={"measured_value": 9950})
            await pub.until(lambda: pub.value(s, "sensor/humidity") == 99.5)
            assert not {100.5, 101.0} & set(pub.values(s, "sensor/humidity"))
            assert said(logging.WARNING) == [
                f"zigbee: {s}/sensor/humidity: humidity: 100.5 is outside the range 0:100; "
                "not published (its later values outside it are logged at debug level)"]
            await bridge.stop()

    run(main())


def test_a_device_interviewed_again_is_counted_init_until_it_is_set_up(radio: Radio) -> None:
    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            plug = await join(bridge, pub, "plug")
            await pub.until(lambda: pub.lines[-1] == "zigbee: up, 1 device (1 ready)")
            mark = len(pub.lines)
            bridge.device_initialized(bridge.children[plug].device)  # zigpy: interviewed
            await pub.until(lambda: "zigbee: up, 1 device (1 init)" in pub.lines[mark:])
            await pub.until(lambda: pub.lines[-1] == "zigbee: up, 1 device (1 ready)")
            await bridge.stop()

    run(main())


def test_device_leaving_is_lost(radio: Radio) -> None:
    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            sensor = await join(bridge, pub, "motion", "sleeping")
            await sim(bridge, "leave", ieee=sensor)
            await pub.state(dev_id(sensor), "lost")
            # A device that left is still counted, as what it is now.
            await pub.until(lambda: pub.lines[-1] == "zigbee: up, 1 device (1 lost)")
            await bridge.stop()

    run(main())


def test_a_device_that_left_is_still_lost_after_a_restart_until_it_rejoins(
        radio: Radio) -> None:
    """zigpy keeps a device that left in zigbee.db; before, a restart brought it back as
    ready (a plug whose /set then timed out) instead of lost."""
    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            plug = await join(bridge, pub, "plug")
            await sim(bridge, "leave", ieee=plug)
            await pub.state(dev_id(plug), "lost")
            await bridge.stop()

            bridge, pub = await started(radio)
            await pub.state(dev_id(plug), "lost")
            assert "ready" not in pub.states(dev_id(plug))
            with pytest.raises(homie.CommandError) as refused:
                await on_set(pub, dev_id(plug), "switch/on-off")(True)
            assert refused.value.code == "GONE"
            await pub.until(lambda: pub.lines[-1] == "zigbee: up, 1 device (1 lost)")

            await bridge.permit_join(60)
            await sim(bridge, "join", kind="plug", ieee=plug)  # back: no longer lost
            await pub.state(dev_id(plug), "ready")
            await bridge.stop()
            bridge, pub = await started(radio)
            await pub.state(dev_id(plug), "ready")
            await bridge.stop()

    run(main())


def test_a_device_that_left_and_is_interviewed_again_is_back_after_a_restart(
        radio: Radio) -> None:
    """zigpy re-interviews a known device that rejoins with its old address without
    telling the bridge it joined: being set up again is what says it is back."""
    if radio.kind != "virtual":
        pytest.skip("the emulator's air no longer has the device that left, so it cannot "
                    "answer an interview; a rejoin through the air: the test above")

    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            plug = await join(bridge, pub, "plug")
            await sim(bridge, "leave", ieee=plug)
            await pub.state(dev_id(plug), "lost")
            bridge.device_initialized(bridge.children[plug].device)  # zigpy: interviewed
            await pub.state(dev_id(plug), "ready")
            await bridge.stop()
            bridge, pub = await started(radio)
            await pub.state(dev_id(plug), "ready")
            assert "lost" not in pub.states(dev_id(plug))
            await bridge.stop()

    run(main())


def test_availability_pings_mains_devices_and_ages_battery_ones(radio: Radio) -> None:
    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio, availability_interval=0.05, mains_timeout=0.1,
                                        battery_timeout=0.3)
            plug = await join(bridge, pub, "plug")
            sensor = await join(bridge, pub, "th-sensor", "sleeping")
            await sim(bridge, "silence", ieee=plug)
            await pub.state(dev_id(plug), "disconnected")  # the ping went unanswered
            await pub.state(dev_id(sensor), "disconnected")  # not heard for battery_timeout
            await sim(bridge, "silence", ieee=plug, silent=False)
            await pub.state(dev_id(plug), "ready")  # the next ping is answered
            await sim(bridge, "report", ieee=sensor, cluster="humidity",
                      attributes={"measured_value": 3000})
            await pub.state(dev_id(sensor), "sleeping")
            await bridge.stop()

    run(main())


def test_full_reset_forgets_the_network(radio: Radio) -> None:
    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            plug = await join(bridge, pub, "plug")
            pan = pub.value(HUB_ID, "zigbee/pan-id")
            await bridge.reset(full=False)
            assert dev_id(plug) in pub.devices  # a normal reset keeps the Zigbee network
            mark, log_mark = len(pub.lines), len(pub.log)
            await bridge.reset(full=True)
            assert ("remove", dev_id(plug)) in pub.log and not bridge.devices()
            async with asyncio.timeout(10):
                await bridge.radio_up.wait()
            # The status line: no "up" while the new network is formed, then up and empty.
            await pub.until(lambda: pub.lines[-1] == "zigbee: up, no devices")
            after = pub.lines[mark:]
            assert "zigbee: starting" in after[:after.index("zigbee: up, no devices")], after
            # The cloud sees the same: zigbee/status is "starting" until the network is up.
            statuses = [e[3] for e in pub.log[log_mark:]
                        if e[0] == "value" and e[1:3] == (HUB_ID, "zigbee/status")]
            assert statuses[-2:] == ["starting", "ready"], statuses
            assert pub.value(HUB_ID, "zigbee/pan-id") != pan
            assert pub.value(HUB_ID, "zigbee/device-count") == 0
            assert await sim(bridge, "list") == []
            await bridge.stop()

    run(main())


def test_an_offline_full_reset_has_the_radio_form_a_new_network_at_the_next_start(
        radio: Radio) -> None:
    """`gatewayctl reset --full` with the daemon stopped: the network lives on the radio, not
    in zigbee.db, so at the next start the radio leaves it and forms a new one, as the
    daemon's own full reset does. Forgetting the file alone brought the old network back with
    its devices still joined: their reports dropped, joining one again refused."""
    async def main() -> None:
        async with radio:
            StateStore(radio.state_dir).open(device_id=HUB_ID, mac="aa:bb:cc:dd:ee:ff")
            bridge, pub = await started(radio)
            plug = await join(bridge, pub, "plug")
            assert bridge.app is not None
            old = bridge.app.state.network_info.extended_pan_id
            await bridge.stop()
            reset = await asyncio.to_thread(
                ctl, "--socket", str(radio.state_dir / "no.sock"), "--json", "reset",
                "--full", "--state-dir", str(radio.state_dir))
            answer = json.loads(reset.stdout)
            assert answer["new_network"] and "zigbee.db" in answer["forgotten"]

            bridge, pub = await formed_anew(radio, old, plug)
            assert bridge.app is not None
            info = bridge.app.state.network_info  # the new network, kept across a restart
            await bridge.permit_join(60)
            assert await sim(bridge, "join", kind="plug", ieee=plug) == plug
            await pub.state(dev_id(plug), "ready")
            await bridge.stop()

            # Formed once: the next start finds the new network and the device on it.
            bridge, pub = await started(radio)
            assert bridge.app is not None
            assert bridge.app.state.network_info.extended_pan_id == info.extended_pan_id
            await pub.state(dev_id(plug), "ready")
            await bridge.stop()

    run(main())


# ---- recovery and restart ---------------------------------------------------------------------

def test_unplugged_radio_recovers_without_restart(radio: Radio) -> None:
    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            lines = pub.lines  # the hub's status line (systemd's STATUS=), Zigbee part
            ups: list[int] = []  # the daemon settles its heap here (gatewayd/runtime/heap.py)
            bridge.up_hooks.append(lambda: ups.append(len(bridge.children)))
            await pub.until(lambda: lines[-1:] == ["zigbee: up, no devices"], 5)
            plug = await join(bridge, pub, "plug")
            sensor = await join(bridge, pub, "th-sensor", "sleeping")
            await pub.until(lambda: lines[-1] == "zigbee: up, 2 devices (1 ready, 1 sleeping)", 5)
            await sim(bridge, "unplug")
            await pub.state(dev_id(plug), "disconnected")
            await pub.state(dev_id(sensor), "disconnected")
            assert pub.value(HUB_ID, "zigbee/status").startswith("down:")
            await pub.until(lambda: lines[-1] == f"zigbee: {pub.value(HUB_ID, 'zigbee/status')}",
                            5)
            with pytest.raises(homie.CommandError) as err:
                await on_set(pub, dev_id(plug), "switch/on-off")(True)
            assert err.value.code == "UNREACHABLE"
            # The first retry after the loss: a bounded shutdown, then the refusal.
            await pub.until(lambda: radio.unplugged_error in (bridge.last_error or ""), 20)

            await sim(bridge, "replug")
            await pub.state(dev_id(plug), "ready")
            await pub.state(dev_id(sensor), "sleeping")
            assert pub.value(HUB_ID, "zigbee/status") == "ready"
            await pub.until(lambda: lines[-1] == "zigbee: up, 2 devices (1 ready, 1 sleeping)", 5)
            assert ups == [2]  # once back up, with both devices restored
            assert await on_set(pub, dev_id(plug), "switch/on-off")(True) is True
            assert await device_state(bridge, plug, "1:in:on_off") == {"on_off": 1}
            await bridge.stop()

    run(main())


def test_a_radio_library_that_never_lets_go_does_not_keep_the_radio_down(
        tmp_path: Path) -> None:
    """bellows' disconnect can wait forever when its serial thread's loop stopped in the
    wrong moment (seen under load after a TCP drop). The bridge bounds the shutdown, closes
    zigbee.db itself and starts the radio again; a daemon stop is not held up either."""
    async def closed(threads: set[threading.Thread]) -> bool:
        for thread in threads:
            await asyncio.to_thread(thread.join, 10)
        return not any(t.is_alive() for t in threads)

    async def main() -> None:
        radio = Radio("virtual", tmp_path)
        baseline = set(_sqlite_threads())
        async with radio:
            bridge, pub = await started(radio, shutdown_timeout=0.2)
            plug = await join(bridge, pub, "plug")
            first_db = set(_sqlite_threads()) - baseline
            assert len(first_db) == 1
            hung = asyncio.Event()

            async def never_returns() -> None:  # the fault under test
                hung.set()
                await asyncio.Event().wait()

            first = bridge.app
            assert first is not None
            first.disconnect = never_returns  # type: ignore[method-assign]
            await sim(bridge, "unplug")
            await pub.state(dev_id(plug), "disconnected")
            await hung.wait()
            await sim(bridge, "replug")
            await pub.state(dev_id(plug), "ready")  # the radio came back
            assert bridge.app is not first
            assert await closed(first_db), "the stuck app's zigbee.db was not closed"
            second_db = set(_sqlite_threads()) - baseline - first_db
            bridge.app.disconnect = never_returns  # type: ignore[union-attr,method-assign]
            await bridge.stop()  # bounded too
            assert await closed(second_db), "zigbee.db stayed open after a stop"

    run(main())


def _sqlite_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate()
            if t.is_alive() and "_connection_worker_thread" in t.name]


def test_a_stop_while_zigbee_db_opens_leaves_no_thread_behind(tmp_path: Path) -> None:
    """A stop (SIGTERM) that lands while zigpy is opening zigbee.db: the database is closed
    anyway. Its SQLite thread is not a daemon thread, so one left running keeps the whole
    daemon from exiting (the chaos suite's kill -9 campaign found a hub that hung 30 s).
    The stop lands at each turn of the loop in turn, from the thread's start on."""
    async def stop_after(turns: int, state_dir: Path) -> bool:
        """Start, cancel ``turns`` turns after the database's thread exists; whether the
        cancel landed while the database was still opening."""
        before = set(_sqlite_threads())
        cfg = ZigbeeConfig(enabled=True, radio="virtual", command_timeout=TIMEOUT)
        starting = asyncio.ensure_future(start_controller(cfg, state_dir))
        for _ in range(100_000):  # turns of the loop, not time: the thread's start
            if set(_sqlite_threads()) - before or starting.done():
                break
            await asyncio.sleep(0)
        for _ in range(turns):
            await asyncio.sleep(0)
        opening = not starting.done() and not any(
            frame.f_code.co_name == "startup" for frame in _frames(starting))
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            app = await starting
            await app.shutdown()
        for thread in set(_sqlite_threads()) - before:
            await asyncio.to_thread(thread.join, 10)
            assert not thread.is_alive(), f"zigbee.db's thread outlived a stop {turns} turns in"
        return opening

    async def main() -> None:
        landed = 0
        for turns in range(200):
            (tmp_path / str(turns)).mkdir()
            if await stop_after(turns, tmp_path / str(turns)):
                landed += 1
            elif landed:
                break  # past the open: the rest is startup(), which closed it already
        assert landed > 5, "no stop landed while the database was opening"

    gc.disable()  # as in the daemon, an abandoned connection is not collected (and closed)
    try:
        run(main(), timeout=120)
    finally:
        gc.enable()


def _frames(task: asyncio.Future[Any]) -> list[Any]:
    """The task's coroutine frames, innermost last (Task.get_stack gives only one)."""
    frames = []
    coro: Any = task.get_coro()  # type: ignore[attr-defined]
    while coro is not None and getattr(coro, "cr_frame", None) is not None:
        frames.append(coro.cr_frame)
        coro = coro.cr_await
    return frames


def test_restart_restores_children_from_zigbee_db_without_interview(radio: Radio) -> None:
    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            plug = await join(bridge, pub, "plug")
            sensor = await join(bridge, pub, "th-sensor", "sleeping")
            await on_set(pub, dev_id(plug), "switch/on-off")(True)
            await sim(bridge, "report", ieee=sensor, cluster="temperature",
                      attributes={"measured_value": 1999})
            await pub.until(lambda: pub.value(dev_id(sensor), "sensor/temperature") == 19.99)
            await bridge.stop()

            radio.zdo.clear()
            bridge, pub = await started(radio)
            await pub.state(dev_id(plug), "ready")
            await pub.state(dev_id(sensor), "sleeping")
            assert "init" not in pub.states(dev_id(plug))
            assert pub.value(dev_id(plug), "switch/on-off") is True  # zigpy's cache in the db
            assert pub.value(dev_id(sensor), "sensor/temperature") == 19.99
            assert pub.value(dev_id(sensor), "$telemetry/battery") == 100
            # No Node_Desc/Simple_Desc/Active_EP requests (interview), no Bind_req (setup).
            assert not {0x0002, 0x0004, 0x0005, 0x0021} & set(radio.zdo)
            assert await on_set(pub, dev_id(plug), "switch/on-off")(False) is False
            await bridge.stop()

    run(main())


# ---- real radios ---------------------------------------------------------------------------------

def test_missing_serial_port_is_reported_and_retried(tmp_path: Path) -> None:
    port = tmp_path / "ttyUSB-missing"

    async def main() -> None:
        pub = Recorder()
        hub = homie.Device(HUB_ID, "Test hub")
        pub.add_device(hub)
        cfg = ZigbeeConfig(enabled=True, radio="bellows", device=str(port))
        bridge = ZigbeeBridge(cfg, tmp_path, pub, hub=hub, retry_min=0.05, retry_max=0.1)
        await bridge.start()
        status = await pub.until(lambda: [v for v in pub.values(HUB_ID, "zigbee/status")
                                          if v.startswith("down")])
        assert f"serial port {port} does not exist" in status[0]
        assert "zigbee.device" in status[0]
        assert bridge.status()["up"] is False and "does not exist" in bridge.status()["error"]
        with pytest.raises(BridgeError, match="not running"):
            await bridge.permit_join(10)
        await bridge.stop()

    run(main())


@pytest.mark.parametrize(("content", "why"), [
    ('{"radio_ieee": 7', "(it is not JSON)"),
    ("{}", "('radio_ieee' is missing)"),
    ('{"radio_ieee": "zz"}', "(not an IEEE address: 'zz')"),
    ("[1]", "(its entries do not have the form the virtual radio writes)"),
])
def test_a_damaged_virtual_world_file_is_named_in_the_hubs_zigbee_status(
        tmp_path: Path, content: str, why: str) -> None:
    """The virtual radio's world file is read by the bridge that owns the network (no
    process-wide registry): a damaged one reads as such, in our words, not as a radio
    failing to start."""
    (tmp_path / "zigbee-virtual.json").write_text(content)

    async def main() -> None:
        pub = Recorder()
        hub = homie.Device(HUB_ID, "Test hub")
        pub.add_device(hub)
        bridge = ZigbeeBridge(ZigbeeConfig(enabled=True, radio="virtual"), tmp_path, pub,
                              hub=hub, retry_min=0.05, retry_max=0.1)
        try:
            status = await zigbee_status_down(bridge, pub)
        finally:
            await bridge.stop()
        assert f"zigbee-virtual.json is not a virtual radio world file {why}; delete it to " \
            "start an empty one" in status
        assert bridge.status()["up"] is False

    run(main())


def test_the_virtual_radio_and_zigbee_sim_drive_one_network_the_bridge_loads(
        tmp_path: Path) -> None:
    """As the daemon makes it (no network given): what `zigbee sim` joins, the radio hears,
    across a radio restart too; the world file is read once."""
    async def main() -> None:
        pub = Recorder()
        hub = homie.Device(HUB_ID, "Test hub")
        pub.add_device(hub)
        bridge = ZigbeeBridge(ZigbeeConfig(enabled=True, radio="virtual"), tmp_path, pub,
                              hub=hub, retry_min=0.05, retry_max=0.2)
        await bridge.start()
        try:
            await asyncio.wait_for(bridge.radio_up.wait(), 10)
            network = bridge.virtual
            plug = await join(bridge, pub, "plug")
            await sim(bridge, "unplug")
            await pub.state(dev_id(plug), "disconnected")
            await sim(bridge, "replug")
            await pub.state(dev_id(plug), "ready")
            assert bridge.virtual is network
        finally:
            await bridge.stop()

    run(main())


async def zigbee_status_down(bridge: ZigbeeBridge, pub: Recorder) -> str:
    """The first ``down: ...`` the hub's Zigbee status says, the supervisor still running."""
    await bridge.start()
    status = await pub.until(lambda: [v for v in pub.values(HUB_ID, "zigbee/status")
                                      if v.startswith("down")])
    assert bridge._supervisor is not None and not bridge._supervisor.done()
    return str(status[0])


def test_a_world_file_that_cannot_be_read_or_a_missing_virtual_radio_is_a_status(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a supervisor that died, a status stuck at "starting" and a stop that raises."""
    world = tmp_path / "world" / "zigbee-virtual.json"
    world.mkdir(parents=True)  # a directory where the file should be
    cfg = ZigbeeConfig(enabled=True, radio="virtual")

    async def main(state_dir: Path) -> str:
        pub = Recorder()
        hub = homie.Device(HUB_ID, "Test hub")
        pub.add_device(hub)
        bridge = ZigbeeBridge(cfg, state_dir, pub, hub=hub, retry_min=0.05, retry_max=0.1)
        try:
            return await zigbee_status_down(bridge, pub)
        finally:
            await bridge.stop()

    assert run(main(world.parent)) == (f"down: cannot read the virtual radio's world file "
                                      f"{world}: Is a directory")
    monkeypatch.setitem(sys.modules, "gatewayd.zigbee.virtual.radio", None)  # not installed
    assert run(main(tmp_path)).startswith("down: zigbee.radio = 'virtual' needs the "
                                          "'gatewayd[zigbee]' package, which is not installed")


def test_radio_errors_are_explained(tmp_path: Path) -> None:
    import importlib.util
    import socket

    from gatewayd.zigbee.radio import RadioError, RadioUnavailable, start_controller

    with socket.socket() as sock:  # a port where nothing listens
        sock.bind(("127.0.0.1", 0))
        url = f"socket://127.0.0.1:{sock.getsockname()[1]}"

    async def main() -> None:
        cfg = ZigbeeConfig(enabled=True, radio="bellows", device=url)
        with pytest.raises(RadioUnavailable, match=f"nothing listens at {url}"):
            await start_controller(cfg, tmp_path)
        if importlib.util.find_spec("zigpy_znp") is None:
            cfg = ZigbeeConfig(enabled=True, radio="znp", device="/dev/ttyUSB0")
            with pytest.raises(RadioError, match="needs the 'zigpy-znp' package"):
                await start_controller(cfg, tmp_path)

    run(main())


def test_a_radio_that_fails_oddly_is_reported_without_the_librarys_text(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Something that accepts the connection and closes it makes bellows fail with an
    AttributeError; the hub's Zigbee status (which the cloud shows) says what to check,
    and the library's text goes to the log only."""

    async def main() -> None:
        async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        url = f"socket://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            cfg = ZigbeeConfig(enabled=True, radio="bellows", device=url)
            with pytest.raises(RadioError) as info:
                await asyncio.wait_for(start_controller(cfg, tmp_path), 30)
        finally:
            server.close()
        message = str(info.value)
        assert message.startswith(f"the bellows radio on {url} failed to start")
        assert "zigbee.radio" in message and "log" in message
        assert "Error" not in message and "NoneType" not in message
        assert "send_reset" in str(info.value.details), "the details go with it, for the log"

    run(main())


def test_a_radio_failure_logs_its_details_once_not_at_every_retry(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The journal gets the library's traceback with the first failure; the retries that
    fail the same way add nothing (they came every minute, each with its traceback), nor
    does the cloud get the same zigbee/status again at each retry."""

    async def main() -> None:
        tries: list[int] = []
        third = asyncio.Event()

        async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            tries.append(1)
            if len(tries) == 3:  # the second failure has been handled (one at a time)
                third.set()
            writer.close()

        server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        url = f"socket://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        cfg = ZigbeeConfig(enabled=True, radio="bellows", device=url)
        pub = Recorder()
        hub = homie.Device(HUB_ID, "Test hub")
        pub.add_device(hub)
        bridge = ZigbeeBridge(cfg, tmp_path, pub, hub=hub, retry_min=0.01, retry_max=0.01)
        try:
            await bridge.start()
            await asyncio.wait_for(third.wait(), 60)
        finally:
            await bridge.stop()
            server.close()
        down = [v for v in pub.values(HUB_ID, "zigbee/status") if v.startswith("down")]
        assert len(down) == 1, down  # two failures handled, one status
        traced = [r for r in caplog.records if r.exc_info and "send_reset" in str(r.exc_info[1])]
        assert len(traced) == 1, [r.getMessage() for r in traced]
        assert "failed to start" in traced[0].getMessage()
        assert bridge.last_error is not None and "failed to start" in bridge.last_error

    with caplog.at_level(logging.WARNING):
        run(main())


class WindowsSeen(random.Random):
    """Jitter that records each window it is asked to draw from, and draws its low end."""

    def __init__(self, enough: int) -> None:
        super().__init__(0)
        self.windows: list[tuple[float, float]] = []
        self.enough, self.full = enough, asyncio.Event()

    def uniform(self, a: float, b: float) -> float:
        self.windows.append((a, b))
        if len(self.windows) >= self.enough:
            self.full.set()
        return a


def test_an_absent_radio_is_retried_with_a_jittered_doubling_wait(tmp_path: Path) -> None:
    """Each wait is drawn from [half, all] of a window that doubles up to retry_max."""

    async def main() -> None:
        rng = WindowsSeen(5)
        cfg = ZigbeeConfig(enabled=True, radio="bellows", device=str(tmp_path / "ttyUSB-none"))
        bridge = ZigbeeBridge(cfg, tmp_path, Recorder(), retry_min=0.01, retry_max=0.04,
                              rng=rng)
        await bridge.start()
        try:
            await asyncio.wait_for(rng.full.wait(), 60)
        finally:
            await bridge.stop()
        assert rng.windows[:5] == [(0.005, 0.01), (0.01, 0.02), (0.02, 0.04), (0.02, 0.04),
                                   (0.02, 0.04)]

    run(main())


@pytest.fixture
def pty_port() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    tty.setraw(master)
    os.set_blocking(master, False)
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


def test_bellows_runs_up_to_the_serial_port(tmp_path: Path, pty_port: tuple[int, str]) -> None:
    """The real bellows ControllerApplication opens the port and sends an ASH reset."""
    master, port = pty_port

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        seen = bytearray()
        reset = asyncio.Event()

        def readable() -> None:
            try:
                seen.extend(os.read(master, 4096))
            except BlockingIOError:
                return
            if b"\xc0\x38\xbc\x7e" in seen:  # ASH RST frame: bellows speaks to the NCP
                reset.set()

        loop.add_reader(master, readable)
        pub = Recorder()
        cfg = ZigbeeConfig(enabled=True, radio="bellows", device=port)
        bridge = ZigbeeBridge(cfg, tmp_path, pub)
        await bridge.start()
        try:
            await asyncio.wait_for(reset.wait(), 10)
        finally:
            loop.remove_reader(master)
            await bridge.stop()
        assert not bridge.status()["up"]
        return bytes(seen)

    assert b"\x1a" in run(main())  # the cancel byte that precedes the reset


# ---- acceptance: each simulated radio + real mosquitto + real cloud link ----------------------

def test_acceptance_through_mosquitto(radio: Radio, tmp_path: Path) -> None:
    from gatewayd.cloud.link import CloudLink
    from gatewayd.credentials import mqtt_username
    from tests.cloud_helpers import WSP, Monitor, creds_for, fast_config, make_broker

    root = mqtt_username(WSP)
    broker = make_broker(tmp_path / "broker")

    def base(device_id: str) -> str:
        return f"{root}/sweet-home/{device_id}"

    async def publish(mon: Monitor, topic: str, payload: str) -> None:
        await asyncio.to_thread(mon.publish, topic, payload)

    async def seen(mon: Monitor, topic: str, value: str | None = None, mark: int = 0) -> Any:
        # Generous: a radio restart on a busy 2-core machine can take seconds.
        return await mon.await_for(topic, value, mark=mark, timeout=20)

    async def up(mon: Monitor) -> tuple[CloudLink, ZigbeeBridge]:
        hub = homie.Device(HUB_ID, "Test hub")
        link = CloudLink(fast_config(), hub, command_timeout=5.0)
        bridge = ZigbeeBridge(radio.config(), radio.state_dir, link, hub=hub, retry_min=0.05,
                              retry_max=0.2, **radio.bridge_options())
        await link.start(creds_for(broker))
        await bridge.start()
        await seen(mon, f"{base(HUB_ID)}/zigbee/status", "ready", mark=mon.mark())
        return link, bridge

    async def down(link: CloudLink, bridge: ZigbeeBridge) -> None:
        await bridge.stop()
        await link.stop()

    async def main() -> None:
        hub = base(HUB_ID)
        with Monitor(broker) as mon:
            link, bridge = await up(mon)

            # Permit join from MQTT; a plug joins and goes init -> ready.
            await publish(mon, f"{hub}/zigbee/permitjoin/set", "60")
            await seen(mon, f"{hub}/zigbee/permitjoin", "60")
            assert radio.permit_open
            mark = mon.mark()
            plug = await sim(bridge, "join", kind="plug")
            p = base(dev_id(plug))
            await seen(mon, f"{p}/$state", "ready", mark=mark)
            states = mon.values(f"{p}/$state", mark)
            assert states[0] == "init" and states[-1] == "ready"
            await seen(mon, f"{p}/$name", "gatewayd Virtual Plug", mark=mark)
            await seen(mon, f"{p}/switch/on-off/$settable", "true", mark=mark)
            await seen(mon, f"{p}/switch/on-off/$datatype", "boolean", mark=mark)

            # /set true turns the plug on, and the value is echoed.
            mark = mon.mark()
            await publish(mon, f"{p}/switch/on-off/set", "true")
            await seen(mon, f"{p}/switch/on-off", "true", mark=mark)
            assert await device_state(bridge, plug, "1:in:on_off") == {"on_off": 1}

            # Sensor reports arrive as float °C and %, battery as $telemetry/battery.
            mark = mon.mark()
            sensor = await sim(bridge, "join", kind="th-sensor")
            s = base(dev_id(sensor))
            await seen(mon, f"{s}/$state", "sleeping", mark=mark)
            await seen(mon, f"{s}/$telemetry/battery", "100", mark=mark)
            await seen(mon, f"{s}/sensor/temperature/$unit", "°C", mark=mark)
            await seen(mon, f"{s}/sensor/temperature/$datatype", "float", mark=mark)
            await sim(bridge, "report", ieee=sensor, cluster="temperature",
                      attributes={"measured_value": 2345})
            await sim(bridge, "report", ieee=sensor, cluster="humidity",
                      attributes={"measured_value": 5600})
            await seen(mon, f"{s}/sensor/temperature", "23.45", mark=mark)
            await seen(mon, f"{s}/sensor/humidity", "56.0", mark=mark)
            await seen(mon, f"{s}/sensor/humidity/$unit", "%", mark=mark)

            # A /set to a silenced device: a timeout error within the configured time.
            await sim(bridge, "silence", ieee=plug)
            mark = mon.mark()
            await publish(mon, f"{p}/switch/on-off/set", "false")
            err = await seen(mon, f"{root}/errors/sweet-home/{dev_id(plug)}/switch/on-off",
                                      mark=mark)
            assert err.json()["code"] == "TIMEOUT"
            assert f"within {TIMEOUT:g} s" in err.json()["message"]
            assert mon.values(f"{p}/switch/on-off", mark) == []  # no echo
            await seen(mon, f"{p}/$state", "disconnected", mark=mark)  # unreachable
            await sim(bridge, "silence", ieee=plug, silent=False)
            await sim(bridge, "report", ieee=plug, cluster="electrical_measurement",
                      attributes={"active_power": 25})
            await seen(mon, f"{p}/meter/power", "2.5", mark=mark)
            await seen(mon, f"{p}/$state", "ready", mark=mark)  # heard from again

            # Unplug the radio: children disconnected; plug it back: ready again.
            mark = mon.mark()
            await sim(bridge, "unplug")
            await seen(mon, f"{p}/$state", "disconnected", mark=mark)
            await seen(mon, f"{s}/$state", "disconnected", mark=mark)
            await sim(bridge, "replug")
            await seen(mon, f"{p}/$state", "ready", mark=mark)
            await seen(mon, f"{s}/$state", "sleeping", mark=mark)

            # Restart: children come back from zigbee.db without a new interview. (A new
            # cloud link still announces every device with $state=init first: Homie.)
            await down(link, bridge)
            radio.zdo.clear()
            mark = mon.mark()
            link, bridge = await up(mon)
            await seen(mon, f"{p}/$state", "ready", mark=mark)
            await seen(mon, f"{s}/$state", "sleeping", mark=mark)
            await seen(mon, f"{p}/switch/on-off", "true", mark=mark)
            await seen(mon, f"{s}/sensor/temperature", "23.45", mark=mark)
            assert not {0x0002, 0x0004, 0x0005, 0x0021} & set(radio.zdo)  # no interview

            # Removing a device clears its retained topics ($state first).
            mark = mon.mark()
            await publish(mon, f"{hub}/zigbee/remove/set", plug)
            await seen(mon, f"{p}/$state", "", mark=mark)
            await seen(mon, f"{p}/switch/on-off", "", mark=mark)
            cleared = [m.topic for m in mon.since(mark)
                       if m.topic.startswith(f"{p}/") and not m.payload]
            assert cleared[0] == f"{p}/$state" and len(cleared) > 1, cleared
            await down(link, bridge)

    async def in_radio() -> None:
        async with radio:
            await main()

    try:
        run(in_radio(), timeout=100)
    finally:
        broker.stop()
