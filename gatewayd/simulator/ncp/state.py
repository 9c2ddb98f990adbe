"""The NCP's non-volatile memory: the network it formed, its keys and tables, its tokens,
and the simulated devices on its air, in one JSON file written atomically.

What a real NCP keeps in NVM3 survives a reset, a TCP drop and the emulator's own
restart: PAN id, extended PAN id, channel, network key and its sequence number and
frame counter, the TC link key, the node's EUI64 and node id, the child table, the key
table and any tokens a host wrote. Values are JSON-friendly (hex strings for bytes).
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import threading
from pathlib import Path
from typing import Any

from gatewayd.runtime.atomicfile import atomic_write

STATE_VERSION = 1
FRAME_COUNTER_STEP = 4096  # a real stack persists frame counters in steps, too


class StateFileError(Exception):
    """The state file exists but is not ours (or is damaged)."""


@dataclasses.dataclass
class Child:
    eui64: str
    node_id: int
    node_type: int  # EmberNodeType


@dataclasses.dataclass
class LinkKey:
    eui64: str
    key: str  # hex
    outgoing_fc: int = 0
    incoming_fc: int = 0


@dataclasses.dataclass
class Network:
    """The parameters of the network the NCP formed."""

    pan_id: int
    extended_pan_id: str  # hex, wire order
    channel: int
    tx_power: int
    nwk_manager_id: int
    nwk_update_id: int
    channels: int
    network_key: str  # hex
    network_key_seq: int
    tc_link_key: str  # hex: the preconfigured (possibly hashed) key
    security_bitmask: int  # EmberInitialSecurityBitmask given by the host
    tc_eui64: str


@dataclasses.dataclass
class Nvram:
    eui64: str  # hex, wire order (little-endian)
    node_id: int = 0xFFFE
    network: Network | None = None
    nwk_frame_counter: int = 0
    aps_frame_counter: int = 0
    children: list[Child] = dataclasses.field(default_factory=list)
    key_table: list[LinkKey | None] = dataclasses.field(default_factory=list)
    tokens: dict[str, str] = dataclasses.field(default_factory=dict)  # "key:index" -> hex
    mfg_tokens: dict[str, str] = dataclasses.field(default_factory=dict)  # id -> hex
    devices: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # the air's
    # the devices of networks the NCP left, by extended PAN id (hex): they stay on those
    behind: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)

    @classmethod
    def fresh(cls) -> Nvram:
        # A locally administered, unicast EUI64 (wire order: the first byte is the last)
        raw = bytearray(secrets.token_bytes(8))
        raw[7] = (raw[7] | 0x02) & 0xFE
        return cls(eui64=raw.hex())

    def to_json(self) -> dict[str, Any]:
        """Fresh containers throughout (``asdict`` copies); ``devices`` is not copied
        again: ``Air.to_json`` makes it anew for every save, and copying it was most of
        the cost of one."""
        data = dataclasses.asdict(dataclasses.replace(self, devices=[]))
        data["devices"] = self.devices
        data["version"] = STATE_VERSION
        return data

    @classmethod
    def from_json(cls, data: Any) -> Nvram:
        if not isinstance(data, dict):
            raise StateFileError("not a JSON object")
        if data.get("version") != STATE_VERSION:
            raise StateFileError(f"unknown state version {data.get('version')!r}")
        network = data.get("network")
        keys = [LinkKey(**k) if k else None for k in data.get("key_table", [])]
        return cls(
            eui64=str(data["eui64"]), node_id=int(data.get("node_id", 0xFFFE)),
            network=Network(**network) if network else None,
            nwk_frame_counter=int(data.get("nwk_frame_counter", 0)),
            aps_frame_counter=int(data.get("aps_frame_counter", 0)),
            children=[Child(**c) for c in data.get("children", [])], key_table=keys,
            tokens=dict(data.get("tokens", {})), mfg_tokens=dict(data.get("mfg_tokens", {})),
            devices=list(data.get("devices", [])), behind=dict(data.get("behind", {})))


class Store:
    """Loads and saves :class:`Nvram`; ``path=None`` keeps it in memory only.

    A save is two steps so that the second can run in a thread: :meth:`snapshot` (on
    the emulator's loop: the state as fresh containers) and :meth:`write` (encoding,
    fsync and rename, from any thread). The timed save during a report stream had held
    the loop for several ms each second, and every report due then waited (the p99 of
    both stacks in bench/README.md). Writes are ordered: one from an older snapshot
    than the file holds is skipped.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.saves = 0
        self._lock = threading.Lock()
        self._taken = 0  # snapshots taken
        self._written = 0  # the newest snapshot in the file

    def load(self) -> Nvram:
        if self.path is None or not self.path.exists():
            return Nvram.fresh()
        try:
            return Nvram.from_json(json.loads(self.path.read_text()))
        except (ValueError, KeyError, TypeError, StateFileError) as exc:
            raise StateFileError(f"{self.path} is not an NCP emulator state file ({exc}); "
                                 "delete it to start with an empty NCP") from None

    def save(self, nvram: Nvram) -> None:
        self.write(*self.snapshot(nvram))

    def snapshot(self, nvram: Nvram) -> tuple[dict[str, Any], int]:
        self._taken += 1
        return nvram.to_json(), self._taken

    def write(self, data: dict[str, Any], number: int) -> None:
        if self.path is None:
            return
        with self._lock:
            if number <= self._written:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps(data, indent=1).encode())
            self._written = number
            self.saves += 1
