"""Values set from the app that outlive a restart: ``virtual-values.json`` in the state dir.

A device type names the settable properties whose value is a person's setting rather than
a reading (a timer's ``duration``) in :attr:`VirtualDevice.kept_values`. The host restores
them before a device is published and remembers each one a ``/set`` changes. Each value is
stored with the configured value it replaced: when the configuration file is edited since,
the file wins (a person changed the setting there, deliberately).

File format (``docs/interfaces.md``)::

    {"version": 1, "devices": {"virtual-kettle":
        {"timer/duration": {"value": 600.0, "configured": 300.0}}}}

Written atomically with mode 0600, off the event loop, one write at a time (a burst of
``/set`` is one write after the one in progress). A file that cannot be read or is damaged
is logged by name and read as empty (the configured values apply); a damaged entry is
skipped. Bounded by the configuration: only configured devices' kept properties are stored.
An entry dropped at start (its device is no longer configured, its configured value was
edited, its value is no longer usable) is dropped from the file too, at once: left there, it
would come back when the configuration is edited back or the device configured again, an
old setting from the app beating the later edit.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatewayd import homie
from gatewayd.runtime.atomicfile import atomic_write
from gatewayd.runtime.jsonbody import BadBody, loads, read_bounded

FILE_NAME = "virtual-values.json"
VERSION = 1
MAX_FILE_BYTES = 1 << 20
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kept:
    value: Any
    configured: Any


Entries = dict[str, dict[str, Kept]]  # device id -> "node/property" -> Kept


def parse(text: str) -> tuple[Entries, list[str]]:
    """The entries of a file's text, and what was wrong with it (for the log)."""
    try:
        data = loads(text, "it")
    except BadBody as exc:  # not JSON, too deep, NaN or Infinity: worded where every read is
        return {}, [str(exc)]
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return {}, [f"it is not a version {VERSION} file"]
    devices = data.get("devices")
    if not isinstance(devices, dict):
        return {}, ["'devices' is not an object"]
    entries: Entries = {}
    problems: list[str] = []
    for device_id, paths in devices.items():
        if not isinstance(paths, dict):
            problems.append(f"{device_id}: not an object")
            continue
        for path, raw in paths.items():
            if not isinstance(raw, dict) or set(raw) != {"value", "configured"}:
                problems.append(f"{device_id} {path}: needs 'value' and 'configured'")
                continue
            entries.setdefault(device_id, {})[path] = Kept(raw["value"], raw["configured"])
    return entries, problems


def encode(entries: Entries) -> bytes:
    devices = {device_id: {path: {"value": k.value, "configured": k.configured}
                           for path, k in sorted(paths.items())}
               for device_id, paths in sorted(entries.items()) if paths}
    return (json.dumps({"version": VERSION, "devices": devices}, indent=1) + "\n").encode()


def read(path: Path) -> Entries:
    raw = read_bounded(path, MAX_FILE_BYTES, log, "the configured values apply")
    if raw is None:
        return {}
    entries, problems = parse(raw.decode("utf-8", "replace"))
    for problem in problems:
        log.warning("%s: %s; skipped", path, problem)
    return entries


def _same(prop: homie.Property, stored: Any, value: Any) -> bool:
    try:
        return bool(prop.validate(stored) == value)
    except ValueError:
        return False


class KeptValues:
    """The kept values of the configured devices; ``path`` None keeps nothing (tests)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: Entries = {}
        self._saving: asyncio.Task[None] | None = None
        self._dirty = False

    async def load(self, device_ids: set[str]) -> None:
        if self.path is None:
            return
        entries = await asyncio.to_thread(read, self.path)
        self.entries = {d: paths for d, paths in entries.items() if d in device_ids}
        if self.entries != entries:
            self._save_soon()

    def restore(self, device: homie.Device, paths: tuple[str, ...]) -> dict[str, Any]:
        """Put the kept values into ``device`` (not yet published); the configured value
        of each kept property, by path, which :meth:`remember` stores beside a new one."""
        configured: dict[str, Any] = {}
        # A list does as well as a tuple; a lone text would be kept letter by letter.
        if not isinstance(paths, tuple | list) or not all(isinstance(p, str) for p in paths):
            log.warning("%s: kept_values must be a tuple of 'node/property' texts, such as "
                        "('timer/duration',); nothing is kept", device.id)
            return configured
        stored = self.entries.get(device.id, {})
        before = dict(stored)
        for path in paths:
            try:
                prop = device.find(path)
            except KeyError:
                log.warning("%s: kept_values names %s, which it does not have", device.id,
                            path)
                continue
            configured[path] = prop.value
            kept = stored.pop(path, None)
            if kept is None or not _same(prop, kept.configured, prop.value):
                continue  # nothing kept, or the configuration was edited since: it wins
            try:
                prop.set(kept.value)
            except ValueError as exc:
                log.warning("%s %s: the kept value is not usable (%s); the configured "
                            "value applies", device.id, path, exc)
                continue
            # In the property's own form: JSON gives a colour back as a list, not a tuple.
            stored[path] = Kept(prop.value, configured[path])
        for path in set(stored) - set(configured):
            del stored[path]  # a property the type no longer keeps
        if stored != before:
            self._save_soon()
        return configured

    def remember(self, device_id: str, path: str, value: Any, configured: Any) -> None:
        stored = self.entries.setdefault(device_id, {})
        if value == configured:
            if stored.pop(path, None) is None:
                return
        elif stored.get(path) == Kept(value, configured):
            return
        else:
            stored[path] = Kept(value, configured)
        self._save_soon()

    def _save_soon(self) -> None:
        if self.path is None:
            return
        self._dirty = True
        if self._saving is None or self._saving.done():
            self._saving = asyncio.get_running_loop().create_task(self._save())

    async def _save(self) -> None:
        assert self.path is not None
        while self._dirty:
            self._dirty = False
            try:
                await asyncio.to_thread(atomic_write, self.path, encode(self.entries))
            except OSError as exc:
                log.warning("cannot write %s (%s): values set from the app will not "
                            "outlive a restart", self.path, exc.strerror or exc)

    async def flush(self) -> None:
        """Wait for a write in progress (at stop: a value set just before it is kept)."""
        if self._saving is not None:
            await asyncio.shield(self._saving)
