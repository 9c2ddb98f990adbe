"""``/set`` commands: validate, hand to the property's owner, then echo or report an error.

Each command runs as its own task, so a slow or hung device never holds up another one.
Commands to the same property run in arrival order (a lock per property, dropped when no
command uses it); at most ``max_concurrent`` handlers run at once and at most
``max_pending`` commands exist at all, beyond which they are refused as BUSY.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from gatewayd import homie

log = logging.getLogger(__name__)

Accept = Callable[[homie.Device, str, Any], None]  # (device, path, value): echo it
Reject = Callable[[str, str, str, str], None]  # (device id, path, code, message)

_FAILED = object()


class CommandRunner:
    def __init__(self, *, accept: Accept, reject: Reject, timeout: float = 10.0,
                 max_pending: int = 64, max_concurrent: int = 8) -> None:
        self._accept = accept
        self._reject = reject
        self.timeout = timeout
        self._max_pending = max_pending
        self._slots = asyncio.Semaphore(max_concurrent)
        self._tasks: set[asyncio.Task[None]] = set()
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}
        self.received = 0
        self.rejected = 0

    def dispatch(self, device: homie.Device, path: str, payload: bytes) -> None:
        """Handle one ``/set`` on ``device`` at ``path`` (see :mod:`gatewayd.homie`)."""
        self.received += 1
        try:
            prop = device.find(path)
        except KeyError:
            self._fail(device.id, path, homie.NOT_FOUND, f"device {device.id} has no "
                                                         f"property {path}")
            return
        if not prop.settable:
            self._fail(device.id, path, homie.NOT_SETTABLE, f"{path} is read-only")
            return
        try:
            value = prop.parse(payload)
        except homie.CommandError as exc:
            self._fail(device.id, path, exc.code, exc.message)
            return
        if len(self._tasks) >= self._max_pending:
            self._fail(device.id, path, homie.BUSY, "the hub is busy with other commands; "
                                                    "try again")
            return
        task = asyncio.get_running_loop().create_task(self._run(device, path, prop, value))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def _run(self, device: homie.Device, path: str, prop: homie.Property,
                   value: Any) -> None:
        key = (device.id, path)
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock, self._slots:
                result = await self._call(device.id, path, prop, value)
            if result is not _FAILED:
                self._accept(device, path, result)
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def _call(self, device_id: str, path: str, prop: homie.Property, value: Any) -> Any:
        if prop.on_set is None:
            return value  # a plain settable value: accept and echo
        try:
            # a timeout scope, not wait_for: no second task for every command
            async with asyncio.timeout(self.timeout):
                result = await prop.on_set(value)
            return value if result is None else prop.validate(result)
        except homie.CommandError as exc:
            self._fail(device_id, path, exc.code, exc.message)
        except TimeoutError:
            self._fail(device_id, path, homie.TIMEOUT,
                       f"the device did not answer within {self.timeout:g} s")
        except ValueError as exc:
            log.error("handler of %s/%s returned an invalid value: %s", device_id, path, exc)
            self._fail(device_id, path, homie.ERROR, "the device reported an invalid value")
        except Exception:
            # An arbitrary exception's text may describe internals: the cloud gets a
            # generic sentence, the local log gets the details.
            log.exception("handler of %s/%s failed", device_id, path)
            self._fail(device_id, path, homie.ERROR, "the hub could not apply the value")
        return _FAILED

    def _fail(self, device_id: str, path: str, code: str, message: str) -> None:
        self.rejected += 1
        log.info("command %s/%s rejected: %s %s", device_id, path, code, message)
        self._reject(device_id, path, code, message)
