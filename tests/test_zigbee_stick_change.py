"""Another stick in the hub's port: unmodified bellows on NCP emulators, one per stick.

A reviewer's reproductions: a stick of another network was taken as it
was (the hub ``ready`` on that network, its own devices ``ready`` though out of reach, the
other coordinator a child for good), and a blank replacement stick never took the network
over (bellows cannot give it the old stick's address; the radio stayed down, "check that
it is a bellows radio"). zigbee/network_start.py, zigbee/coordinators.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gatewayd import bridge as bridge_module
from gatewayd import homie
from gatewayd.bridge import ZigbeeBridge
from gatewayd.config import ZigbeeConfig
from gatewayd.simulator.ncp.emulator import Emulator
from gatewayd.simulator.ncp.state import Nvram
from gatewayd.zigbee import radio
from gatewayd.zigbee.coordinators import is_coordinator
from gatewayd.zigbee.radio import RadioError, RadioUnavailable, start_controller
from tests.helpers import run_async
from tests.test_bridge import HUB_ID, Recorder, dev_id, join
from tests.zigbee_radios import sim

pytestmark = pytest.mark.timeout(180)

BIND_REQ = 0x0021


class Stick:
    """An emulated EZSP stick whose NVRAM lives in ``path``; records the binds it sends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.emu: Any = None
        self.binds: list[tuple[int, str]] = []  # (device nwk, destination IEEE)

    async def __aenter__(self) -> Stick:
        self.emu = await Emulator(self.path).start()
        deliver = self.emu.air.deliver

        def record(nwk: int, aps: dict[str, Any], payload: bytes) -> Any:
            if aps["profileId"] == 0 and aps["clusterId"] == BIND_REQ:
                self.binds.append((nwk, ":".join(f"{b:02x}" for b in payload[13:21][::-1])))
            return deliver(nwk, aps, payload)

        self.emu.air.deliver = record
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.emu.stop()

    def config(self) -> ZigbeeConfig:
        return ZigbeeConfig(enabled=True, radio="bellows", device=self.emu.url,
                            sim_control=f"127.0.0.1:{self.emu.control_port}",
                            command_timeout=0.5)

    @property
    def url(self) -> str:
        return str(self.emu.url)

    @property
    def ieee(self) -> str:
        return ":".join(f"{b:02x}" for b in bytes.fromhex(self.emu.ncp.nvram.eui64)[::-1])

    @property
    def network(self) -> Any:
        return self.emu.ncp.nvram.network


async def bridge_on(stick: Stick, state_dir: Path, up: bool = True
                    ) -> tuple[ZigbeeBridge, Recorder]:
    """The hub's bridge on ``stick``, until the radio is up (``up``) or down."""
    pub = Recorder()
    hub = homie.Device(HUB_ID, "Test hub")
    pub.add_device(hub)
    bridge = ZigbeeBridge(stick.config(), state_dir, pub, hub=hub, retry_min=0.05,
                          retry_max=0.2, shutdown_timeout=2.0, status_text=pub.line)
    await bridge.start()
    try:
        if up:
            async with asyncio.timeout(20):
                await bridge.radio_up.wait()
        else:
            await pub.until(lambda: str(pub.value(HUB_ID, "zigbee/status")).startswith(
                "down"), 20)
    except BaseException:
        await bridge.stop()
        raise
    return bridge, pub


async def hub_with_devices(stick: Stick, state_dir: Path) -> tuple[str, str]:
    """The hub forms its network on ``stick``; a plug and a sensor join. Their IEEEs."""
    bridge, pub = await bridge_on(stick, state_dir)
    try:
        plug = await join(bridge, pub, "plug")
        sensor = await join(bridge, pub, "th-sensor", "sleeping")
    finally:
        await bridge.stop()
    return plug, sensor


def children(pub: Recorder) -> set[str]:
    return {d for d in pub.devices if d.startswith("zigbee-")}


def pan(network: Any) -> str:
    return f"PAN 0x{network.pan_id:04x}"


