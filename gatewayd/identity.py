"""Who the hub is: its MAC, device id and the names derived from them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
SYS_NET = Path("/sys/class/net")


@dataclass(frozen=True)
class Identity:
    device_id: str
    mac: str  # aa:bb:cc:dd:ee:ff
    product: str

    @property
    def mac4(self) -> str:
        return self.mac.replace(":", "")[-4:].upper()

    @property
    def mac6(self) -> str:
        return self.mac.replace(":", "")[-6:].upper()

    def render(self, template: str) -> str:
        """Fill an SSID/BLE-name template; BLE and SSID limits are the caller's concern."""
        return template.format(product=self.product, mac4=self.mac4, mac6=self.mac6,
                               device_id=self.device_id)


def device_id_from_mac(mac: str) -> str:
    return mac.lower().replace(":", "-")


def _default_route_interface(proc_route: Path = Path("/proc/net/route")) -> str | None:
    try:
        lines = proc_route.read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000":
            return fields[0]
    return None


def read_mac(interface: str, sys_net: Path = SYS_NET) -> str | None:
    try:
        mac = (sys_net / interface / "address").read_text().strip().lower()
    except OSError:
        return None
    if not _MAC.fullmatch(mac) or mac == "00:00:00:00:00:00":
        return None
    return mac


def primary_mac(preferred: str = "", sys_net: Path = SYS_NET) -> str:
    """The MAC of the configured interface, else the default route's, else the first NIC's.

    Falls back to a locally administered placeholder so a hub with an odd network
    set-up still starts (and says so in status) instead of refusing to boot.
    """
    candidates: list[str] = []
    if preferred:
        candidates.append(preferred)
    route_if = _default_route_interface()
    if route_if:
        candidates.append(route_if)
    try:
        candidates += sorted(p.name for p in sys_net.iterdir() if p.name != "lo")
    except OSError:
        pass
    for name in candidates:
        mac = read_mac(name, sys_net)
        if mac:
            return mac
    return "02:00:00:00:00:01"


def cpu_serial(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """A Raspberry Pi's serial number (the ``Serial`` line of /proc/cpuinfo), "" elsewhere."""
    try:
        lines = cpuinfo.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip().lower() == "serial":
            serial = value.strip().lower()
            if re.fullmatch(r"[0-9a-f]{1,64}", serial) and serial.strip("0"):
                return serial
    return ""
