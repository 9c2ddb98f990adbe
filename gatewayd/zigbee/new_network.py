"""A full reset's request for a new Zigbee network, kept until the radio has formed one.

The network lives on the radio (the stick's NCP keeps its PAN id, key and joined devices),
not in ``zigbee.db``: a reset that only deletes the file leaves the stick on its network
with its devices, and zigpy takes that network back at the next start. So a full reset
writes ``zigbee-new-network`` in the state directory first: ``gatewayctl reset --full``
with the daemon stopped, and the daemon's own full reset (its radio may be down or fail to
leave). The bridge, at its next radio start, has the radio leave that network and forms a
new one, and deletes the file only once the new network is up: a crash or power cut in
between forms a new network again at the next start, never brings the old one back.

Imports no zigpy: ``gatewayctl`` writes the file too.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from gatewayd.runtime.atomicfile import atomic_write, fsync_directory

log = logging.getLogger(__name__)

NEW_NETWORK_FILE = "zigbee-new-network"
_TEXT = b"a full reset asked for a new Zigbee network; gatewayd forms it at its next start\n"


def ask(state_dir: Path, owner: tuple[int, int] | None = None) -> None:
    """Record that the radio must leave its network and form a new one (atomically; root's
    write gets ``owner``, so the daemon's user can delete it)."""
    atomic_write(state_dir / NEW_NETWORK_FILE, _TEXT, 0o600, owner)


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
