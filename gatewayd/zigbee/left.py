"""The devices that left the network on their own, remembered across restarts.

zigpy keeps a device that left in ``zigbee.db`` (it may rejoin), so a restart would bring
it back as ``ready`` or ``sleeping``; the bridge shows it as ``lost`` until it rejoins or
is removed. ``zigbee-left.json`` in the state directory holds their IEEE addresses:
``{"left": ["8b:b3:...", ...]}``. A file that cannot be read is logged and treated as
empty (at worst a device that left shows as it did before it left): it must never keep
the radio from starting. Written atomically, only when the set changes (a device leaves,
rejoins or is removed): rare events, like the state store's writes.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from gatewayd.runtime.atomicfile import atomic_write
from gatewayd.runtime.jsonbody import BadBody, loads

log = logging.getLogger(__name__)

LEFT_FILE = "zigbee-left.json"
MAX_BYTES = 256 * 1024  # 8 000 addresses; a network has a few hundred devices at most
_IEEE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){7}")


class LeftDevices:
    """IEEE addresses (zigpy's text form) of the devices that left."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ieees = self._load()

    def _load(self) -> set[str]:
        try:
            with self.path.open("rb") as f:
                raw = f.read(MAX_BYTES + 1)
        except FileNotFoundError:
            return set()
        except OSError as exc:
            log.warning("zigbee: %s cannot be read (%s); devices that left show as "
                        "before", self.path, exc.strerror or exc)
            return set()
        problem = "larger than 256 KiB" if len(raw) > MAX_BYTES else None
        ieees: object = None
        if problem is None:
            try:
                ieees = loads(raw, str(self.path)).get("left")
            except (BadBody, AttributeError):
                problem = 'not a JSON object {"left": [...]}'
        if problem is None and not (isinstance(ieees, list) and all(
                isinstance(i, str) and _IEEE.fullmatch(i) for i in ieees)):
            problem = '"left" is not a list of IEEE addresses such as "8b:b3:00:00:00:00:00:01"'
        if problem is not None:
            log.warning("zigbee: %s ignored: %s; devices that left show as before",
                        self.path, problem)
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
        """A full reset: the network is forgotten, and so is who left it."""
        self._ieees.clear()
        self.path.unlink(missing_ok=True)

    def _save(self) -> None:
        try:
            atomic_write(self.path, json.dumps({"left": sorted(self._ieees)}).encode(), 0o600)
        except OSError as exc:  # the device's state is right until the next restart
            log.error("zigbee: %s not saved: %s", self.path, exc.strerror or exc)
