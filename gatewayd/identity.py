"""Who the hub is: its MAC, device id and the names derived from them.

Also the rules of what ``state.json`` keeps of it with the setup code and device key
(:func:`read_label`: :mod:`gatewayd.state` checks the file with them), and what of those a
file that cannot be trusted still tells (:func:`salvage`). May import the standard library
only.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
SYS_NET = Path("/sys/class/net")
# A device id: the hub's (state.json, "" until first learned) and its children's (owed).
DEVICE_ID = re.compile(r"[a-z0-9][a-z0-9-]*[a-z0-9]")


@dataclass(frozen=True)
class Identity:
    device_id: str
    mac: str  # aa:bb:cc:dd:ee:ff
    product: str
    # This hub's own MAC, set only when the identity was made for other hardware and kept
    # (a paired hub whose SD card moved, or whose board was replaced): status warns of it.
    hardware_mac: str = ""

    @property
    def mac4(self) -> str:
        return self.mac.replace(":", "")[-4:].upper()

    @property
    def mac6(self) -> str:
        return self.mac.replace(":", "")[-6:].upper()

    def render(self, template: str, limit: int | None = None) -> str:
        """Fill an SSID/BLE-name template, within ``limit`` UTF-8 bytes (fit_name)."""
        return fit_name(template, limit, product=self.product, mac4=self.mac4,
                        mac6=self.mac6, device_id=self.device_id)


SSID_BYTES = 32  # an 802.11 SSID
BLE_NAME_BYTES = 29  # what a 31-byte scan response leaves for the name after its header


def fit_name(template: str, limit: int | None, product: str, **fields: str) -> str:
    """``template`` filled in; over ``limit`` bytes, the product is shortened, at a
    character boundary, never the per-hub part ({mac4}, {mac6}, {device_id}): cut at the
    end, every hub of a product showed the same name. Only a template whose other parts
    alone are too long is cut at the end (a warning of gatewayd.config)."""
    name = template.format(product=product, **fields)
    if limit is None or len(name.encode()) <= limit:
        return name
    for end in range(len(product) - 1, -1, -1):
        name = template.format(product=product[:end].rstrip(), **fields).strip()
        if len(name.encode()) <= limit:
            return name
    return name.encode()[:limit].decode("utf-8", "ignore")


def parse_hub_mac(text: str) -> str:
    """A MAC address a hub could have (six hex pairs, ``:`` or ``-`` between them, unicast,
    not all zero), as ``aa:bb:cc:dd:ee:ff``; ValueError saying what is wrong otherwise."""
    mac = text.strip().lower().replace("-", ":")
    if not _MAC.fullmatch(mac):
        raise ValueError(f"{text!r} is not a MAC address: give six hex pairs, "
                         "e.g. dc:a6:32:00:00:02")
    if mac == "00:00:00:00:00:00" or int(mac[:2], 16) & 1:
        raise ValueError(f"{text!r} is not a network card's address (all zero, or a "
                         "multicast one: the first byte is odd); e.g. dc:a6:32:00:00:02")
    return mac


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


class NoMacAddress(Exception):
    """No interface has a MAC yet: the hub cannot tell who it is."""


def read_mac(interface: str) -> str | None:
    try:
        mac = (SYS_NET / interface / "address").read_text().strip().lower()
    except OSError:
        return None
    if not _MAC.fullmatch(mac) or mac == "00:00:00:00:00:00":
        return None
    return mac


def mac_candidates() -> list[str]:
    """Where the hub's MAC is looked for without ``[hub] interface``, in order: the default
    route's interface, then every other interface but ``lo`` by name."""
    candidates: list[str] = []
    route_if = _default_route_interface()
    if route_if:
        candidates.append(route_if)
    candidates += _interfaces()
    return list(dict.fromkeys(candidates))


def _interfaces() -> list[str]:
    try:
        return sorted(p.name for p in SYS_NET.iterdir() if p.name != "lo")
    except OSError:
        return []


def primary_mac() -> str | None:
    """The MAC of the default route's interface, else the first NIC's; None if none has one
    (yet: a driver still loading at boot). Never a made-up MAC: the device id derived from
    it is stored for good and printed on the label."""
    for name in mac_candidates():
        mac = read_mac(name)
        if mac:
            return mac
    return None


def hub_mac(interface: str) -> str | None:
    """The MAC the hub is named after: ``[hub] interface``'s when it is set, never another
    card's (a Wi-Fi driver still loading would name the hub after its Ethernet card, for
    good); without it (""), :func:`primary_mac`."""
    return read_mac(interface) if interface else primary_mac()


