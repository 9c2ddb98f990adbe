"""Bounded, coalesced writes to zigpy's database (``zigbee.db``).

zigpy's ``PersistingListener`` queues one SQLite write for every attribute report and
every "last seen" update on an unbounded ``asyncio.Queue`` and works it off one statement
at a time through aiosqlite's thread. A busy network outruns it: the benchmarks measured
the daemon growing by 167 MB in two minutes of a report flood, and a shutdown that then
waited minutes for the backlog.

:class:`CoalescedWrites` sits in front of that queue. Attribute and last-seen writes wait
in a dict keyed by what they write (device, endpoint, cluster, attribute; or device), so
a newer value replaces an older one and at most one write per key is ever waiting. Once
per ``interval`` the waiting writes go to zigpy as one batch, and a new batch is only
handed over after the previous one is written, so zigpy's queue holds at most one of
ours. Memory is bounded by the number of attributes on the network, not by the rate of
reports. The price is that the attribute cache on disk may lag by ``interval`` seconds
after a crash; on a clean shutdown everything waiting is written first.

zigpy commits what was written every 30 s (its ``database_commit_interval``), and after
a power cut the hub restores and republishes, retained, what was last committed. For
the attributes a ``/set`` changes (``durable``: on/off, level, colour temperature) that
would show a switch in its older state in the cloud until it next changes, so a batch
holding a change of one of them ends with a commit of its own (a report that repeats
the last value does not); measurements, which devices report again within minutes, wait
for zigpy's commit and write the SD card less.

A batch goes to the database thread :data:`CHUNK` statements at a time. zigpy's handlers
run as they are, with a :class:`_Recorder` as their ``self`` that keeps each statement
they execute (zigpy's SQL and parameters, unchanged) instead of sending it; the kept
statements then run in one call on aiosqlite's thread (``Connection._execute``, which
zigpy uses itself), and the batch ends with one ``_commit()``, zigpy's own (a deferred
commit by default). A statement at a time, each was a round trip between the event loop
and that thread (a queue, a thread wake-up, a wake-up of the loop through its
self-pipe): at 100 reports a second, 200 of them, and two fifths of the event loop's
system calls. A whole batch at once (600 statements at 200 plugs under a flood) kept
the event loop busy with zigpy's handlers for milliseconds without a pause, and all
their parameters alive together: the hub idled 0.6 MB larger (bench/README.md).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Collection, Hashable
from typing import Any

log = logging.getLogger(__name__)

BATCH_HANDLER = "_gatewayd_write_batch"  # the name zigpy's worker looks our batches up by
SERVER = 0  # zigpy's ClusterType.Server, as its attribute events carry it
CHUNK = 32  # statements handed to the database thread at once
MAX_ADDRESSES = 1024  # EUI64 objects whose text is remembered (about one per device)
MAX_DURABLE = 4096  # durable attributes' last values remembered (a few per device)


def _event_key(event: Any) -> tuple[Any, ...]:
    """Which cached attribute an attribute event writes (or clears)."""
    return (event.device_ieee, event.endpoint_id, event.cluster_type, event.cluster_id,
            event.attribute_id, event.manufacturer_code)


def _device_of(key: tuple[str, Hashable]) -> Any:
    cb_name, what = key
    return what[0] if cb_name == "_save_attribute" else what  # type: ignore[index]


class CoalescedWrites:
    """Installed on a zigpy ``PersistingListener`` (its ``enqueue`` and ``shutdown``)."""

    def __init__(self, listener: Any, interval: float = 1.0,
                 durable: Collection[tuple[int, str]] = ()) -> None:
        self.listener = listener
        self.interval = interval
        self.durable = durable  # (cluster id, attribute name): committed with their batch
        self.durable_commits = 0  # batches committed for a durable attribute
        self._durable_clusters = frozenset(cluster for cluster, _ in durable)
        # each durable attribute's last value seen: a report that repeats it (a plug's
        # on/off every 15 minutes) does not make its batch commit
        self._durable_values: dict[Hashable, Any] = {}
        self._commit_batch = False  # a durable attribute's change waits in ``pending``
        self.pending: dict[tuple[str, Hashable], tuple[Any, ...]] = {}
        self.coalesced = 0  # writes replaced by a newer one before they were made
        self._enqueue: Callable[..., None] = listener.enqueue
        self._shutdown: Callable[[], Any] = listener.shutdown
        self._timer: asyncio.TimerHandle | None = None
        self._in_flight = False
        self._texts: dict[int, tuple[Any, str]] = {}  # id(EUI64) -> it, its text
        listener.enqueue = self.enqueue
        listener.shutdown = self.shutdown
        setattr(listener, BATCH_HANDLER, self._write_batch)

    def enqueue(self, cb_name: str, *args: Any) -> None:
        key: Hashable | None = None
        if cb_name == "_save_attribute":
            # A failed write is rare, and it must not replace a good report.
            event = args[0]
            if type(event).__name__ != "AttributeWrittenEvent":
                key = _event_key(event)
                if event.cluster_id in self._durable_clusters and \
                        (event.cluster_id, event.attribute_name) in self.durable and \
                        event.cluster_type == SERVER:
                    self._durable_change(key, event.value)
        elif cb_name == "_save_device_last_seen":
            key = self._text(args[0])
        if key is None:
            self._supersede(cb_name, args)
            self._enqueue(cb_name, *args)
            return
        pending = self.pending
        waiting = len(pending)
        pending[(cb_name, key)] = args  # hashed once: this runs for every report
        if len(pending) == waiting:
            self.coalesced += 1
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self.flush)

    def _durable_change(self, key: Hashable, value: Any) -> None:
        values = self._durable_values
        if key in values and values[key] == value:
            return
        if len(values) >= MAX_DURABLE and key not in values:
            values.clear()  # a network past its bound: some repeats commit once more
        values[key] = value
        self._commit_batch = True

    def _text(self, ieee: Any) -> str:
        """``str(ieee)``, as attribute events carry the address, remembered per object:
        zigpy formats an EUI64 as text each time it is printed or hashed, and a device
        hands the same object with every report."""
        known = self._texts.get(id(ieee))
        if known is not None and known[0] is ieee:
            return known[1]
        text = str(ieee)
        if len(self._texts) >= MAX_ADDRESSES:
            self._texts.clear()
        self._texts[id(ieee)] = (ieee, text)
        return text

    def _supersede(self, cb_name: str, args: tuple[Any, ...]) -> None:
        """Drop waiting writes that a pass-through call makes stale: written after it,
        they would bring back a cleared attribute or a removed device's rows."""
        if cb_name in ("_save_attribute", "_clear_attribute"):
            self.pending.pop(("_save_attribute", _event_key(args[0])), None)
        elif cb_name == "_remove_device":
            # By text: attribute events carry the address as text, zigpy's calls an EUI64.
            ieee = self._text(args[0].ieee)
            for key in [k for k in self.pending if _device_of(k) == ieee]:
                del self.pending[key]

    def flush(self) -> None:
        """Hand the waiting writes to zigpy, unless its previous batch is still going."""
        self._timer = None
        if not self.pending:
            return
        if self._in_flight:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self.flush)
            return
        batch = [(cb_name, args) for (cb_name, _), args in self.pending.items()]
        self.pending.clear()
        self._in_flight = True
        commit, self._commit_batch = self._commit_batch, False
        self._enqueue(BATCH_HANDLER, batch, commit)

    async def _write_batch(self, batch: list[tuple[str, tuple[Any, ...]]],
                           commit: bool = False) -> None:
        try:
            recorder = _Recorder(self.listener)
            for cb_name, args in batch:
                recorder.handler = cb_name
                try:
                    await getattr(type(self.listener), cb_name)(recorder, *args)
                except Exception:  # as zigpy's own worker: log and carry on
                    log.exception("zigbee.db: %s failed", cb_name)
                if len(recorder.statements) >= CHUNK:
                    await self._hand_over(recorder.take())
            await self._hand_over(recorder.take())
            if commit:
                self.durable_commits += 1
                await self.listener._commit(force=True)
            elif recorder.commits:
                await self.listener._commit(force=recorder.forced)
        finally:
            # zigpy's worker keeps the item it handled last bound until the next one
            # comes: a quiet hub would hold this batch's events (a join's are thousands).
            batch.clear()
            self._in_flight = False

    async def _hand_over(self, statements: list[tuple[str, str, Any]]) -> None:
        """Recorded statements, in one call on the database thread; each failure logged."""
        if not statements:
            return
        db = self.listener._db
        for i, exc in await db._execute(_execute_all, db._conn, statements):
            if isinstance(exc, sqlite3.Error):  # one bad row must not lose the others
                log.debug("zigbee.db: %s failed: %s", statements[i][0], exc)
            else:
                log.error("zigbee.db: %s failed", statements[i][0], exc_info=exc)

    async def shutdown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._in_flight = False  # zigpy's worker finishes it before it closes the database
        self.flush()
        await self._shutdown()


class _Recorder:
    """zigpy's ``PersistingListener`` as its write handlers see it in a batch: what they
    execute is kept, in order, with the name of the handler that executed it, and a
    commit they ask for is noted; the rest is the listener's own."""

    def __init__(self, listener: Any) -> None:
        self._listener = listener
        self.handler = ""
        self.statements: list[tuple[str, str, Any]] = []  # handler, SQL, parameters
        self.commits = 0
        self.forced = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._listener, name)

    def take(self) -> list[tuple[str, str, Any]]:
        taken, self.statements = self.statements, []
        return taken

    async def execute(self, sql: str, parameters: Any = None) -> None:
        self.statements.append((self.handler, sql, [] if parameters is None else parameters))

    async def _commit(self, force: bool = False) -> None:
        self.commits += 1
        self.forced = self.forced or force


def _execute_all(conn: sqlite3.Connection, statements: list[tuple[str, str, Any]]
                 ) -> list[tuple[int, Exception]]:
    """On the database thread: every statement, and which of them failed (and why)."""
    failed = []
    for i, (_, sql, parameters) in enumerate(statements):
        try:
            conn.execute(sql, parameters)
        except Exception as exc:  # reported on the loop, row by row
            failed.append((i, exc))
    return failed
