"""The hub's own telemetry (``$telemetry/*``) and the hub's Homie device.

Each reader returns None when its source is not readable on this machine (no Wi-Fi
interface, no thermal zone, a container without /sys): such telemetry is left out.
Readers only read small procfs/sysfs files, which is fast enough to do on the loop; an
async reader (the Wi-Fi signal from NetworkManager, :mod:`gatewayd.nm.strength`, which the
daemon passes in) asks over D-Bus at each refresh. Its telemetry is declared from the
start, without a value until it reads one: the hub joins its network after it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatewayd import __version__, homie
from gatewayd.cloud.attempts import CloudOutcome, CloudResult

if TYPE_CHECKING:
    from gatewayd.cloud.link import CloudLink

log = logging.getLogger(__name__)

PROC = Path("/proc")
THERMAL = Path("/sys/class/thermal")
# A TEST-NET-1 address (RFC 5737): "connecting" a UDP socket to it sends nothing but makes
# the kernel pick the source address of the default route.
_ROUTE_PROBE = ("192.0.2.1", 9)
ASYNC_READ_TIMEOUT = 10.0  # seconds an async reader may take (a wedged NetworkManager)

Reader = Callable[[], Any]  # the value (None: not readable now), or an async def's coroutine


def read_ip() -> str | None:
    """The address the default route uses, or None without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(_ROUTE_PROBE)
            address = str(sock.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("0.") else address


def read_wifi_signal(proc: Path = PROC, interface: str | None = None) -> int | None:
    """Signal strength 0-100 % of the (first or named) wireless interface."""
    try:
        lines = (proc / "net" / "wireless").read_text().splitlines()[2:]
    except OSError:
        return None
    for line in lines:
        name, _, rest = line.partition(":")
        if interface and name.strip() != interface:
            continue
        fields = rest.split()
        if len(fields) < 3:
            continue
        try:
            level = float(fields[2].rstrip("."))
        except ValueError:
            continue
        if level < 0:  # dBm: -100 dBm -> 0 %, -50 dBm -> 100 %
            return max(0, min(100, round(2 * (level + 100))))
        try:  # some drivers report link quality out of 70 instead
            return max(0, min(100, round(float(fields[1].rstrip(".")) * 100 / 70)))
        except ValueError:
            return None
    return None


def read_uptime(proc: Path = PROC) -> int | None:
    """Seconds since boot."""
    try:
        return int(float((proc / "uptime").read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        return None


def read_memory(proc: Path = PROC) -> int | None:
    """Memory in use, percent of total (MemTotal - MemAvailable)."""
    try:
        text = (proc / "meminfo").read_text()
    except OSError:
        return None
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0])
    total, available = values.get("MemTotal"), values.get("MemAvailable")
    if not total or available is None:
        return None
    return max(0, min(100, round(100 * (total - available) / total)))


def read_cpu_temperature(thermal: Path = THERMAL) -> float | None:
    """CPU temperature in °C (the ``cpu-thermal`` zone on a Pi, else the first readable)."""
    try:
        zones = sorted(thermal.glob("thermal_zone*"))
    except OSError:
        return None

    def zone_type(zone: Path) -> str:
        try:
            return (zone / "type").read_text().strip()
        except OSError:
            return ""

    zones.sort(key=lambda z: "cpu" not in zone_type(z))
    for zone in zones:
        try:
            return round(int((zone / "temp").read_text().strip()) / 1000, 1)
        except (OSError, ValueError):
            continue
    return None


def default_readers(signal: Reader = read_wifi_signal) -> dict[str, Reader]:
    """The hub's telemetry; ``signal`` is the Wi-Fi control's where the hub has one."""
    return {"ip": read_ip, "signal": signal, "uptime": read_uptime,
            "memory": read_memory, "cpu-temperature": read_cpu_temperature}


_SPECS: dict[str, dict[str, Any]] = {
    "ip": {"name": "IP address", "datatype": homie.Datatype.STRING},
    "signal": {"name": "Wi-Fi signal", "datatype": homie.Datatype.INTEGER, "unit": "%",
               "format": "0:100"},
    "uptime": {"name": "Uptime", "datatype": homie.Datatype.INTEGER, "unit": "s"},
    "memory": {"name": "Memory usage", "datatype": homie.Datatype.INTEGER, "unit": "%",
               "format": "0:100"},
    "cpu-temperature": {"name": "CPU temperature", "datatype": homie.Datatype.FLOAT,
                        "unit": "°C"},
}


def _later(reader: Reader) -> bool:
    """An async reader: read at each refresh, not when the device is made."""
    return inspect.iscoroutinefunction(reader)


def _now(readers: Mapping[str, Reader]) -> dict[str, Any]:
    """The plain readers' readable values; a failing reader is logged and left out."""
    values: dict[str, Any] = {}
    for telemetry_id, reader in readers.items():
        if _later(reader):
            continue
        try:
            value = reader()
        except Exception:
            log.exception("telemetry reader %s failed", telemetry_id)
            value = None
        if value is not None:
            values[telemetry_id] = value
    return values


async def sample(readers: Mapping[str, Reader]) -> dict[str, Any]:
    """The readable values, the async readers' awaited; a failing one is logged and left
    out."""
    values = _now(readers)
    for telemetry_id, reader in readers.items():
        if not _later(reader):
            continue
        try:
            async with asyncio.timeout(ASYNC_READ_TIMEOUT):
                value = await reader()
        except TimeoutError:
            log.warning("telemetry reader %s took over %g s: left out", telemetry_id,
                        ASYNC_READ_TIMEOUT)
            value = None
        except Exception:
            log.exception("telemetry reader %s failed", telemetry_id)
            value = None
        if value is not None:
            values[telemetry_id] = value
    return values


def hub_device(device_id: str, name: str, mac: str, *, fw_name: str = "gatewayd",
               fw_version: str = __version__, implementation: str = "gatewayd",
               readers: Mapping[str, Reader] | None = None,
               options: list[homie.Property] | None = None,
               nodes: list[homie.Node] | None = None) -> homie.Device:
    """The hub's own device, with the telemetry that is readable here (an async reader's
    declared, its value left to the first refresh)."""
    readers = default_readers() if readers is None else readers
    values = _now(readers)
    telemetry = [homie.Property(tid, value=values.get(tid), **_SPECS.get(tid, {}))
                 for tid, reader in readers.items() if tid in values or _later(reader)]
    return homie.Device(device_id, name, localip=str(values.get("ip", "")), mac=mac,
                        fw_name=fw_name, fw_version=fw_version,
                        implementation=implementation, telemetry=telemetry,
                        options=options or (), nodes=nodes or ())


class TelemetryReporter:
    """Refreshes the hub's ``$telemetry`` values through the link every ``interval``, and
    as soon as the link connects: the hub has just joined a network (its address, its
    signal), which an app would otherwise show stale for up to a minute."""

    def __init__(self, link: CloudLink, device_id: str, *, interval: float = 60.0,
                 readers: Mapping[str, Reader] | None = None) -> None:
        self._link = link
        self._device_id = device_id
        self._interval = interval
        self._readers = default_readers() if readers is None else readers
        self._connected = asyncio.Event()
        link.add_listener(self._on_link)

    def _on_link(self, result: CloudResult) -> None:
        if result.outcome == CloudOutcome.CONNECTED:
            self._connected.set()

    async def refresh(self) -> None:
        values = await sample(self._readers)
        device = self._link.device(self._device_id)
        for telemetry_id, value in values.items():
            prop = device.telemetry.get(telemetry_id)
            if prop is None or prop.value == value:
                continue
            try:
                self._link.set_value(self._device_id, "$telemetry", telemetry_id, value)
            except ValueError as exc:
                log.warning("telemetry %s: %s", telemetry_id, exc)

    async def run(self) -> None:
        """Refresh forever; cancel the task to stop."""
        while True:
            self._connected.clear()
            with contextlib.suppress(KeyError):
                await self.refresh()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connected.wait(), self._interval)
