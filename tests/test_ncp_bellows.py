"""Unmodified bellows (zigpy's EZSP radio library) against the NCP emulator over tcp://.

Everything runs on one event loop (bellows' serial side on its own thread, as it does by
default); nothing sleeps to synchronise: tests wait on zigpy events and on the
emulator's state with timeouts.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zigpy.exceptions
import zigpy.types as t
from bellows.zigbee.application import ControllerApplication

from gatewayd.simulator.ncp.air import KINDS
from gatewayd.simulator.ncp.control import ControlClient
from gatewayd.simulator.ncp.emulator import Emulator
from tests.helpers import run_async

pytestmark = pytest.mark.timeout(90)

PLUG = "00:0d:6f:00:00:00:00:01"
PLUGS = [f"00:0d:6f:00:00:00:01:{i:02x}" for i in range(1, 4)]


def zigpy_config(url: str, tmp_path: Path) -> dict[str, Any]:
    return {
        "device": {"path": url},
        "database_path": str(tmp_path / "zigbee.db"),
        # A fixed channel: forming needs no energy scan (gatewayd configures it so too).
        "network": {"channel": 15, "channels": [15]},
        "ota": {"enabled": False, "broadcast_enabled": False, "providers": [],
                "extra_providers": []},
        "topology_scan_enabled": False,
        # bellows on the caller's loop, as the hub runs it (gatewayd/zigbee/radio.py). In
        # its threaded mode, a disconnect after a TCP drop can hang for good now and then
        # (the serial thread's loop stops first): an upstream race, not the emulator's.
        "use_thread": False,
    }


class Events:
    """zigpy application and cluster events; ``wait`` returns the first match."""

    def __init__(self) -> None:
        self.seen: dict[str, list[Any]] = defaultdict(list)
        self.changed = asyncio.Event()

    def _add(self, name: str, arg: Any) -> None:
        self.seen[name].append(arg)
        self.changed.set()

    def device_initialized(self, dev: Any) -> None:
        self._add("initialized", dev)

    def device_left(self, dev: Any) -> None:
        self._add("left", dev)

    def connection_lost(self, exc: Exception) -> None:
        self._add("lost", exc)

    async def until(self, predicate: Callable[[], Any], timeout: float = 10.0,
                    what: str = "condition") -> Any:
        async with asyncio.timeout(timeout):
            while not (value := predicate()):
                self.changed.clear()
                await self.changed.wait()
        return value

    async def wait(self, name: str, count: int = 1, timeout: float = 10.0) -> Any:
        await self.until(lambda: len(self.seen[name]) >= count, timeout, name)
        return self.seen[name][count - 1]


class Reports:
    """zigpy's attribute events of one cluster: the latest value of every attribute."""

    def __init__(self, events: Events, cluster: Any) -> None:
        self.events = events
        self.count = 0
        self.latest: dict[int, Any] = {}
        for name in ("attribute_report", "attribute_updated"):
            cluster.on_event(name, self._event)

    def _event(self, event: Any) -> None:
        if event.event_type == "attribute_report":
            self.count += 1
        self.latest[event.attribute_id] = event.value
        self.events.changed.set()


async def start_app(emu: Emulator, tmp_path: Path) -> tuple[ControllerApplication, Events]:
    app = await ControllerApplication.new(zigpy_config(emu.url, tmp_path), auto_form=True)
    events = Events()
    app.add_listener(events)
    return app, events


async def join(app: ControllerApplication, events: Events, ctl: ControlClient, kind: str,
               ieee: str) -> Any:
    await app.permit(60)
    count = len(events.seen["initialized"]) + 1
    await ctl.call("join", kind=kind, ieee=ieee)
    dev = await events.wait("initialized", count)
    assert str(dev.ieee) == ieee
    return dev


def formed(emu: Emulator) -> int:
    return emu.ncp.commands["formNetwork"]