def keys_in(text: str, *networks: Any) -> list[str]:
    """The networks' keys as they appear in ``text`` (hex, or zigpy's colon form)."""
    found = []
    for net in networks:
        raw = bytes.fromhex(net.network_key)
        for form in (raw.hex(), raw.hex(":"), raw[::-1].hex(), raw[::-1].hex(":")):
            if form in text.lower():
                found.append(form)
    return found


def test_a_stick_of_another_network_is_refused_and_the_hubs_stick_is_taken_back(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="gatewayd")
    hub_dir, other_dir = tmp_path / "hub", tmp_path / "other"
    hub_dir.mkdir()
    other_dir.mkdir()

    async def main() -> None:
        async with Stick(tmp_path / "a.json") as a:
            plug, sensor = await hub_with_devices(a, hub_dir)
        ours = a.network
        async with Stick(tmp_path / "c.json") as c:
            await hub_with_devices(c, other_dir)  # another hub's network, with devices
            theirs, their_coordinator = c.network, c.ieee
            bridge, pub = await bridge_on(c, hub_dir, up=False)
            try:
                words = (f"the stick on {c.url} is on another Zigbee network ({pan(theirs)}) "
                         f"than the hub's ({pan(ours)}): plug the hub's stick back in, or run "
                         "gatewayctl reset --full to start a new network")
                if theirs.pan_id == ours.pan_id:  # one chance in 65536
                    words = str(pub.value(HUB_ID, "zigbee/status"))[len("down: "):]
                assert pub.value(HUB_ID, "zigbee/status") == f"down: {words}"
                status = bridge.status()
                assert (status["up"], status["error"], status["pan_id"]) == (False, words, None)
                assert children(pub) == set()  # neither ours (out of reach) nor theirs
            finally:
                await bridge.stop()
            # Not a fault waiting mends: retried once a minute, like a stick of another type.
            with pytest.raises(RadioError) as refused:
                await start_controller(c.config(), hub_dir)
            assert not isinstance(refused.value, RadioUnavailable)
            assert str(refused.value) == words and refused.value.details is None
            assert c.network == theirs  # the other network is left as it was
        assert keys_in(caplog.text, ours, theirs) == []  # zigpy's exception holds both keys
        assert [r.getMessage() for r in caplog.records if words in r.getMessage()] == [
            f"zigbee: {words}; retrying"]

        # The hub's stick back: its network, its devices, no coordinator of the other one.
        async with Stick(tmp_path / "a.json") as a:
            bridge, pub = await bridge_on(a, hub_dir)
            try:
                assert pub.value(HUB_ID, "zigbee/pan-id") == f"0x{ours.pan_id:04x}"
                await pub.state(dev_id(plug), "ready")
                assert children(pub) == {dev_id(plug), dev_id(sensor)}
                assert dev_id(their_coordinator) not in pub.devices
            finally:
                await bridge.stop()

    run_async(main(), 150)


def blank_replacement(of: Path, path: Path) -> None:
    """A new stick (another address, no network) in the same room: the devices joined to
    the stick in ``of`` are on the air, on that stick's network (they talk to a stick that
    runs it)."""
    old = json.loads(of.read_text())
    blank = Nvram.fresh().to_json()
    blank["behind"] = {old["network"]["extended_pan_id"]: old["devices"]}
    path.write_text(json.dumps(blank))


