"""The virtual zigpy radio, tested through zigpy itself (no bridge, no MQTT)."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import zigpy.types as t
import zigpy.util
import zigpy.zdo.types as zdo_t
from zigpy.application import ControllerApplication
from zigpy.zcl import foundation

from gatewayd.config import ZigbeeConfig
from gatewayd.zigbee import mapping
from gatewayd.zigbee.radio import RadioUnavailable, start_controller
from gatewayd.zigbee.virtual import catalog
from gatewayd.zigbee.virtual import zcl as virtual_zcl
from gatewayd.zigbee.virtual.radio import VirtualNetwork, VirtualRadioError
from tests.helpers import run_async, wait_for

pytestmark = pytest.mark.timeout(60)

CFG = ZigbeeConfig(enabled=True, radio="virtual", command_timeout=0.5)
INSTALL_CODE = "83FED3407A939723A5C639B26916D505C3B5"  # the Zigbee spec's example


run = run_async


class Events:
    """Records zigpy application events; ``wait`` returns the first matching one."""

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

    async def wait(self, name: str, count: int = 1, timeout: float = 5.0) -> Any:
        async with asyncio.timeout(timeout):
            while len(self.seen[name]) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.seen[name][count - 1]


async def started(state_dir: Path) -> tuple[ControllerApplication, VirtualNetwork, Events]:
    app = await start_controller(CFG, state_dir)
    events = Events()
    app.add_listener(events)
    return app, app.virtual_network, events  # type: ignore[attr-defined]


async def join(app: ControllerApplication, events: Events, kind: str) -> Any:
    await app.permit(60)
    count = len(events.seen["initialized"]) + 1
    ieee = app.virtual_network.join(kind)  # type: ignore[attr-defined]
    dev = await events.wait("initialized", count)
    assert str(dev.ieee) == ieee
    return dev


def test_network_is_formed_once_and_kept(tmp_path: Path) -> None:
    async def main() -> None:
        app, net, _ = await started(tmp_path)
        info = app.state.network_info
        assert info.channel == 15 and 0 < info.pan_id < 0xFFFF
        assert app.state.node_info.ieee == net.radio_ieee
        first = (info.pan_id, info.extended_pan_id, info.network_key.key)
        await app.shutdown()
        app, _, _ = await started(tmp_path)
        info = app.state.network_info
        assert (info.pan_id, info.extended_pan_id, info.network_key.key) == first
        await app.shutdown()

    run(main())
    assert (tmp_path / "zigbee.db").exists()
    world = json.loads((tmp_path / "zigbee-virtual.json").read_text())
    assert world["nvram"]["network_info"]["channel"] == 15


def test_devices_join_only_while_permit_join_is_open(tmp_path: Path) -> None:
    async def main() -> None:
        app, net, _ = await started(tmp_path)
        with pytest.raises(VirtualRadioError, match="permit join is closed"):
            net.join("plug")
        await app.permit(30)
        assert net.permit_open
        net.join("plug")
        await app.permit(0)
        with pytest.raises(VirtualRadioError, match="closed"):
            net.join("light")
        with pytest.raises(VirtualRadioError, match="unknown device kind"):
            net.join("toaster")
        await app.shutdown()

    run(main())


@pytest.mark.parametrize("kind", catalog.kinds())
def test_every_catalog_kind_answers_the_interview(tmp_path: Path, kind: str) -> None:
    spec = catalog.KINDS[kind]

    async def main() -> None:
        app, _, events = await started(tmp_path)
        dev = await join(app, events, kind)
        assert dev.is_initialized
        assert (dev.manufacturer, dev.model) == (spec["manufacturer"], spec["model"])
        assert dev.node_desc.is_end_device == (spec["logical_type"] == "end_device")
        assert dev.node_desc.is_receiver_on_when_idle == spec["mains"]
        for ep_spec in spec["endpoints"]:
            ep = dev.endpoints[ep_spec["id"]]
            assert ep.profile_id == ep_spec["profile"]
            assert sorted(c.ep_attribute for c in ep.in_clusters.values()) == \
                sorted(ep_spec["inputs"])
            assert sorted(c.ep_attribute for c in ep.out_clusters.values()) == \
                sorted(ep_spec["outputs"])
        plan = mapping.plan([(ep.endpoint_id, ep.in_clusters, ep.out_clusters)
                             for ep in dev.non_zdo_endpoints])
        assert plan.bindings and not plan.unsupported  # the catalog only uses mapped clusters
        await app.shutdown()

    run(main())


def test_zcl_commands_reads_writes_and_reporting(tmp_path: Path) -> None:
    async def main() -> None:
        app, net, events = await started(tmp_path)
        plug = await join(app, events, "plug")
        on_off = plug.endpoints[1].on_off
        rsp = await on_off.on()
        assert rsp.status == foundation.Status.SUCCESS
        assert net.state(str(plug.ieee))["state"]["1:in:on_off"] == {"on_off": 1}
        success, failure = await on_off.read_attributes(["on_off"])
        assert success == {"on_off": t.Bool.true} and not failure

        # Reports flow once reporting is configured, as with real firmware.
        reports: asyncio.Queue[Any] = asyncio.Queue()
        on_off.on_event("attribute_report", reports.put_nowait)
        await on_off.bind()
        result = await on_off.configure_reporting("on_off", 0, 300, 1)
        assert set(result.values()) == {foundation.Status.SUCCESS}
        await on_off.toggle()
        report = await asyncio.wait_for(reports.get(), 5)
        assert (report.attribute_name, report.value) == ("on_off", t.Bool.false)

        rsp = await on_off.on_with_timed_off(on_off_control=0, on_time=10, off_wait_time=0)
        assert rsp.status == foundation.Status.UNSUP_CLUSTER_COMMAND
        (records,) = await on_off.write_attributes({"on_off": 1})
        assert records[0].status == foundation.Status.READ_ONLY
        await app.shutdown()

    run(main())


def test_injected_reports_and_button_presses_reach_zigpy(tmp_path: Path) -> None:
    async def main() -> None:
        app, net, events = await started(tmp_path)
        sensor = await join(app, events, "th-sensor")
        button = await join(app, events, "button")
        temps: asyncio.Queue[Any] = asyncio.Queue()
        sensor.endpoints[1].temperature.on_event("attribute_report", temps.put_nowait)
        net.report(str(sensor.ieee), "temperature", {"measured_value": 2234})
        report = await asyncio.wait_for(temps.get(), 5)
        assert report.value == 2234
        assert sensor.endpoints[1].temperature.get("measured_value") == 2234

        commands: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()

        class Listener:
            def cluster_command(self, tsn: int, command_id: int, args: Any) -> None:
                commands.put_nowait((command_id, args))

        button.endpoints[1].out_clusters[0x0006].add_listener(Listener())
        net.inject(str(button.ieee), "command", cluster="on_off", command="toggle")
        assert (await asyncio.wait_for(commands.get(), 5))[0] == 0x02
        with pytest.raises(VirtualRadioError, match="no command"):
            net.command(str(button.ieee), "on_off", "explode")
        with pytest.raises(VirtualRadioError, match="no attribute"):
            net.report(str(sensor.ieee), "temperature", {"colour": 1})
        with pytest.raises(VirtualRadioError, match="unknown event"):
            net.inject(str(sensor.ieee), "melt")
        # What the event takes, not Python's "report() got an unexpected keyword argument"
        with pytest.raises(VirtualRadioError) as refused:
            net.inject(str(sensor.ieee), "report", cluster="temperature", colour=1)
        assert str(refused.value) == ("report takes ieee, cluster, attributes, endpoint; "
                                      "got ieee, cluster, colour")
        with pytest.raises(VirtualRadioError) as refused:
            net.inject(str(sensor.ieee), "link")
        assert str(refused.value) == "link takes ieee, lqi; got ieee"
        await app.shutdown()

    run(main())


def test_silenced_device_never_answers(tmp_path: Path) -> None:
    async def main() -> None:
        app, net, events = await started(tmp_path)
        plug = await join(app, events, "plug")
        net.silence(str(plug.ieee))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await plug.endpoints[1].on_off.on()
        assert net.state(str(plug.ieee))["state"]["1:in:on_off"] == {"on_off": 0}
        net.silence(str(plug.ieee), False)
        assert (await plug.endpoints[1].on_off.on()).status == foundation.Status.SUCCESS
        await app.shutdown()

    run(main())


def test_a_network_in_use_is_refused_to_a_second_radio_start(tmp_path: Path) -> None:
    """One network, one application at a time, as a serial port; said for the virtual
    radio, not as a serial port and the 'dialout' group."""
    async def main() -> None:
        app, net, _ = await started(tmp_path)
        (tmp_path / "second").mkdir()  # its own zigbee.db: only the network is shared
        with pytest.raises(RadioUnavailable) as refused:
            await start_controller(CFG, tmp_path / "second", net)
        assert str(refused.value) == ("the virtual radio is in use by another radio start "
                                      "(the previous one has not let go of it yet)")
        await app.shutdown()
        second = await start_controller(CFG, tmp_path / "second", net)  # let go: free again
        await second.shutdown()

    run(main())


def test_a_world_file_that_cannot_be_written_is_not_a_network_in_use(tmp_path: Path) -> None:
    """Both are PermissionErrors under zigpy's startup; only the network's own refusal
    reads "in use" (root writes through file modes, so the write failure is raised here
    as the world file's save raises it)."""
    from gatewayd.zigbee import radio_errors

    def under_startup(cause: BaseException) -> Exception:
        try:
            try:
                raise cause
            except OSError as exc:
                raise RuntimeError("zigpy's startup failed") from exc
        except RuntimeError as outer:
            return outer

    unwritable = PermissionError(13, "Permission denied", str(tmp_path / "w.json"))
    explained = radio_errors.explain(CFG, "w.json", under_startup(unwritable))
    assert str(explained) == "cannot write the virtual radio's world file w.json (Permission " \
        "denied)"  # not "in use", nor a serial port and the 'dialout' group
    in_use = radio_errors.explain(CFG, "w.json", under_startup(
        virtual_zcl.NetworkInUse("The serial port is locked by another application")))
    assert "in use by another radio start" in str(in_use)


def test_a_number_attribute_takes_json_numbers_only() -> None:
    """zigpy's Single takes "12" and true as well; the message says "a number"."""
    import zigpy.types as t

    assert virtual_zcl.checked(t.Single, 21.5, "analog_value.present_value") == 21.5
    for value, shown in (("12", "'12'"), (True, "true"), (float("inf"), "Infinity")):
        with pytest.raises(VirtualRadioError) as refused:
            virtual_zcl.checked(t.Single, value, "analog_value.present_value")
        assert str(refused.value) == f"analog_value.present_value must be a number, got {shown}"


def test_leave_unplug_and_restart_without_interview(tmp_path: Path) -> None:
    async def main() -> None:
        app, net, events = await started(tmp_path)
        plug = await join(app, events, "plug")
        sensor = await join(app, events, "th-sensor")
        net.leave(str(sensor.ieee))
        assert (await events.wait("left")).ieee == sensor.ieee

        net.unplug()
        assert isinstance(await events.wait("lost"), ConnectionError)
        await app.shutdown()
        with pytest.raises(RadioUnavailable, match="unplugged"):
            await start_controller(CFG, tmp_path, net)

        net.replug()
        sent: list[int] = []
        downlink = net.downlink
        net.downlink = lambda packet: (sent.append(packet.cluster_id), downlink(packet))[1]  # type: ignore[method-assign]
        app = await start_controller(CFG, tmp_path, net)
        restored = app.devices[plug.ieee]
        assert restored.is_initialized and restored.model == "Virtual Plug"
        interview = {zdo_t.ZDOCmd.Node_Desc_req, zdo_t.ZDOCmd.Active_EP_req,
                     zdo_t.ZDOCmd.Simple_Desc_req}
        assert not interview & set(sent), "a restored device must not be interviewed again"
        assert (await restored.endpoints[1].on_off.on()).status == foundation.Status.SUCCESS
        await app.shutdown()

    run(main())


def test_install_code_is_required_when_the_device_uses_one(tmp_path: Path) -> None:
    ieee = "00:0d:6f:00:0a:90:69:e7"

    async def main() -> None:
        app, net, events = await started(tmp_path)
        await app.permit(60)
        with pytest.raises(VirtualRadioError, match="install code"):
            net.join("plug", ieee=ieee, install_code=INSTALL_CODE)
        key = zigpy.util.convert_install_code(bytes.fromhex(INSTALL_CODE))
        await app.permit_with_link_key(t.EUI64.convert(ieee), key, 60)
        assert net.join("plug", ieee=ieee, install_code=INSTALL_CODE) == ieee
        assert str((await events.wait("initialized")).ieee) == ieee
        await app.shutdown()

    run(main())


def test_world_file_keeps_devices_and_their_state(tmp_path: Path) -> None:
    async def main() -> str:
        app, net, events = await started(tmp_path)
        plug = await join(app, events, "plug")
        await plug.endpoints[1].on_off.on()
        net.silence(str(plug.ieee))
        await app.shutdown()  # detaching saves the world
        return str(plug.ieee)

    ieee = run(main())
    fresh = VirtualNetwork(tmp_path / "zigbee-virtual.json")  # as a new process would load it
    state = fresh.state(ieee)
    assert state["kind"] == "plug" and state["silenced"] is True
    assert state["state"]["1:in:on_off"] == {"on_off": 1}


def test_attribute_changes_are_saved_in_the_background_and_never_go_back(
        tmp_path: Path) -> None:
    world = tmp_path / "world.json"

    async def main() -> None:
        net = VirtualNetwork(world)
        net.save_delay = 0.01
        net.nvram = {"marker": 1}
        net.changed()  # a timer, then a worker thread writes the file
        await asyncio.wait_for(asyncio.to_thread(
            wait_for, lambda: world.exists() and json.loads(world.read_text())["nvram"],
            10, "the background save"), 15)
        assert json.loads(world.read_text())["nvram"] == {"marker": 1}
        assert world.stat().st_mode & 0o777 == 0o600
        newer = net._snapshot()
        net._write(newer)
        net._write((newer[0] - 1, b"stale"))  # a slow writer with an older snapshot loses
        assert json.loads(world.read_text())["nvram"] == {"marker": 1}

    asyncio.run(main())