def test_network_is_formed_once_and_found_again(tmp_path: Path) -> None:
    state = tmp_path / "ncp.json"

    async def main() -> None:
        emu = await Emulator(state).start()
        t0 = time.monotonic()
        app, _ = await start_app(emu, tmp_path)
        first_start = time.monotonic() - t0
        info = app.state.network_info
        assert formed(emu) == 1
        assert info.channel == 15
        await app.shutdown()

        t0 = time.monotonic()
        app, _ = await start_app(emu, tmp_path)
        restart = time.monotonic() - t0
        again = app.state.network_info
        assert (again.pan_id, again.extended_pan_id, again.channel) == \
            (info.pan_id, info.extended_pan_id, info.channel)
        assert again.network_key.key == info.network_key.key
        assert again.network_key.tx_counter >= info.network_key.tx_counter
        assert str(app.state.node_info.ieee) == emu.control.network()["eui64"]
        await app.shutdown()
        await emu.stop()

        # The emulator itself restarts from its state file: the network is still there.
        emu = await Emulator(state).start()
        app, _ = await start_app(emu, tmp_path)
        assert app.state.network_info.extended_pan_id == info.extended_pan_id
        assert app.state.network_info.network_key.key == info.network_key.key
        assert formed(emu) == 0
        await app.shutdown()
        await emu.stop()
        print(f"\nbellows start with auto-form {first_start:.2f} s, restart {restart:.2f} s")

    run_async(main(), 60)


def test_plug_joins_is_interviewed_and_switched(tmp_path: Path) -> None:
    async def main() -> None:
        emu = await Emulator(tmp_path / "ncp.json").start()
        app, events = await start_app(emu, tmp_path)
        async with ControlClient(emu.control_port or 0) as ctl:
            t0 = time.monotonic()
            dev = await join(app, events, ctl, "plug", PLUG)
            interview = time.monotonic() - t0
            assert dev.is_initialized
            assert (dev.manufacturer, dev.model) == ("gatewayd", "Virtual Plug")
            on_off = dev.endpoints[1].on_off

            await on_off.on()
            state = await ctl.call("device", ieee=PLUG)
            assert state["state"]["1:in:on_off"]["on_off"] == 1
            await on_off.off()
            assert emu.air.device(PLUG).value("on_off", "on_off") == 0

            reports = Reports(events, dev.endpoints[1].electrical_measurement)
            await ctl.call("report", ieee=PLUG, cluster="electrical_measurement",
                           attributes={"active_power": 1234})
            await events.until(lambda: reports.latest.get(0x050B) == 1234, 5, "report")

            # A device waiting in pairing mode joins as soon as joining is permitted.
            await app.permit(0)
            pending = await ctl.call("join", kind="th-sensor", wait=True)
            assert pending["pairing"] is True
            await app.permit(30)
            sensor = await events.wait("initialized", 2)
            assert str(sensor.ieee) == pending["ieee"]
            assert sensor.model == "Virtual Climate Sensor"
            status = await ctl.call("status")
            assert status["network"]["up"] is True
            assert len(status["devices"]) == 2

            # The sensor leaves on its own; zigpy hears it.
            await ctl.call("leave", ieee=pending["ieee"])
            left = await events.wait("left")
            assert str(left.ieee) == pending["ieee"]
        await app.shutdown()
        await emu.stop()
        print(f"\njoin to initialized (plug): {interview * 1000:.0f} ms")

    run_async(main(), 60)


def test_silenced_device_is_a_delivery_failure(tmp_path: Path) -> None:
    async def main() -> None:
        emu = await Emulator(tmp_path / "ncp.json").start()
        emu.ncp.delivery_failure_delay = 0.5  # the NCP's MAC/APS retries, shortened
        app, events = await start_app(emu, tmp_path)
        async with ControlClient(emu.control_port or 0) as ctl:
            dev = await join(app, events, ctl, "plug", PLUG)
            await ctl.call("silence", ieee=PLUG, silent=True)
            with pytest.raises(zigpy.exceptions.DeliveryError) as failed:
                await dev.endpoints[1].on_off.on()
            # The NCP's own verdict after its retries (a stick's MAC/APS retries), not a
            # timeout on the host's side.
            assert "DELIVERY_FAILED" in str(failed.value)
            assert emu.air.device(PLUG).value("on_off", "on_off") == 0
            await ctl.call("silence", ieee=PLUG, silent=False)
            await dev.endpoints[1].on_off.on()
            assert emu.air.device(PLUG).value("on_off", "on_off") == 1
        await app.shutdown()
        await emu.stop()

    run_async(main(), 60)


class Commands:
    """A client cluster listener: the cluster commands a device sent."""

    def __init__(self, events: Events) -> None:
        self.events = events
        self.seen: list[int] = []

    def cluster_command(self, tsn: int, command_id: int, args: Any) -> None:
        self.seen.append(command_id)
        self.events.changed.set()


