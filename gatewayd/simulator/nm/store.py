"""``ProfileStore``: the profiles NetworkManager keeps "on disk", across restarts of the mock.

Real NetworkManager keeps saved profiles in /etc/NetworkManager/system-connections and
in-memory ones under /run, which a reboot empties. The mock's ``profiles_file`` parameter is
its /etc: a JSON file holding, in order, the last saved settings of every profile that has
them. A profile added in memory (AddConnectionUnsaved, AddConnection2 IN_MEMORY, the hub's
hotspot) is never written; a saved profile updated in memory (UpdateUnsaved, Update2
IN_MEMORY or IN_MEMORY_DETACHED) keeps its old settings on disk, which come back after a
restart, as NetworkManager's shadowed keyfile does; Update2 IN_MEMORY_ONLY and Delete remove
it from disk. (Deleting an IN_MEMORY_DETACHED profile removes the disk copy too; the mock does
not model NetworkManager's nmmeta tombstones in /run.)

The file keeps each value with its D-Bus signature, ``{"connection": {"id": ["s", "x"]}}``
(``ay`` as hex, arrays as lists, dictionaries and structs as lists of pairs and members), so
settings come back with the types the client sent. It is written atomically, mode 0600 (it
holds Wi-Fi passwords). An unreadable file stops the mock (``StoreError``: the template prints
the message naming the file as its last line and exits 2); a profile in it that NetworkManager
would refuse is skipped with a warning, as NetworkManager skips a bad keyfile.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import dbus

from gatewayd.runtime.atomicfile import atomic_write
from gatewayd.simulator.nm.bus import signature_of

_SCALARS: dict[str, type] = {
    "s": dbus.String, "o": dbus.ObjectPath, "g": dbus.Signature, "b": dbus.Boolean,
    "y": dbus.Byte, "n": dbus.Int16, "q": dbus.UInt16, "i": dbus.Int32, "u": dbus.UInt32,
    "x": dbus.Int64, "t": dbus.UInt64, "d": dbus.Double,
}

Encoded = dict[str, dict[str, Any]]


class StoreError(RuntimeError):
    """The profiles file cannot be read back; the message names it."""


def _signature(value: Any) -> str:
    sig = signature_of(value)
    if sig != "?":
        return sig
    if isinstance(value, dbus.Struct):
        return "(" + "".join(_signature(v) for v in value) + ")"
    for kind, sig in ((bool, "b"), (int, "i"), (float, "d"), (str, "s"), (bytes, "ay")):
        if isinstance(value, kind):
            return sig
    raise ValueError(f"cannot store a value of type {type(value).__name__}")


def _split(sig: str) -> tuple[str, str]:
    """The first complete type of a signature, and the rest."""
    if sig[0] == "a":
        first, rest = _split(sig[1:])
        return "a" + first, rest
    if sig[0] in "({":
        depth = 0
        for i, c in enumerate(sig):
            depth += c in "({"
            depth -= c in ")}"
            if depth == 0:
                return sig[:i + 1], sig[i + 1:]
        raise ValueError(f"unbalanced signature {sig!r}")
    return sig[0], sig[1:]


def _members(sig: str) -> list[str]:
    out = []
    while sig:
        first, sig = _split(sig)
        out.append(first)
    return out


def _data(sig: str, value: Any) -> Any:
    if sig == "v":
        return [_signature(value), _data(_signature(value), value)]
    if sig == "ay":
        return bytes(value).hex()
    if sig.startswith("a{"):
        key, val = _members(sig[2:-1])
        return [[_data(key, k), _data(val, v)] for k, v in value.items()]
    if sig[0] == "a":
        return [_data(sig[1:], v) for v in value]
    if sig[0] == "(":
        return [_data(s, v) for s, v in zip(_members(sig[1:-1]), value, strict=True)]
    if sig == "b":
        return bool(value)
    if sig == "d":
        return float(value)
    if sig in _SCALARS and sig not in ("s", "o", "g"):
        return int(value)
    return str(value)


def _value(sig: str, data: Any, level: int = 0) -> Any:
    if sig == "v":
        inner, content = data
        return _value(str(inner), content, level + 1)
    if sig == "ay":
        return dbus.ByteArray(bytes.fromhex(data), variant_level=level)
    if sig.startswith("a{"):
        key, val = _members(sig[2:-1])
        return dbus.Dictionary({_value(key, k): _value(val, v) for k, v in data},
                               signature=key + val, variant_level=level)
    if sig[0] == "a":
        return dbus.Array([_value(sig[1:], v) for v in data], signature=sig[1:],
                          variant_level=level)
    if sig[0] == "(":
        members = _members(sig[1:-1])
        return dbus.Struct([_value(s, v) for s, v in zip(members, data, strict=True)],
                           signature=sig[1:-1], variant_level=level)
    if sig not in _SCALARS:
        raise ValueError(f"unknown D-Bus type {sig!r}")
    return _SCALARS[sig](data, variant_level=level)


def encode(settings: dict[str, dict[str, Any]]) -> Encoded:
    """Settings as sent over D-Bus -> the file's JSON (each value with its signature)."""
    return {str(name): {str(key): [_signature(v), _data(_signature(v), v)]
                        for key, v in values.items()}
            for name, values in settings.items()}


def decode(stored: Encoded) -> dict[str, dict[str, Any]]:
    """The file's JSON -> settings typed as a client sends them (values are variants)."""
    return {str(name): {str(key): _value(str(item[0]), item[1], 1)
                        for key, item in values.items()}
            for name, values in stored.items()}


class ProfileStore:
    """The ``profiles_file``: read once at start, rewritten whole on every change."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[dict[str, dict[str, Any]]]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"{self.path}: unreadable saved profiles ({exc.strerror}); "
                             "delete the file to start without them") from None
        except ValueError as exc:  # the decoder's wording would not help; where it broke does
            where = (f" at line {exc.lineno}, column {exc.colno}"
                     if isinstance(exc, json.JSONDecodeError) else "")
            raise StoreError(f"{self.path}: unreadable saved profiles (not JSON{where}); "
                             "delete the file to start without them") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("profiles"), list):
            raise StoreError(f"{self.path}: expected {{\"profiles\": [...]}}; delete the "
                             "file to start without them")
        profiles = []
        for i, stored in enumerate(raw["profiles"]):
            try:
                profiles.append(decode(stored))
            except (AttributeError, TypeError, ValueError, IndexError) as exc:
                print(f"warning: {self.path}: profile {i} skipped: {exc}", file=sys.stderr)
        return profiles

    def save(self, profiles: list[Encoded]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps({"profiles": profiles}, indent=1).encode())
