"""A full reset's part of the Zigbee bridge (a base of :class:`~gatewayd.bridge.ZigbeeBridge`,
kept apart so each reads in one sitting): the radio leaves its network, the network's files
are forgotten (``zigbee.db``, ``zigbee-backup.json``, ``zigbee-left.json``,
``zigbee-setup.json``), every child's retained topics cleared and a new network formed; the
request is kept until then (:mod:`~gatewayd.zigbee.new_network`), and acted on at a radio
start (:meth:`BridgeReset._new_network`) when the radio was down or the reset offline.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from gatewayd import homie
from gatewayd.zigbee.children import Children
from gatewayd.zigbee.coalesce import Coalescer
from gatewayd.zigbee.db_file import BackupFile
from gatewayd.zigbee.left import LeftDevices
from gatewayd.zigbee.new_network import NewNetwork
from gatewayd.zigbee.radio import RadioError, forget_network, leave_network
from gatewayd.zigbee.setups import Setups

if TYPE_CHECKING:
    from pathlib import Path

    from zigpy.application import ControllerApplication

log = logging.getLogger(__name__)


class BridgeReset:
    """The bridge's full reset; the bridge provides what is declared here."""

    state_dir: Path
    app: ControllerApplication | None
    radio_up: asyncio.Event
    new_network: NewNetwork
    publisher: homie.ChildPublisher
    children: Children
    coalescer: Coalescer
    left: LeftDevices
    setups: Setups
    backup_file: BackupFile

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def _files_written(self) -> None:
        raise NotImplementedError

    async def _let_go(self, app: ControllerApplication) -> None:
        raise NotImplementedError

    def _hub_value(self, prop: str, value: object) -> None:
        raise NotImplementedError

    def _count(self) -> None:
        raise NotImplementedError

    async def reset(self, full: bool) -> None:
        """The hub's factory-reset hook: a full reset also forgets the Zigbee network. The
        radio leaves it, ``zigbee.db`` is deleted, every child's retained topics cleared,
        a new network formed; the request is kept until then (:meth:`_new_network`)."""
        if not full:
            return
        # Kept until the new network is up: the radio may be down now, or fail to leave, or
        # the hub stop before it forms.
        await self.new_network.ask()
        app = self.app
        if app is not None and self.radio_up.is_set():
            try:
                await leave_network(app)
                self.new_network.left = True
            except Exception:
                log.exception("zigbee: the radio did not leave its network")
        await self.stop()
        for child_id in [c.device_id for c in self.children.values()]:
            self.publisher.remove_device(child_id)
            self.coalescer.forget(child_id)
        self.children.clear()
        self._forget_files()
        await self._files_written()  # deleted before the reset answers
        forget_network(self.state_dir)
        log.warning("zigbee: network forgotten; forming a new one")
        self._hub_value("status", "starting")  # not "ready" while the new network forms
        self._count()
        await self.start()

    def _forget_files(self) -> None:
        self.left.clear()
        self.setups.clear()
        self.backup_file.forget()

    async def _new_network(self, app: ControllerApplication) -> ControllerApplication | None:
        """A full reset (maybe offline) asked for a new network (new_network.py): leave the
        old one the stick kept, as the daemon's full reset does; None: the next start forms it."""
        try:
            if not await self.new_network.pending():
                return app
            log.warning("zigbee: a full reset asked for a new network; leaving PAN 0x%04x",
                        int(app.state.network_info.pan_id))
            self._hub_value("status", "starting")
            await leave_network(app)
        except BaseException as exc:  # cancelled too: the radio and zigbee.db are let go
            await self._let_go(app)
            if not isinstance(exc, Exception):
                raise
            raise RadioError("the radio did not leave its network for the new one a full "
                             "reset asked for; the hub's log has the details",
                             details=exc) from exc
        await self._let_go(app)
        self.new_network.left = True
        self._forget_files()
        await self._files_written()
        await asyncio.to_thread(forget_network, self.state_dir)
        return None