def test_whole_catalog_joins_and_survives_an_emulator_restart(tmp_path: Path) -> None:
    kinds = sorted(KINDS)
    state = tmp_path / "ncp.json"

    async def main() -> None:
        # Every kind waits in pairing mode and joins once joining is permitted.
        emu = await Emulator(state, devices=kinds).start()
        app, events = await start_app(emu, tmp_path)
        await app.permit(60)
        await events.wait("initialized", len(kinds), timeout=30)
        models = {dev.model for dev in events.seen["initialized"]}
        assert models == {KINDS[k]["model"] for k in kinds}
        button = next(d for d in events.seen["initialized"] if d.model == "Virtual Button")
        commands = Commands(events)
        button.endpoints[1].out_clusters[0x0006].add_listener(commands)
        async with ControlClient(emu.control_port or 0) as ctl:
            await ctl.call("command", ieee=str(button.ieee), cluster="on_off",
                           command="toggle")
            await events.until(lambda: commands.seen == [0x02], 5, "the button's toggle")
        light = next(d for d in events.seen["initialized"] if d.model == "Virtual Light")
        await light.endpoints[11].level.move_to_level(level=100, transition_time=0)
        await app.shutdown()
        await emu.stop()

        # The emulator restarts from its state file: same devices, same state.
        emu = await Emulator(state).start()
        assert len(emu.air.devices) == len(kinds)
        assert emu.air.device(str(light.ieee)).value("level", "current_level") == 100
        app, events = await start_app(emu, tmp_path)
        light = app.get_device(ieee=light.ieee)
        await light.endpoints[11].on_off.on()
        assert emu.air.device(str(light.ieee)).value("on_off", "on_off") == 1
        assert formed(emu) == 0
        await app.shutdown()
        await emu.stop()

    run_async(main(), 60)


@pytest.mark.parametrize("fault", ["reset", "drop"])
def test_reconnect_after_ncp_reset_or_tcp_drop(tmp_path: Path, fault: str) -> None:
    async def main() -> None:
        emu = await Emulator(tmp_path / "ncp.json").start()
        app, events = await start_app(emu, tmp_path)
        async with ControlClient(emu.control_port or 0) as ctl:
            await join(app, events, ctl, "plug", PLUG)
            pan_id = app.state.network_info.pan_id
            await ctl.call("fault", **{fault: True})
            await events.wait("lost")
            # What an application does on connection_lost: restart the radio library.
            await app.shutdown()
            app, events = await start_app(emu, tmp_path)
            assert app.state.network_info.pan_id == pan_id
            assert formed(emu) == 1
            assert emu.server.counters.connections == 2
            dev = app.get_device(ieee=t.EUI64.convert(PLUG))
            await dev.endpoints[1].on_off.on()
            assert emu.air.device(PLUG).value("on_off", "on_off") == 1
        await app.shutdown()
        await emu.stop()

    run_async(main(), 60)


async def _stream(emu: Emulator, app: ControllerApplication, events: Events,
                  ctl: ControlClient, count: int) -> tuple[dict[str, Reports], float]:
    reports = {ieee: Reports(events, app.get_device(ieee=t.EUI64.convert(ieee)).endpoints[1]
                             .electrical_measurement) for ieee in PLUGS}
    plan = await ctl.call("stream", count=count, rate=0, cluster="electrical_measurement",
                          attribute="active_power", offset=1)
    devices = plan["devices"]
    last = {ieee: 1 + (count - 1 - i) // len(devices) if i < count else None
            for i, ieee in enumerate(devices)}
    t0 = time.monotonic()
    await events.until(lambda: all(reports[i].latest.get(0x050B) == v
                                   for i, v in last.items()), 40, "the last reports")
    return reports, time.monotonic() - t0


