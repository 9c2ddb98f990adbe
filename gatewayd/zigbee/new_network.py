"""A full reset's request for a new Zigbee network, kept until the radio has formed one.

The network lives on the radio (the stick's NCP keeps its PAN id, key and joined devices),
not in ``zigbee.db``: a reset that only deletes the file leaves the stick on its network
with its devices, and zigpy takes that network back at the next start. So a full reset
writes ``zigbee-new-network`` in the state directory first: ``gatewayctl reset --full``
with the daemon stopped, and the daemon's own full reset (its radio may be down or fail to
leave). The bridge, at its next radio start, has the radio leave that network and forms a
new one, and deletes the file only once the new network is up: a crash or power cut in
between forms a new network again at the next start, never brings the old one back.

Where no radio runs (``gatewayctl``'s offline reset, and a daemon with Zigbee disabled),
a full reset is :func:`forget`: the request, then the network's files deleted.

Imports no zigpy: ``gatewayctl`` writes the file too.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from gatewayd.runtime.atomicfile import atomic_write, fsync_directory

log = logging.getLogger(__name__)

NEW_NETWORK_FILE = "zigbee-new-network"
# zigbee.db with its journals and the backup kept beside it (gatewayd.zigbee.db_file).
DATABASE_FILES = ("zigbee.db", "zigbee.db-wal", "zigbee.db-shm", "zigbee.db-journal",
                  "zigbee-backup.json")
# What a full reset forgets of the Zigbee network besides the radio's own memory.
NETWORK_FILES = (*DATABASE_FILES, "zigbee-left.json", "zigbee-setup.json")
# The damaged databases moved aside (gatewayd.zigbee.db_file): they hold the old network's
# key as well.
ASIDE_PATTERN = "zigbee.db.corrupt-*"
_TEXT = b"a full reset asked for a new Zigbee network; gatewayd forms it at its next start\n"


def ask(state_dir: Path, owner: tuple[int, int] | None = None) -> None:
    """Record that the radio must leave its network and form a new one (atomically; root's
    write gets ``owner``, so the daemon's user can delete it)."""
    atomic_write(state_dir / NEW_NETWORK_FILE, _TEXT, 0o600, owner)


def forget(state_dir: Path, owner: tuple[int, int] | None = None) -> list[str]:
    """A full reset where no radio runs: ask for a new network (first: a reset cut short
    after it must still give one), then delete :data:`NETWORK_FILES`. Returns the names
    deleted. Raises OSError (nothing deleted if the request could not be written)."""
    ask(state_dir, owner)
    return _delete(state_dir, NETWORK_FILES)


def forget_database(state_dir: Path) -> list[str]:
    """Delete :data:`DATABASE_FILES` and the copies moved aside (a full reset with a
    running radio, whose other files the bridge forgets itself); the names deleted."""
    return _delete(state_dir, DATABASE_FILES)


def _delete(state_dir: Path, names: tuple[str, ...]) -> list[str]:
    aside = sorted(p.name for p in state_dir.glob(ASIDE_PATTERN))
    forgotten = []
    for name in [*names, *aside]:
        path = state_dir / name
        if path.exists():
            path.unlink()
            forgotten.append(name)
    return forgotten


async def reset_without_radio(state_dir: Path, full: bool) -> None:
    """The hub's reset hook while Zigbee is disabled: a full reset forgets the network as
    the offline reset does, so the owner who enables Zigbee next gets a new one, not the
    old key and devices (the stick still holds them: it leaves at the next radio start)."""
    if not full:
        return
    try:
        forgotten = await asyncio.to_thread(forget, state_dir)
    except OSError as exc:
        log.error("zigbee: the full reset could not forget the Zigbee network: %s",
                  exc.strerror or exc)
        return
    log.warning("zigbee: network forgotten (Zigbee is disabled; %s); a new one is formed "
                "when it is enabled", ", ".join(forgotten) or "no files to delete")


def asked(state_dir: Path) -> bool:
    return (state_dir / NEW_NETWORK_FILE).exists()


def formed(state_dir: Path) -> None:
    """The new network is up: forget the request, durably (a request that came back after
    a power cut would orphan every device paired since)."""
    try:
        (state_dir / NEW_NETWORK_FILE).unlink()
    except FileNotFoundError:
        return
    fsync_directory(state_dir)


class NewNetwork:
    """The bridge's side of the request: ``left`` once the radio has left its old network
    in this process (the next network it comes up on is the new one)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.left = False

    async def ask(self) -> None:
        self.left = False
        try:
            await asyncio.to_thread(ask, self.state_dir)
        except OSError as exc:  # the running reset still leaves the network if it can
            log.error("zigbee: the request for a new network not saved: %s",
                      exc.strerror or exc)

    async def pending(self) -> bool:
        """Whether the radio, just started, must leave its network first; once it has
        left, the network it comes up on is the new one and the request is deleted."""
        if not await asyncio.to_thread(asked, self.state_dir):
            self.left = False
            return False
        if not self.left:
            return True
        self.left = False
        try:
            await asyncio.to_thread(formed, self.state_dir)
        except OSError as exc:
            log.error("zigbee: the request for a new network not deleted: %s",
                      exc.strerror or exc)
        return False
