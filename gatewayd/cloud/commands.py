"""``/set`` commands: validate, hand to the property's owner, then echo or report an error.

Each command runs as its own task. At most ``max_concurrent`` handlers run at once, and one
device holds at most ``max_per_device`` of those slots: its further commands wait for its
own slots, not everyone's, so a slow or hung device cannot take the slots from the others.
Commands to the same property run in arrival order (a lock per property; the locks and a
device's slots are kept only while a command uses them). At most ``max_pending`` commands
exist at all, beyond which they are refused as BUSY. A command that cannot even start
within ``timeout`` (the earlier ones still running) is answered TIMEOUT and is never applied
after the cloud was told so; one that starts has the whole ``timeout`` for its handler.

A ``/set`` the broker delivers as retained is ignored: controllers publish commands
non-retained (Homie, 2Smart), and one a tool left retained would be applied again at every
reconnect (a timer restarted, a switch's command run again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from gatewayd import homie
from gatewayd.runtime.logsetup import LogBudget

log = logging.getLogger(__name__)

Accept = Callable[[homie.Device, str, Any], None]  # (device, path, value): echo it
Reject = Callable[[str, str, str, str], None]  # (device id, path, code, message)

_FAILED = object()
_TOLD_MAX = 256  # retained /set topics said at info level; the rest at debug only
K = TypeVar("K")
T = TypeVar("T")


@contextlib.contextmanager
def _shared(table: dict[K, tuple[T, int]], key: K, make: Callable[[], T]) -> Iterator[T]:
    """The ``table`` entry for ``key`` (made if missing), counted while in use and removed
    when its last user is done, so the table holds only what commands are using."""
    entry = table.get(key)
    item, users = entry if entry is not None else (make(), 0)
    table[key] = (item, users + 1)
    try:
        yield item
    finally:
        item, users = table[key]
        if users <= 1:
            del table[key]
        else:
            table[key] = (item, users - 1)


class CommandRunner:
    def __init__(self, *, accept: Accept, reject: Reject, timeout: float = 10.0,
                 max_pending: int = 64, max_concurrent: int = 8,
                 max_per_device: int = 2, log_window: float = 60.0) -> None:
        self._accept = accept
        self._reject = reject
        self.timeout = timeout
        self._max_pending = max_pending
        self._max_per_device = max_per_device
        self._slots = asyncio.Semaphore(max_concurrent)
        self._tasks: set[asyncio.Task[None]] = set()
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}
        self._device_slots: dict[str, tuple[asyncio.Semaphore, int]] = {}
        self._told: set[tuple[str, str]] = set()
        self.received = 0
        self.rejected = 0
        # A client looping on a bad /set would fill the journal (and journald's rate limit
        # would then drop the hub's other lines): the first ten a minute, then a count.
        self._said = LogBudget(log, "commands rejected", window=log_window, later=lambda delay,
                               call: asyncio.get_running_loop().call_later(delay, call))

    def dispatch(self, device: homie.Device, path: str, payload: bytes,
                 retained: bool = False) -> None:
        """Handle one ``/set`` on ``device`` at ``path`` (see :mod:`gatewayd.homie`);
        ``retained``: the broker delivered it as retained, and it is ignored."""
        if retained:
            self._ignore_retained(device.id, path)
            return
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

    def _ignore_retained(self, device_id: str, path: str) -> None:
        # The broker hands it over again at every reconnect: once per topic is enough to
        # tell the user, and its payload is whatever a tool left there, so it is not logged.
        key = (device_id, path)
        first = key not in self._told and len(self._told) < _TOLD_MAX
        if first:
            self._told.add(key)
        log.log(logging.INFO if first else logging.DEBUG, "ignoring a retained /set on "
                "%s/%s: a command must be published non-retained", device_id, path)

    async def _run(self, device: homie.Device, path: str, prop: homie.Property,
                   value: Any) -> None:
        with (_shared(self._locks, (device.id, path), asyncio.Lock) as lock,
              _shared(self._device_slots, device.id,
                      lambda: asyncio.Semaphore(self._max_per_device)) as device_slots):
            result = await self._call(device.id, path, prop, value, lock, device_slots)
        if result is not _FAILED:
            self._accept(device, path, result)

    async def _call(self, device_id: str, path: str, prop: homie.Property, value: Any,
                    lock: asyncio.Lock, device_slots: asyncio.Semaphore) -> Any:
        started = False
        try:
            async with contextlib.AsyncExitStack() as held:
                # The waits for the property, the device's slot and a slot have a timeout
                # of their own: a command answered TIMEOUT must not be applied afterwards,
                # when it got its turn. Once started, a handler gets the whole timeout: cut
                # short by the time it waited, a switch's command would be killed halfway.
                async with asyncio.timeout(self.timeout):
                    for turn in (lock, device_slots, self._slots):
                        await held.enter_async_context(turn)
                started = True
                if prop.on_set is None:
                    return value  # a plain settable value: accept and echo
                # A timeout scope, not wait_for: no second task for every command.
                async with asyncio.timeout(self.timeout):
                    result = await prop.on_set(value)
            return value if result is None else prop.validate(result)
        except homie.CommandError as exc:
            self._fail(device_id, path, exc.code, exc.message)
        except TimeoutError:
            self._fail(device_id, path, homie.TIMEOUT,
                       f"the device did not answer within {self.timeout:g} s" if started else
                       f"the command could not start within {self.timeout:g} s (earlier "
                       "commands were still running); it was not applied")
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
        log.log(logging.INFO if self._said.allow() else logging.DEBUG,
                "command %s/%s rejected: %s %s", device_id, path, code, message)
        self._reject(device_id, path, code, message)
