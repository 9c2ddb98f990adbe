"""A radio leaving its network (a full reset's new network) with zigpy's backup stopped
first: the backup zigpy starts with the radio sends commands, and one sent beside bellows'
NCP reset in the middle of leaving hung the radio until the hub restarted (CI under load:
2 runs of 15 of the offline full reset's bellows test; none of 30 with the backup stopped).
"""

from __future__ import annotations

import asyncio
from typing import Any

import zigpy.backups

from gatewayd.zigbee.radio import leave_network
from tests.helpers import run_async


class App:
    """What :func:`leave_network` uses of a zigpy ControllerApplication, with zigpy's own
    BackupManager, whose backup is a command that takes its time."""

    def __init__(self) -> None:
        self.backups = zigpy.backups.BackupManager(self)
        self.sending = asyncio.Event()
        self.backup_running_at_leave: bool | None = None

    async def load_network_info(self, load_devices: bool = False) -> None:
        self.sending.set()
        await asyncio.Event().wait()  # the radio's answer, which the leave must not overlap

    async def reset_network_info(self) -> None:
        task: Any = self.backups._backup_task
        self.backup_running_at_leave = task is not None and not task.done()


def test_the_backup_command_under_way_ends_before_the_radio_leaves() -> None:
    async def main() -> None:
        app = App()
        app.backups.start_periodic_backups(period=86400)
        await asyncio.wait_for(app.sending.wait(), 5)  # the backup's command is out
        await leave_network(app)  # type: ignore[arg-type]
        assert app.backup_running_at_leave is False

    run_async(main())
