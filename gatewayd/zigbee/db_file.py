"""A damaged ``zigbee.db`` moved aside, and the network backup kept outside it.

zigpy keeps the hub's network backup (PAN id, extended PAN id, channel, network key,
frame counters, the coordinator's address) in ``zigbee.db`` with every device. A file
SQLite finds damaged (``database disk image is malformed``, ``file is not a database``,
zigpy's ``CorruptDatabase``: :func:`~gatewayd.zigbee.radio_errors.damaged`) kept the
radio down for good ("damaged, or its disk full?"), retried once a minute. Now it is
moved aside as ``zigbee.db.corrupt-<time>`` (its ``-wal``/``-shm`` journals with it,
``…corrupt-<time>-wal``), as ``state.json`` is (gatewayd/state.py), and the radio starts
with an empty one: the stick still holds the network, which is resumed; each device is
back once it is heard (zigpy asks a device it does not know for its address, then
interviews it again), under the same id. A full disk, a permission or a lock is no
damage: the file stays, and the radio is down saying which
(:func:`~gatewayd.zigbee.radio_errors.database_error`). At most :data:`MAX_ASIDE` copies are
kept: beyond, the storage itself is suspect, and the file stays where it is.

``zigbee-backup.json`` (:class:`BackupFile`) is the latest network backup zigpy made,
written atomically off the event loop, mode 0600, in the Open Coordinator Backup JSON form
(zigpy's ``as_open_coordinator_json``, which Zigbee2MQTT and ZHA read too). It holds the
network key, like ``zigbee.db``. When ``zigbee.db`` had to be moved aside the backup is
given to the new one (:func:`open_db`), so that zigpy compares the stick's network with it
(another network's stick is refused, gatewayd/zigbee/network_start.py) and restores it
onto a blank stick rather than forming a new network. A full reset deletes it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatewayd.runtime.atomicfile import atomic_write
from gatewayd.runtime.jsonbody import BadBody, loads
from gatewayd.runtime.writebehind import Write, WriteBehind
from gatewayd.zigbee.new_network import ASIDE_PATTERN
from gatewayd.zigbee.radio_errors import RadioError, damaged, database_error

if TYPE_CHECKING:
    from zigpy.application import ControllerApplication

log = logging.getLogger(__name__)

DB_FILE = "zigbee.db"
JOURNALS = ("-wal", "-shm", "-journal")
BACKUP_FILE = "zigbee-backup.json"
MAX_ASIDE = 3  # zigbee.db.corrupt-* copies kept; beyond, the storage is suspect
MAX_BACKUP_BYTES = 1024 * 1024  # a backup lists each device's address and link key


class AsideRefused(OSError):
    """Not moved aside: :data:`MAX_ASIDE` copies are there already."""


def move_aside(state_dir: Path) -> Path:
    """Move ``zigbee.db`` and its journals to ``zigbee.db.corrupt-<time>``; raises OSError
    (:class:`AsideRefused` when enough copies are kept)."""
    kept = sorted(p.name for p in state_dir.glob(ASIDE_PATTERN)
                  if not p.name.endswith(JOURNALS))
    if len(kept) >= MAX_ASIDE:
        raise AsideRefused(f"{len(kept)} damaged copies are kept already ({', '.join(kept)})")
    aside = state_dir / f"{DB_FILE}.corrupt-{int(time.time())}"
    while aside.exists():  # damaged again within the second
        aside = aside.with_name(aside.name + "-1")
    os.replace(state_dir / DB_FILE, aside)
    for suffix in JOURNALS:
        try:
            os.replace(state_dir / f"{DB_FILE}{suffix}", aside.with_name(aside.name + suffix))
        except FileNotFoundError:
            pass
    return aside


async def open_db(new: Callable[[], Awaitable[ControllerApplication]], state_dir: Path,
                  moved_aside: Callable[[Path], None] | None = None
                  ) -> ControllerApplication:
    """``new()`` (zigpy opening zigbee.db); a damaged file moved aside and ``new()`` again,
    given the backup of ``zigbee-backup.json``, ``moved_aside`` told where it went. Raises
    :class:`~gatewayd.zigbee.radio_errors.RadioError` in the hub's words."""
    db = state_dir / DB_FILE
    try:
        return await new()
    except Exception as exc:
        if not damaged(exc):
            raise database_error(db, exc) from exc
        damage = exc
    try:
        aside = await asyncio.to_thread(move_aside, state_dir)
    except OSError as exc:
        raise RadioError(f"the Zigbee database {db} is damaged and was not moved aside "
                         f"({exc.strerror or exc}); the hub's log has the details",
                         details=damage) from None
    backup = await asyncio.to_thread(read_backup, state_dir)
    try:
        app = await new()
    except Exception as exc:
        raise database_error(db, exc) from exc
    if backup is not None:
        app.backups.add_backup(backup)  # written to the new zigbee.db
    log.warning("zigbee: %s is damaged (%s); moved aside to %s. Starting with an empty one: "
                "the network on the stick is resumed%s, and each device is back once it is "
                "heard (interviewed again, same id); a device that stays silent has to be "
                "paired again", db, _reason(damage), aside.name,
                f" (checked against the network backup in {BACKUP_FILE})"
                if backup is not None else f" (no {BACKUP_FILE} to check it against)")
    if moved_aside is not None:
        moved_aside(aside)
    return app


