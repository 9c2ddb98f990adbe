"""``system``: the hub's own health as a device (CPU temperature, load, memory, disk, uptime).

Everything is read from /proc, /sys and statvfs: small files, fast enough to read on the
loop. A source this machine does not have (no thermal zone in a container) leaves its
property out of the device, so the tree never holds values that cannot be filled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatewayd import homie
from gatewayd.cloud import telemetry
from gatewayd.config import spec
from gatewayd.virtual.plugin import VirtualDevice

NODE = "system"


def read_load(proc: Path = telemetry.PROC) -> tuple[float, float, float] | None:
    """The 1, 5 and 15 minute load averages."""
    try:
        fields = (proc / "loadavg").read_text().split()
        return float(fields[0]), float(fields[1]), float(fields[2])
    except (OSError, ValueError, IndexError):
        return None


def read_disk(path: str) -> int | None:
    """Space in use on the file system holding ``path``, percent (as ``df`` counts it)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    usable = used + st.f_bavail * st.f_frsize  # df leaves root's reserve out of the total
    if usable <= 0:
        return None
    return max(0, min(100, round(100 * used / usable)))


def _absolute(path: str) -> str | None:
    # Relative to what? The daemon's working directory is nothing a person chose.
    return None if os.path.isabs(path) else "must be an absolute path, such as '/var/lib'"


@dataclass(frozen=True)
class SystemOptions:
    interval: float = spec(60.0, min=1, max=86400, doc="seconds between readings")
    disk: str = spec("/", check=_absolute,
                     doc="a path on the file system whose usage is reported")


class SystemDevice(VirtualDevice):
    Options = SystemOptions
    proc: Path = telemetry.PROC
    thermal: Path = telemetry.THERMAL

    def __init__(self, ctx: Any, options: SystemOptions) -> None:
        super().__init__(ctx, options)
        self.poll_interval = options.interval
        self.declared: set[str] = set()

    def read(self) -> dict[str, Any]:
        """Every readable value, by property id."""
        values: dict[str, Any] = {
            "cpu-temperature": telemetry.read_cpu_temperature(self.thermal),
            "memory": telemetry.read_memory(self.proc),
            "disk": read_disk(self.options.disk),
            "uptime": telemetry.read_uptime(self.proc),
        }
        load = read_load(self.proc)
        if load is not None:
            values.update(zip(("load-1", "load-5", "load-15"), load, strict=True))
        return {k: v for k, v in values.items() if v is not None}

    def nodes(self) -> list[homie.Node]:
        values = self.read()
        specs: list[tuple[str, str, dict[str, Any]]] = [
            ("cpu-temperature", "CPU temperature", {"datatype": "float", "unit": "°C"}),
            ("load-1", "Load (1 min)", {"datatype": "float"}),
            ("load-5", "Load (5 min)", {"datatype": "float"}),
            ("load-15", "Load (15 min)", {"datatype": "float"}),
            ("memory", "Memory used", {"datatype": "integer", "unit": "%", "format": "0:100"}),
            ("disk", "Disk used", {"datatype": "integer", "unit": "%", "format": "0:100"}),
            ("uptime", "Uptime", {"datatype": "integer", "unit": "s"}),
        ]
        props = [homie.Property(pid, name, value=values[pid], **kw)
                 for pid, name, kw in specs if pid in values]
        if not props:
            # Not even /proc: nothing to show, and an empty node is not allowed.
            raise RuntimeError("none of /proc, /sys or the disk is readable")
        self.declared = {p.id for p in props}
        return [homie.Node(NODE, "System", properties=props)]

    async def poll(self) -> None:
        values = self.read()
        for pid, value in values.items():
            if pid in self.declared:
                self.publish(NODE, pid, value)
        if "disk" in values:
            self.set_state("ready")
        else:
            # A path someone configured (a mistyped mount point, an unplugged disk): said,
            # not silently left out as a source this machine lacks is.
            self.set_state("alert", f"the disk {self.options.disk} cannot be read")