def wait_for_mac(preferred: str, timeout: float, *, recorded: str = "", poll: float = 0.5,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] = time.sleep) -> str | None:
    """The MAC this hub goes by, looked for every ``poll`` seconds for up to ``timeout``.

    ``recorded``: the MAC the stored identity was made from ("" at a first start). It is
    returned as soon as any interface shows it: the same hardware. Otherwise the hub's own
    MAC (:func:`hub_mac`): with ``[hub] interface`` as soon as that interface shows one;
    without it, with a recorded MAC, only at the deadline (the card it was made from may be
    a driver still loading). At the deadline with none: None when a MAC is recorded (no
    sign of other hardware: the stored identity stays), else :class:`NoMacAddress` naming
    what was tried. Before the event loop runs (the daemon's identity is settled first),
    so a plain sleep."""
    deadline = clock() + timeout
    while True:
        if recorded and recorded in local_macs():
            return recorded
        own = hub_mac(preferred)
        expired = clock() >= deadline
        if own is not None and (preferred or not recorded or expired):
            return own
        if expired:
            if recorded:
                return None
            raise NoMacAddress(_no_mac(preferred, timeout))
        sleep(poll)


def local_macs() -> set[str]:
    """The MACs this machine's interfaces show."""
    return {mac for name in _interfaces() if (mac := read_mac(name))}


def _no_mac(preferred: str, timeout: float) -> str:
    if preferred:
        shown = ", ".join(_interfaces()) or "none but lo"
        what = "has no MAC address" if SYS_NET.joinpath(preferred).exists() \
            else "does not exist"
        return (f"[hub] interface {preferred} {what} after {timeout:g} s (this machine has: "
                f"{shown}); the hub's device id is made from its MAC, never from another "
                "card's, so it does not start without it (correct [hub] interface, or leave "
                "it empty to use the default route's interface)")
    tried = ", ".join(mac_candidates()) or f"none: {SYS_NET} lists no interface but lo"
    return (f"no network interface has a MAC address after {timeout:g} s (tried: {tried}); "
            "the hub's device id is made from it, so it does not start without one (set "
            "[hub] interface to the right one if need be)")


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


# ---- as state.json keeps it -----------------------------------------------------------------

def new_setup_code() -> str:
    return f"{secrets.randbelow(10**8):08d}"


def label_code(preset: str, stored: str, file: Path) -> str:
    """The setup code a hub keeps: the ``[hub] setup_code`` preset, the one the vendor
    printed on the label, over the stored one (a drop-in written after a first start, a
    reset); logged when it replaces it. "" when there is neither."""
    if preset and stored and preset != stored:
        log.warning("%s: the stored setup code is replaced by the [hub] setup_code preset",
                    file)
    return preset or stored

def _device_key(value: Any) -> bytes | None:
    try:
        key = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        return None
    return key if len(key) == 32 else None


@dataclass(frozen=True)
class Label:
    """Who ``state.json`` says the hub is: each field, or None where it fails its rule."""

    setup_code: str | None  # 8 digits: on the hub's label, with the device id
    device_key: bytes | None  # 32 bytes, written as 64 hex digits
    device_id: str | None  # "" until the hub first learned it
    mac: str | None

    def told(self) -> str:
        names = ("setup code", "device key", "device id", "MAC")
        values = (self.setup_code, self.device_key, self.device_id, self.mac)
        return ", ".join(n for n, v in zip(names, values, strict=True) if v) or "nothing"


def read_label(data: dict[str, Any]) -> Label:
    """The rules :mod:`gatewayd.state` checks these fields of the file with."""
    identity = data.get("identity") or {}
    identity = identity if isinstance(identity, dict) else {}
    code, device_id, mac = (data.get("setup_code"), identity.get("device_id", ""),
                            identity.get("mac", ""))
    return Label(
        setup_code=code if isinstance(code, str) and len(code) == 8 and code.isdigit() else None,
        device_key=_device_key(data.get("device_key")),
        device_id=device_id if isinstance(device_id, str) and (
            device_id == "" or DEVICE_ID.fullmatch(device_id)) else None,
        mac=mac if isinstance(mac, str) and (mac == "" or _MAC.fullmatch(mac)) else None)


def salvage(raw: bytes) -> Label:
    """What a state file that cannot be trusted (damaged, or written by a newer gatewayd)
    still tells of who the hub is: each field that passes its own rule.

    A reset keeps them: the setup code and device id are printed on the hub's label, which
    a new random code would make useless."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON at all: nothing can be told apart
        data = None
    return read_label(data if isinstance(data, dict) else {})