def _reason(exc: BaseException) -> str:
    cause: BaseException | None = exc
    while cause is not None:
        name = getattr(cause, "sqlite_errorname", None)
        if isinstance(name, str):
            return f"SQLite: {name}"
        cause = cause.__cause__ or cause.__context__
    return type(exc).__name__


def read_backup(state_dir: Path) -> Any:
    """The backup in ``zigbee-backup.json`` as zigpy's ``NetworkBackup``; None without one
    (or one that cannot be read: logged by name)."""
    import zigpy.backups  # a radio runs

    path = state_dir / BACKUP_FILE
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BACKUP_BYTES + 1)
        if len(raw) > MAX_BACKUP_BYTES:
            raise ValueError("larger than 1 MiB")
        return zigpy.backups.NetworkBackup.from_dict(loads(raw, str(path)))
    except FileNotFoundError:
        return None
    except (OSError, BadBody, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("zigbee: %s cannot be used (%s); no network backup to restore",
                    path, getattr(exc, "strerror", None) or type(exc).__name__)
        return None


class BackupFile:
    """``zigbee-backup.json``, following the backups zigpy makes on a running radio."""

    def __init__(self, state_dir: Path, write: Write = atomic_write) -> None:
        self.path = state_dir / BACKUP_FILE
        self._file = WriteBehind(self.path, self._not_saved, write=write)
        self._kept: str | None = None  # the backup_time of the one last put

    def follow(self, app: Any) -> None:
        """Keep ``app``'s latest backup now and every one it makes from now on."""
        latest = app.backups.most_recent_backup()
        if latest is not None:
            self.network_backup_created(latest)
        app.backups.add_listener(self)

    def network_backup_created(self, backup: Any) -> None:  # zigpy's BackupManager event
        stamp = backup.backup_time.isoformat()
        if stamp != self._kept:
            self._kept = stamp
            self._file.put(json.dumps(backup.as_open_coordinator_json(), indent=1).encode())

    def network_backup_removed(self, backup: Any) -> None:
        pass  # superseded: the newer one is written

    def forget(self) -> None:
        """A full reset: the network is forgotten (deleted after a write in progress)."""
        self._kept = None
        self._file.put(None)

    async def flush(self) -> None:
        await self._file.flush()

    def _not_saved(self, exc: OSError) -> None:
        log.error("zigbee: %s not saved: %s; a damaged zigbee.db would lose the network's "
                  "backup", self.path, exc.strerror or exc)
