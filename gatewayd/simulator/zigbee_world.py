"""The simulator's Zigbee radio: the EZSP NCP emulator in a process of its own.

``gatewayd --simulate`` runs the hub with ``radio = "bellows"``, unmodified, on
``tcp://127.0.0.1:PORT``, as a hub with a Silicon Labs stick runs; the emulator
(``gatewayd-ncp-sim``, :mod:`gatewayd.simulator.ncp`) is that stick and the devices on its
air. Its own process, so that its CPU time is not the hub's. Its control port is given to
the hub as ``[zigbee] sim_control`` (``gatewayctl zigbee sim``) and written to ``sim.json``
``zigbee``. ``DIR/zigbee/ncp.json`` is the stick's memory (network, keys, frame counters,
devices): it survives a restart of the workdir, as ``zigbee.db`` does in the hub's state.

``radio = "virtual"`` keeps the older in-process zigpy radio instead (no process).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatewayd.simulator.procs import Child, wait_until

RADIOS = ("bellows", "virtual")
_LISTENING = re.compile(r"gatewayd-ncp-sim: ncp (tcp://[^\s:]+:(\d+)) control ([^\s]+:(\d+))")


@dataclass
class ZigbeeWorld:
    workdir: Path
    radio: str = "bellows"
    child: Child | None = None
    url: str | None = None  # tcp://127.0.0.1:PORT, what bellows opens
    control: str | None = None  # 127.0.0.1:PORT, the emulator's control port

    @property
    def state_file(self) -> Path:
        return self.workdir / "ncp.json"

    @property
    def log_file(self) -> Path:
        return self.workdir / "ncp.log"

    def launch(self) -> ZigbeeWorld:
        """Start the emulator; :meth:`wait_ready` waits for its ports (meanwhile the rest
        of the world can start)."""
        if self.radio not in RADIOS:
            raise ValueError(f"zigbee radio: one of {', '.join(RADIOS)}, got {self.radio!r}")
        if self.radio != "bellows":
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        self.child = Child("ncp-emulator", [
            sys.executable, "-m", "gatewayd.simulator.ncp", "--host", "127.0.0.1",
            "--port", "0", "--control-port", "0", "--state", str(self.state_file),
            "--log-level", "warning"], self.log_file)
        return self

    def wait_ready(self, timeout: float = 30.0) -> ZigbeeWorld:
        if self.child is None:
            return self
        match = wait_until(self._listening, timeout, "the NCP emulator to listen", self.child)
        assert match is not None
        self.url, self.control = match.group(1), match.group(3)
        return self

    def _listening(self) -> re.Match[str] | None:
        with self.log_file.open("rb") as f:
            f.seek(self._log_offset)
            return _LISTENING.search(f.read().decode(errors="replace"))

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()  # SIGTERM: the emulator saves ncp.json on its way out
            self.child = None

    def hub_settings(self) -> dict[str, Any]:
        """The daemon's ``[zigbee]`` section in this world."""
        if self.radio == "virtual":
            return {"enabled": True, "radio": "virtual", "sim_control": ""}
        assert self.url is not None and self.control is not None, "wait_ready() first"
        return {"enabled": True, "radio": "bellows", "device": self.url,
                "sim_control": self.control}

    def describe(self) -> dict[str, Any]:
        """``sim.json`` ``zigbee``."""
        if self.radio == "virtual":
            return {"radio": "virtual", "port": None, "control": None, "state": None,
                    "log": None}
        return {"radio": "bellows", "port": self.url, "control": self.control,
                "state": str(self.state_file), "log": str(self.log_file)}
