"""A set of IEEE addresses kept in a small private JSON file in the state directory.

``{"<key>": ["8b:b3:...", ...]}``: :mod:`~gatewayd.zigbee.left`'s devices that left and
:mod:`~gatewayd.zigbee.setups`' devices whose setup has not finished. A file that cannot
be read is logged by name and read as empty (what that costs, ``lost``, is said in the
log): it must never keep the radio from starting. Written atomically, only when the set
changes: rare events, like the state store's writes.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from gatewayd.runtime.atomicfile import atomic_write
from gatewayd.runtime.jsonbody import BadBody, loads
from gatewayd.runtime.writebehind import REMOVE, Write, WriteBehind

log = logging.getLogger(__name__)

MAX_BYTES = 256 * 1024  # 8 000 addresses; a network has a few hundred devices at most
_IEEE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){7}")


class IeeeFile:
    """IEEE addresses (zigpy's text form) under ``key`` in ``path``; ``lost``: what an
    unreadable file costs, for the log (e.g. "devices that left show as before");
    ``write`` does one atomic write, in a worker thread."""

    def __init__(self, path: Path, key: str, lost: str, write: Write = atomic_write) -> None:
        self.path, self.key, self.lost = path, key, lost
        self._ieees = self._load()
        self._file = WriteBehind(path, self._not_saved, write=write)

    def _load(self) -> set[str]:
        try:
            with self.path.open("rb") as f:
                raw = f.read(MAX_BYTES + 1)
        except FileNotFoundError:
            return set()
        except OSError as exc:
            log.warning("zigbee: %s cannot be read (%s); %s", self.path,
                        exc.strerror or exc, self.lost)
            return set()
        problem = "larger than 256 KiB" if len(raw) > MAX_BYTES else None
        ieees: object = None
        if problem is None:
            try:
                ieees = loads(raw, str(self.path)).get(self.key)
            except (BadBody, AttributeError):
                problem = f'not a JSON object {{"{self.key}": [...]}}'
        if problem is None and not (isinstance(ieees, list) and all(
                isinstance(i, str) and _IEEE.fullmatch(i) for i in ieees)):
            problem = (f'"{self.key}" is not a list of IEEE addresses such as '
                       '"8b:b3:00:00:00:00:00:01"')
        if problem is not None:
            log.warning("zigbee: %s ignored: %s; %s", self.path, problem, self.lost)
            return set()
        assert isinstance(ieees, list)
        return set(ieees)

    def __contains__(self, ieee: str) -> bool:
        return ieee in self._ieees

    def add(self, ieee: str) -> None:
        if ieee not in self._ieees:
            self._ieees.add(ieee)
            self._save()

    def discard(self, ieee: str) -> None:
        if ieee in self._ieees:
            self._ieees.discard(ieee)
            self._save()

    def clear(self) -> None:
        """A full reset: the network is forgotten, and so is this (the file is deleted
        after a write in progress)."""
        self._ieees.clear()
        self._file.put(REMOVE)

    async def written(self) -> None:
        """Wait until the set as it is now is on disk (or its write failed, logged)."""
        await self._file.written()

    async def flush(self) -> None:
        await self._file.flush()

    def _save(self) -> None:
        self._file.put(json.dumps({self.key: sorted(self._ieees)}).encode())

    def _not_saved(self, exc: OSError) -> None:  # right until the next restart
        log.error("zigbee: %s not saved: %s", self.path, exc.strerror or exc)