def test_a_blank_replacement_stick_takes_the_network_over_under_its_own_address(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gatewayd")
    hub_dir = tmp_path / "hub"
    hub_dir.mkdir()

    async def main() -> None:
        async with Stick(tmp_path / "a.json") as a:
            plug, sensor = await hub_with_devices(a, hub_dir)
        ours, old_coordinator = a.network, a.ieee
        blank_replacement(tmp_path / "a.json", tmp_path / "b.json")
        async with Stick(tmp_path / "b.json") as b:
            caplog.clear()
            bridge, pub = await bridge_on(b, hub_dir)
            try:
                # The hub's network (same PAN, extended PAN id, key) on the new stick.
                assert b.network.pan_id == ours.pan_id
                assert (b.network.extended_pan_id, b.network.network_key) == (
                    ours.extended_pan_id, ours.network_key)
                assert bridge.status()["up"] and bridge.status()["error"] is None
                assert pub.value(HUB_ID, "zigbee/status") == "ready"
                assert pub.value(HUB_ID, "zigbee/pan-id") == f"0x{ours.pan_id:04x}"
                assert str(bridge.app.state.node_info.ieee) == b.ieee != old_coordinator
                messages = [r.getMessage() for r in caplog.records]
                assert any(m.startswith(f"zigbee: the stick on {b.url} (address {b.ieee}) "
                                        "holds no network: restored the hub's network "
                                        f"({pan(ours)}, channel 15) onto it from the backup "
                                        "in zigbee.db (") and m.endswith(
                    f"keeping the stick's own address (the backup's was {old_coordinator})")
                    for m in messages), messages
                # The devices are set up again, bound to the new stick, and still there.
                assert any(m.startswith(f"zigbee: the network now runs on the stick with "
                                        f"address {b.ieee}; zigbee.db knew it under "
                                        f"{old_coordinator}, now forgotten. Each of the 2 "
                                        "device(s) is set up again") for m in messages)
                await pub.state(dev_id(plug), "ready")
                assert "init" in pub.states(dev_id(plug))
                assert any(dst == b.ieee for _nwk, dst in b.binds), b.binds
                assert children(pub) == {dev_id(plug), dev_id(sensor)}
                assert dev_id(old_coordinator) not in pub.devices
            finally:
                await bridge.stop()
            formed = b.emu.ncp.commands["formNetwork"]

            # The next start finds the network on the new stick as it left it.
            caplog.clear()
            bridge, pub = await bridge_on(b, hub_dir)
            try:
                await pub.state(dev_id(plug), "ready")
                assert b.emu.ncp.commands["formNetwork"] == formed
                assert not [r for r in caplog.records if "restored" in r.getMessage()
                            or "set up again" in r.getMessage()]
            finally:
                await bridge.stop()

        # The old stick plugged back in: it holds the network, but the new one ran it since.
        async with Stick(tmp_path / "a.json") as a:
            caplog.clear()
            bridge, pub = await bridge_on(a, hub_dir)
            try:
                assert pub.value(HUB_ID, "zigbee/pan-id") == f"0x{ours.pan_id:04x}"
                assert str(bridge.app.state.node_info.ieee) == old_coordinator
                messages = [r.getMessage() for r in caplog.records]
                assert any(f"(address {old_coordinator}) holds the hub's network but was not "
                           "the last stick to run it: restored" in m for m in messages)
                await pub.state(dev_id(plug), "ready")
                assert children(pub) == {dev_id(plug), dev_id(sensor)}
            finally:
                await bridge.stop()

    run_async(main(), 170)


async def backed_up(app: Any, pan_id: int) -> None:
    """Until zigpy's backup of the network ``pan_id`` (its first, at the start) is made."""
    made = asyncio.Event()

    class Listener:
        def network_backup_created(self, backup: Any) -> None:
            if backup.network_info.pan_id == pan_id:
                made.set()

        def network_backup_removed(self, backup: Any) -> None:
            pass

    app.backups.add_listener(Listener())
    latest = app.backups.most_recent_backup()
    if latest is None or latest.network_info.pan_id != pan_id:
        async with asyncio.timeout(10):
            await made.wait()
    await app._dblistener._callback_handlers.join()  # written to zigbee.db


def test_a_hub_that_adopted_another_networks_stick_takes_its_own_back_without_the_other_coordinator(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """zigbee.db as gatewayd left it before the check, once another network's stick had run
    the hub: that network its newest backup, its coordinator a device."""
    caplog.set_level(logging.INFO, logger="gatewayd")
    hub_dir, other_dir = tmp_path / "hub", tmp_path / "other"
    hub_dir.mkdir()
    other_dir.mkdir()

    async def main() -> None:
        async with Stick(tmp_path / "a.json") as a:
            plug, sensor = await hub_with_devices(a, hub_dir)
        ours = a.network
        async with Stick(tmp_path / "c.json") as c:
            await hub_with_devices(c, other_dir)
            their_coordinator = c.ieee
            with monkeypatch.context() as old_gatewayd:  # no check, every coordinator a child
                config = radio.zigpy_config
                old_gatewayd.setattr(radio, "zigpy_config", lambda *a, **kw: {
                    **config(*a, **kw), "validate_network_settings": False})
                old_gatewayd.setattr(bridge_module, "former_coordinators", lambda app: [])
                old_gatewayd.setattr(bridge_module, "is_coordinator", lambda dev: False)
                bridge, pub = await bridge_on(c, hub_dir)
                try:  # the bug: up on the other network, zigbee.db's newest backup
                    assert pub.value(HUB_ID, "zigbee/pan-id") == f"0x{c.network.pan_id:04x}"
                    await backed_up(bridge.app, c.network.pan_id)
                finally:
                    await bridge.stop()

        async with Stick(tmp_path / "a.json") as a:
            caplog.clear()
            bridge, pub = await bridge_on(a, hub_dir)
            try:
                assert pub.value(HUB_ID, "zigbee/pan-id") == f"0x{ours.pan_id:04x}"
                await pub.state(dev_id(plug), "ready")
                assert children(pub) == {dev_id(plug), dev_id(sensor)}
                assert dev_id(their_coordinator) not in pub.devices
                messages = [r.getMessage() for r in caplog.records]
                assert any(f"(address {a.ieee}) holds a network the hub ran before the one of "
                           "zigbee.db's latest backup: restored" in m for m in messages)
                assert any(f"zigbee.db knew it under {their_coordinator}, now forgotten" in m
                           for m in messages), messages
            finally:
                await bridge.stop()

            # For good: the next start has no other coordinator to forget.
            caplog.clear()
            bridge, pub = await bridge_on(a, hub_dir)
            try:
                await pub.state(dev_id(plug), "ready")
                assert children(pub) == {dev_id(plug), dev_id(sensor)}
                assert not [r for r in caplog.records if "forgotten" in r.getMessage()]
            finally:
                await bridge.stop()

    run_async(main(), 150)


def test_a_channel_setting_the_running_network_does_not_use_is_said_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """[zigbee] channel is used only when a network is formed: changed afterwards, it
    silently did nothing."""
    caplog.set_level(logging.INFO, logger="gatewayd")
    hub_dir = tmp_path / "hub"
    hub_dir.mkdir()

    async def main() -> None:
        async with Stick(tmp_path / "a.json") as a:
            bridge, _pub = await bridge_on(a, hub_dir)  # formed on channel 15
            await bridge.stop()
            assert not [r for r in caplog.records if "channel" in r.getMessage()
                        and r.levelno >= logging.WARNING]
            pub = Recorder()
            hub = homie.Device(HUB_ID, "Test hub")
            pub.add_device(hub)
            bridge = ZigbeeBridge(replace(a.config(), channel=20), hub_dir, pub, hub=hub,
                                  retry_min=0.05, retry_max=0.2, shutdown_timeout=2.0)
            await bridge.start()
            try:
                async with asyncio.timeout(20):
                    await bridge.radio_up.wait()
                assert pub.value(HUB_ID, "zigbee/channel") == 15
                mark = len(pub.values(HUB_ID, "zigbee/status"))
                await sim(bridge, "drop")  # the radio lost and started again
                await pub.until(lambda: "ready" in pub.values(HUB_ID, "zigbee/status")[mark:],
                                20)
            finally:
                await bridge.stop()
        assert [r.getMessage() for r in caplog.records if "[zigbee] channel" in r.getMessage()
                ] == ["zigbee: the network runs on channel 15, not on [zigbee] channel = 20, "
                      "which is used only when a network is formed (gatewayctl reset --full "
                      "forms a new one on it; the devices are paired again)"]

    run_async(main(), 120)


def test_only_the_coordinators_address_makes_a_coordinator() -> None:
    """A device whose own node descriptor calls it a coordinator (a firmware's mistake) was
    taken for a former coordinator and forgotten at every start (a reviewer's reading):
    only nwk 0x0000, which every network gives its coordinator, counts."""
    wrong = SimpleNamespace(nwk=0x1A2B, node_desc=SimpleNamespace(logical_type=0))
    assert not is_coordinator(wrong)
    assert is_coordinator(SimpleNamespace(nwk=0x0000, node_desc=None))
