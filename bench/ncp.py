"""Unmodified bellows on the EZSP NCP emulator: the figures of the emulator itself.

``python -m bench.ncp [--runs N]`` runs the bridge with bellows over ``tcp://`` to the
emulator (both on one event loop, as ``tests/test_bridge.py`` runs them) and prints JSON:

* ``emulator_lines``, ``ezsp_commands`` (the table: commands, callbacks, with a handler);
* ``bellows_form_s``: first start on an empty state directory, forming a network;
  ``bellows_restart_s``: the next start, which finds that network (same PAN id, extended
  PAN id, channel and key: checked, not re-formed);
* ``join_to_ready_s``: permit join to the child's ``ready`` (``sleeping`` for battery
  kinds), per catalog kind;
* ``reports_per_s``: a stream of 1,000 reports from one plug, as fast as bellows takes
  them, until the last value reaches the bridge's publisher (no coalescing).

Each figure is min/median/max over ``--runs`` (default 3). One process for both sides,
so this is the cost of the whole path, not of the daemon alone (``make bench-peers`` is).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from gatewayd import homie
from gatewayd.bridge import ZigbeeBridge
from gatewayd.config import ZigbeeConfig
from gatewayd.simulator.ncp.emulator import Emulator
from gatewayd.simulator.ncp.ezsp_commands import COMMANDS
from gatewayd.simulator.ncp.handlers import HANDLERS
from gatewayd.zigbee.virtual.catalog import KINDS

REPORTS = 1000


class Sink:
    """The least a ChildPublisher does: keep devices, wake waiters on every change."""

    def __init__(self) -> None:
        self.devices: dict[str, homie.Device] = {}
        self.changed = asyncio.Event()

    def add_device(self, device: homie.Device) -> None:
        self.devices[device.id] = device
        self.changed.set()

    def remove_device(self, device_id: str) -> None:
        self.devices.pop(device_id, None)
        self.changed.set()

    def set_value(self, device_id: str, node_id: str, property_id: str, value: Any) -> None:
        self.devices[device_id].find(f"{node_id}/{property_id}").set(value)
        self.changed.set()

    def set_state(self, device_id: str, state: str) -> None:
        self.devices[device_id].state = homie.check_state(state)
        self.changed.set()

    async def until(self, predicate: Any, timeout: float = 60.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


def _network(bridge: ZigbeeBridge) -> tuple[Any, ...]:
    assert bridge.app is not None
    info = bridge.app.state.network_info
    return (info.pan_id, info.extended_pan_id, info.channel, info.network_key.key)


async def _started(emu: Emulator, state_dir: Path, sink: Sink) -> tuple[ZigbeeBridge, float]:
    cfg = ZigbeeConfig(enabled=True, radio="bellows", device=emu.url,
                       sim_control=f"127.0.0.1:{emu.control_port}")
    hub = homie.Device("bench-hub", "bench hub")
    sink.add_device(hub)
    bridge = ZigbeeBridge(cfg, state_dir, sink, hub=hub, min_interval=0.0)
    began = time.perf_counter()
    await bridge.start()
    async with asyncio.timeout(120):
        await bridge.radio_up.wait()
    return bridge, time.perf_counter() - began


async def one_run(workdir: Path) -> dict[str, Any]:
    emu = await Emulator(workdir / "ncp.json").start()
    sink = Sink()
    try:
        bridge, form_s = await _started(emu, workdir, sink)
        network = _network(bridge)
        await bridge.stop()
        bridge, restart_s = await _started(emu, workdir, sink)
        if _network(bridge) != network:
            raise RuntimeError("the second start formed a new network")
        link = bridge.sim
        assert link is not None
        joins: dict[str, float] = {}
        plug = ""
        for kind in sorted(KINDS):
            await bridge.permit_join(60)
            began = time.perf_counter()
            ieee = str(await link.call("join", {"kind": kind}))
            device_id = "zigbee-" + ieee.replace(":", "")
            await sink.until(lambda d=device_id: d in sink.devices
                             and sink.devices[d].state in ("ready", "sleeping"))
            joins[kind] = time.perf_counter() - began
            if kind == "plug":
                plug = device_id
        began = time.perf_counter()
        await link.call("stream", {"count": REPORTS, "offset": 1})
        last = REPORTS / 10.0  # the plug reports deciwatts: value n is n / 10 W
        await sink.until(lambda: sink.devices[plug].find("meter/power").value == last, 300)
        reports_s = REPORTS / (time.perf_counter() - began)
        await bridge.stop()
    finally:
        await emu.stop()
    return {"form": form_s, "restart": restart_s, "joins": joins, "reports": reports_s}


def _spread(values: list[float], digits: int = 2) -> dict[str, float]:
    return {"min": round(min(values), digits), "median": round(statistics.median(values), digits),
            "max": round(max(values), digits)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ncp", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-ncp-") as tmp:
            runs.append(asyncio.run(one_run(Path(tmp))))
    ncp_dir = Path(__file__).resolve().parent.parent / "gatewayd" / "simulator" / "ncp"
    lines = sum(len(p.read_text().splitlines()) for p in ncp_dir.glob("*.py"))
    callbacks = sum(1 for c in COMMANDS.values() if c.callback)
    print(json.dumps({
        "emulator_lines": lines,
        "ezsp_commands": {"commands": len(COMMANDS) - callbacks, "callbacks": callbacks,
                          "handled": len(HANDLERS)},
        "bellows_form_s": _spread([r["form"] for r in runs]),
        "bellows_restart_s": _spread([r["restart"] for r in runs]),
        "join_to_ready_s": {kind: _spread([r["joins"][kind] for r in runs])
                            for kind in sorted(KINDS)},
        "reports_per_s": _spread([r["reports"] for r in runs], 0),
        "runs": args.runs,
    }, indent=2))


if __name__ == "__main__":
    main()
