"""NetworkManager on the system bus: whether it runs, and whether the bus itself is still there.

NetworkManager may be missing when the hub starts (not started yet, failed, being upgraded)
and may restart under a running hub; each start gives it a new unique bus name and new
object paths, and what it had in memory (the hotspot) is gone. :class:`OwnerWatch` follows
the owner of its well-known name (``NameOwnerChanged``, as :mod:`gatewayd.ble.peripheral`
follows bluetoothd) and hands every new owner, or its absence, to the control
(:mod:`gatewayd.ap`), one at a time; a new owner the control cannot use yet (it takes its
name before its devices exist) is tried again after a wait that doubles up to
:data:`RETRY_MAX`. The same task looks at the bus connection every :data:`BUS_CHECK`
seconds: one the bus daemon dropped (the system bus restarted) cannot be reconnected, so
the hub is told once, to end and be started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sdbus import DbusNameHasNoOwnerError, DbusNoReplyError, DbusServiceUnknownError

from gatewayd.onboarding.steps import Failure, StepResult
from gatewayd.runtime.sysbus import bus_lost, ended_with_bus

log = logging.getLogger("gatewayd.ap")  # the control's lines, under one name

NM = "org.freedesktop.NetworkManager"
BUS_CHECK = 5.0  # seconds between looks at the bus connection
RETRY_FIRST, RETRY_MAX = 0.2, 5.0  # seconds before trying a new owner again

NOT_RUNNING = ("NetworkManager is not running, so the hub cannot use its Wi-Fi now. Try "
               "again in a minute; if it keeps failing, restart the hub.")
BUS_LOST = ("the connection to the system D-Bus was lost (the D-Bus daemon restarted?): "
            "NetworkManager and BlueZ cannot be reached on it any more; exiting so that the "
            "service manager starts the hub again")


def not_running() -> StepResult:
    """An attempt's Wi-Fi step without NetworkManager."""
    return StepResult(False, Failure.WIFI_FAILED, NOT_RUNNING)


# The bus daemon's answer to a call whose recipient exited before replying (NetworkManager
# stopped or crashed in the middle of it); our own connection ending reads differently.
_LEFT_MID_CALL = "recipient disconnected"


def gone(exc: BaseException) -> bool:
    """A D-Bus error saying NetworkManager is not on the bus (or left during the call)."""
    if isinstance(exc, DbusNoReplyError):
        return _LEFT_MID_CALL in str(exc)
    return isinstance(exc, (DbusServiceUnknownError, DbusNameHasNoOwnerError))


class OwnerWatch:
    """Calls ``changed(owner)`` with the unique name that owns :data:`NM` whenever it
    changes (None: nobody), one call at a time; one that raises is tried again later with
    the same owner. Calls ``lost()`` once if the bus connection ends."""

    def __init__(self, bus: Any, changed: Callable[[str | None], Awaitable[None]],
                 lost: Callable[[], None]) -> None:
        self.bus = bus
        self.changed = changed
        self.lost = lost
        self.owner: str | None = None  # the owner ``changed`` last took
        self._wake = asyncio.Event()
        self._slot: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, owner: str | None) -> None:
        """Watch from now on; ``owner`` is the one the caller has already taken."""
        self.owner = owner
        self._task = asyncio.create_task(self._run(), name="networkmanager-watch")

    async def subscribe(self) -> str | None:
        """Subscribe, then return the owner now: no change between the two is missed."""
        self._slot = await self.bus.match_signal_async(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
            "NameOwnerChanged", self._on_name_owner_changed)
        return await self.current()

    async def current(self) -> str | None:
        from sdbus_async.dbus_daemon import FreedesktopDbus

        try:
            return str(await FreedesktopDbus(self.bus).get_name_owner(NM))
        except DbusNameHasNoOwnerError:
            return None

    async def stop(self) -> None:
        if self._slot is not None:
            with contextlib.suppress(Exception):  # a bus that is gone has no match to drop
                self._slot.close()
            self._slot = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        """Look again now (a call failed as if NetworkManager had gone)."""
        self._wake.set()

    def _on_name_owner_changed(self, message: Any) -> None:
        name, _old, _new = message.get_contents()
        if name == NM:
            self._wake.set()

    async def _run(self) -> None:
        retry = RETRY_FIRST
        pending = False  # an owner ``changed`` failed to take: tried again after ``retry``
        while True:
            woken = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(retry if pending else BUS_CHECK):
                    woken = await self._wake.wait()
            self._wake.clear()
            if bus_lost(self.bus):
                log.error("%s", BUS_LOST)
                self.lost()
                return
            if not (woken or pending):
                continue  # only the bus was looked at
            try:
                owner = await self.current()
                if owner != self.owner or pending:
                    await self.changed(owner)
                    self.owner = owner
                pending, retry = False, RETRY_FIRST
            except Exception as exc:
                if bus_lost(self.bus) or ended_with_bus(exc):
                    log.error("%s", BUS_LOST)
                    self.lost()
                    return
                if not pending:
                    log.warning("NetworkManager cannot be used yet: %s; trying again", exc)
                else:
                    log.debug("NetworkManager cannot be used yet: %s", exc)
                pending, retry = True, min(RETRY_MAX, retry * 2)