def test_report_stream_throughput_and_line_noise(tmp_path: Path) -> None:
    async def main() -> None:
        emu = await Emulator(tmp_path / "ncp.json", seed=7).start()
        app, events = await start_app(emu, tmp_path)
        async with ControlClient(emu.control_port or 0) as ctl:
            for ieee in PLUGS:
                await join(app, events, ctl, "plug", ieee)
            count = 600
            reports, elapsed = await _stream(emu, app, events, ctl, count)
            received = sum(r.count for r in reports.values())
            assert received == count  # ASH loses nothing on a clean line
            clean_rate = received / elapsed

            # 1 % of the bytes corrupted or lost, both ways, while zigpy also sends
            # commands (so that frames from the host are damaged too).
            await ctl.call("fault", noise=0.01)
            before = dict(emu.server.counters_json())

            def damaged_both_ways() -> bool:
                now = emu.server.counters
                return (now.naks_sent > before["naks_sent"] and now.retransmissions_received
                        > before["retransmissions_received"])

            async def commands() -> int:
                sent = 0
                while sent < 60 and not damaged_both_ways():
                    dev = app.get_device(ieee=t.EUI64.convert(PLUGS[sent % len(PLUGS)]))
                    await dev.endpoints[1].on_off.read_attributes(["on_off"])
                    sent += 1
                return sent

            stream = asyncio.ensure_future(_stream(emu, app, events, ctl, 45))
            sent = await commands()
            await stream
            await ctl.call("fault", noise=0)
            after = emu.server.counters_json()
            assert after["naks_sent"] > before["naks_sent"]
            assert after["retransmissions_received"] > before["retransmissions_received"]
            assert after["naks_received"] + after["retransmissions_sent"] > 0
            assert not events.seen["lost"]
            print(f"\nreports through bellows: {clean_rate:.0f}/s; {sent} commands under noise;"
                  " counters after noise: "
                  + ", ".join(f"{k}={v}" for k, v in after.items() if k != "commands"))
        await app.shutdown()
        await emu.stop()

    run_async(main(), 80)


def _install_code(body: bytes) -> str:
    from gatewayd.zigbee.inputs import crc16_x25

    return (body + crc16_x25(body).to_bytes(2, "little")).hex()


def test_install_codes_link_quality_and_an_unplugged_dongle(tmp_path: Path) -> None:
    import zigpy.util

    from gatewayd.simulator.ncp.control import ControlError

    code, other = _install_code(bytes(range(16))), _install_code(bytes(range(1, 17)))

    async def main() -> None:
        emu = await Emulator(tmp_path / "ncp.json").start()
        app, events = await start_app(emu, tmp_path)
        pan_id = app.state.network_info.pan_id
        async with ControlClient(emu.control_port or 0) as ctl:
            await app.permit_with_link_key(t.EUI64.convert(PLUG),
                                           zigpy.util.convert_install_code(
                                               bytes.fromhex(code)), 60)
            with pytest.raises(ControlError, match="not been given this device's install"):
                await ctl.call("join", kind="plug", ieee=PLUG, install_code=other)
            with pytest.raises(ControlError, match="asks for install-code keys"):
                await ctl.call("join", kind="plug", ieee=PLUGS[0])
            with pytest.raises(ControlError, match=r"checksum \(last 4 digits\) does not match"):
                await ctl.call("join", kind="plug", ieee=PLUG, install_code=code[:-2] + "00")
            await ctl.call("join", kind="plug", ieee=PLUG, install_code=code)
            dev = await events.wait("initialized")
            assert str(dev.ieee) == PLUG

            await ctl.call("set_link", ieee=PLUG, lqi=77)
            reports = Reports(events, dev.endpoints[1].on_off)
            await ctl.call("report", ieee=PLUG, cluster="on_off", attributes={"on_off": 1})
            await events.until(lambda: reports.count, 5, "the report")
            assert dev.lqi == 77
            with pytest.raises(ControlError, match="lqi: must be an integer from 0 to 255"):
                await ctl.call("set_link", ieee=PLUG, lqi="high")

            plan = await ctl.call("stream", count=20_000, rate=10)
            assert plan["devices"] == [PLUG]
            stopped = await ctl.call("stream_stop")
            assert stopped["sent"] < 20_000
            assert (await ctl.call("stream_status"))["running"] is False

            # Unplugged: the host loses the line and nothing listens until it is back.
            assert await ctl.call("fault", unplug=True) == {"unplug": True}
            await events.wait("lost")
            await app.shutdown()
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection("127.0.0.1", emu.port)
            assert await ctl.call("fault", replug=True) == {"replug": True}
            app, events = await start_app(emu, tmp_path)
            assert app.state.network_info.pan_id == pan_id and formed(emu) == 1
            await app.get_device(ieee=t.EUI64.convert(PLUG)).endpoints[1].on_off.off()
            assert emu.air.device(PLUG).value("on_off", "on_off") == 0
        await app.shutdown()
        await emu.stop()

    run_async(main(), 60)
