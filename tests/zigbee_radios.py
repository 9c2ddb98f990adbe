"""The two simulated radios under the bridge, behind one test harness.

``virtual``: the zigpy-level virtual radio in the hub's process. ``bellows``: unmodified
bellows over ``tcp://`` to the EZSP NCP emulator, run on the test's event loop (bellows'
serial side has its own thread). Tests inject events through ``bridge.sim``, the same
path ``gatewayctl zigbee sim`` takes, so both radios are driven alike.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from gatewayd.bridge import ZigbeeBridge
from gatewayd.config import ZigbeeConfig

RADIOS = ["virtual", "bellows"]


class Radio:
    """``async with Radio(kind, state_dir) as radio:``; ``radio.config()`` for the bridge."""

    def __init__(self, kind: str, state_dir: Path, timeout: float = 0.5) -> None:
        self.kind = kind
        self.state_dir = state_dir
        self.timeout = timeout
        self.emu: Any = None
        self.net: Any = None
        self.zdo: list[int] = []  # ZDO requests the coordinator sent to devices
        self.left = asyncio.Event()  # a device left the network
        # Bridges started on this radio (tests/test_bridge.py, started()): stopped here
        # when a test fails before it stops them, or zigpy's database thread (aiosqlite's,
        # not a daemon thread) would keep the interpreter from exiting after the run.
        self.bridges: list[Any] = []

    async def __aenter__(self) -> Radio:
        if self.kind == "bellows":
            from gatewayd.simulator.ncp.emulator import Emulator

            self.emu = await Emulator(self.state_dir / "ncp.json").start()
            self._wrap(self.emu.air)
        else:
            from gatewayd.zigbee.virtual.radio import VirtualNetwork

            # Every bridge of the test is given this network (bridge_options), as the
            # daemon's one bridge keeps its own: restarts find the same air.
            self.net = VirtualNetwork(self.state_dir / "zigbee-virtual.json")
            self._wrap(self.net)
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if exc[0] is not None:
                for bridge in self.bridges:
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(10):
                            await bridge.stop()
        finally:
            if self.emu is not None:
                await self.emu.stop()

    def _wrap(self, air: Any) -> None:
        device_left = air.device_left

        def left(dev: Any) -> None:
            device_left(dev)
            self.left.set()

        air.device_left = left
        if self.kind == "bellows":
            deliver = air.deliver

            def record(nwk: int, aps: dict[str, Any], payload: bytes) -> Any:
                if aps["profileId"] == 0:
                    self.zdo.append(int(aps["clusterId"]))
                return deliver(nwk, aps, payload)

            air.deliver = record
        else:
            downlink = air.downlink

            def record_packet(packet: Any) -> None:
                if packet.profile_id == 0:
                    self.zdo.append(int(packet.cluster_id))
                downlink(packet)

            air.downlink = record_packet

    def bridge_options(self) -> dict[str, Any]:
        """What a bridge on this radio is given besides its config (the virtual network)."""
        return {"virtual": self.net} if self.net is not None else {}

    def config(self, **kw: Any) -> ZigbeeConfig:
        kw.setdefault("command_timeout", self.timeout)
        if self.kind == "bellows":
            return ZigbeeConfig(enabled=True, radio="bellows", device=self.emu.url,
                                sim_control=f"127.0.0.1:{self.emu.control_port}", **kw)
        return ZigbeeConfig(enabled=True, radio="virtual", **kw)

    @property
    def permit_open(self) -> bool:
        if self.emu is not None:
            return bool(self.emu.ncp.permit_open)
        return bool(self.net.permit_open)

    @property
    def unplugged_error(self) -> str:
        if self.emu is not None:
            return f"nothing listens at {self.emu.url}"
        return "the virtual radio is unplugged"


async def sim(bridge: ZigbeeBridge, action: str, **args: Any) -> Any:
    """``gatewayctl zigbee sim ACTION KEY=VALUE...``, as the control socket runs it."""
    link = bridge.sim
    assert link is not None
    return await link.call(action, args)
