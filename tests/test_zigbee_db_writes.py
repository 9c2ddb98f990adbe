"""zigbee.db writes under a report flood: a bounded queue, and the last value survives."""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import sqlite3
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import zigpy.types as t
from zigpy.appdb import DB_V

from gatewayd.zigbee import db_writes, pinned
from gatewayd.zigbee.db_writes import BATCH_HANDLER, MAX_ADDRESSES, MAX_DURABLE, CoalescedWrites
from gatewayd.zigbee.device_rows import SAVE_HANDLER
from tests.helpers import run_async
from tests.test_bridge import dev_id, join, on_set, started
from tests.zigbee_radios import Radio

pytestmark = pytest.mark.timeout(120)
run = functools.partial(run_async, timeout=90.0)
REPORTS_PER_PLUG = 1500


async def quiet(listener: Any) -> None:
    """Until zigpy's write worker has written everything queued so far."""
    await listener._callback_handlers.join()


async def hold_writes(listener: Any) -> None:
    """Write what waits in front of zigpy's queue (CoalescedWrites), and keep later
    attribute writes waiting: what a test then reads or compares stays as it is."""
    writes: CoalescedWrites = listener.enqueue.__self__
    writes.interval = 3600.0  # a write that comes later waits (a timer an hour away)

    def no_timer() -> None:
        if writes._timer is not None:
            writes._timer.cancel()
            writes._timer = None

    no_timer()
    while True:
        await quiet(listener)  # the batch in flight, if any, is written
        if not writes.pending:
            break
        writes.flush()
        no_timer()


def test_a_flood_keeps_the_database_queue_bounded_and_keeps_the_last_value(
        tmp_path: Path) -> None:
    async def flood() -> list[str]:
        bridge, pub = await started(Radio("virtual", tmp_path), min_interval=0.0)
        plugs = sorted([await join(bridge, pub, "plug") for _ in range(3)])
        assert bridge.app is not None and bridge.virtual is not None
        queue = bridge.app._dblistener._callback_handlers
        depth: list[int] = []
        publish = pub.set_value

        def sample(device_id: str, node_id: str, property_id: str, value: Any) -> None:
            depth.append(queue.qsize())  # zigpy's write queue, at every published value
            publish(device_id, node_id, property_id, value)

        pub.set_value = sample  # type: ignore[method-assign]
        bridge.virtual.stream(count=REPORTS_PER_PLUG * len(plugs), offset=1)
        last = REPORTS_PER_PLUG / 10  # raw 1..1500 in 0.1 W
        await pub.until(lambda: all(pub.value(dev_id(p), "meter/power") == last
                                    for p in plugs), timeout=60)
        # Unbounded, zigpy queued two writes per report (thousands); coalesced, at most a
        # batch and a few pass-through events wait.
        assert len(depth) >= REPORTS_PER_PLUG and max(depth) <= 10, max(depth)
        await bridge.stop()
        return plugs

    async def restart(plugs: list[str]) -> None:
        bridge, pub = await started(Radio("virtual", tmp_path))
        for plug in plugs:
            await pub.state(dev_id(plug), "ready")
            assert pub.value(dev_id(plug), "meter/power") == REPORTS_PER_PLUG / 10
        await bridge.stop()

    run(restart(run(flood())))


def test_written_events_are_not_kept_once_their_batch_is_written(tmp_path: Path) -> None:
    """zigpy's write worker keeps the last item it handled until the next one arrives;
    the batch it handled must not keep the events it carried (a join's are thousands)."""
    async def main() -> None:
        bridge, pub = await started(Radio("virtual", tmp_path), min_interval=0.0)
        assert bridge.app is not None
        listener = bridge.app._dblistener
        seen: list[weakref.ref[Any]] = []
        enqueue = listener.enqueue

        def watch(cb_name: str, *args: Any) -> None:
            if cb_name == "_save_attribute":
                seen.append(weakref.ref(args[0]))
            enqueue(cb_name, *args)

        try:
            plug = await join(bridge, pub, "plug")
            assert bridge.virtual is not None
            listener.enqueue = watch
            bridge.virtual.stream(count=20, offset=1)
            await pub.until(lambda: pub.value(dev_id(plug), "meter/power") == 2.0, timeout=30)
            listener.enqueue = enqueue
            await hold_writes(listener)  # from here on, only its flush writes
            assert listener._callback_handlers.empty()  # the worker's last item: a batch
            gc.collect()
            assert seen and [ref() for ref in seen if ref() is not None] == []
        finally:
            await bridge.stop()

    run(main())


async def attribute_rows(listener: Any, attribute_id: int) -> dict[str, Any]:
    """Each device's cached value of one attribute, as zigbee.db holds it now."""
    cursor = await listener._db.execute(
        f"SELECT ieee, value FROM attributes_cache{DB_V} WHERE attr_id = ?", (attribute_id,))
    return {str(ieee): value for ieee, value in await cursor.fetchall()}


@contextlib.asynccontextmanager
async def joined_and_held(tmp_path: Path, count: int
                          ) -> AsyncIterator[tuple[Any, Any, Any, list[str]]]:
    """A bridge on the virtual radio with ``count`` plugs joined, everything written so
    far in zigbee.db and later writes held (:func:`hold_writes`): bridge, publisher,
    zigpy's database listener, the plugs."""
    bridge, pub = await started(Radio("virtual", tmp_path), min_interval=0.0)
    assert bridge.app is not None
    listener = bridge.app._dblistener
    try:
        plugs = [await join(bridge, pub, "plug") for _ in range(count)]
        await hold_writes(listener)
        yield bridge, pub, listener, plugs
    finally:
        await bridge.stop()


@pytest.mark.parametrize("chunk", [db_writes.CHUNK, 2])
def test_a_batch_goes_to_the_database_thread_a_chunk_at_a_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    """Each statement used to be a round trip between the loop and aiosqlite's thread
    (two wake-ups); a chunk of them is now one. A chunk, not the whole batch: the loop
    pauses between chunks, and only a chunk's parameters are alive at once."""
    monkeypatch.setattr(db_writes, "CHUNK", chunk)

    async def main() -> None:
        async with joined_and_held(tmp_path, 3) as (bridge, pub, listener, plugs):
            writes: CoalescedWrites = listener.enqueue.__self__
            for n, plug in enumerate(plugs):
                await bridge.sim.call("report", {"ieee": plug, "cluster": "electrical_measurement",
                                                 "attributes": {"active_power": 500 + n}})
            await pub.until(lambda: all(pub.value(dev_id(p), "meter/power") == 50 + n / 10
                                        for n, p in enumerate(plugs)))
            waiting = [name for name, _ in writes.pending]
            assert waiting.count("_save_attribute") >= len(plugs)
            calls: list[Any] = []
            execute = listener._db._execute

            async def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
                calls.append(fn)
                return await execute(fn, *args, **kwargs)

            listener._db._execute = counted
            writes.flush()
            await quiet(listener)
            listener._db._execute = execute
            assert len(calls) == -(-len(waiting) // chunk), f"{len(calls)} for {len(waiting)}"
            # 0x050B: active power, the value zigpy's own statements wrote
            assert {ieee: value for ieee, value in (await attribute_rows(listener, 0x050B)
                                                    ).items() if ieee in plugs} == {
                p: 500 + n for n, p in enumerate(plugs)}

    run(main())


def committed(state_dir: Path, cluster_id: int, attribute_id: int) -> dict[str, Any]:
    """Each device's cached value of one attribute as a power cut would leave zigbee.db:
    read through a connection of its own, which sees committed transactions only."""
    with contextlib.closing(sqlite3.connect(state_dir / "zigbee.db")) as db:
        return {str(ieee): value for ieee, value in db.execute(
            f"SELECT ieee, value FROM attributes_cache{DB_V} WHERE cluster_type = 0 AND "
            "cluster_id = ? AND attr_id = ?", (cluster_id, attribute_id))}


ON_OFF = (0x0006, 0x0000)
ON_OFF_NAME = (0x0006, "on_off")
ACTIVE_POWER = (0x0B04, 0x050B)


def test_a_sets_state_is_committed_with_its_batch_and_a_measurement_waits(
        tmp_path: Path) -> None:
    """After a power cut the hub restores and republishes what zigbee.db last committed,
    and zigpy commits every 30 s: a switch's state must not wait for that (the cloud
    would show it switched back), a power reading may (the plug reports it again)."""
    async def main() -> None:
        async with joined_and_held(tmp_path, 1) as (bridge, pub, listener, (plug,)):
            writes: CoalescedWrites = listener.enqueue.__self__
            listener._commit_interval = 3600.0  # zigpy's own deferred commit stays away
            if listener._commit_task is not None:
                listener._commit_task.cancel()
            await listener._commit(force=True)  # the join, as a first commit leaves it
            assert committed(tmp_path, *ON_OFF)[plug] == 0  # a plug joins switched off
            durable = writes.durable_commits  # the join's read of on/off made one

            await bridge.sim.call("report", {"ieee": plug, "cluster": "electrical_measurement",
                                             "attributes": {"active_power": 777}})
            await pub.until(lambda: pub.value(dev_id(plug), "meter/power") == 77.7)
            writes.flush()
            await quiet(listener)
            assert (await attribute_rows(listener, ACTIVE_POWER[1]))[plug] == 777  # written
            assert committed(tmp_path, *ACTIVE_POWER)[plug] != 777  # not yet committed
            assert writes.durable_commits == durable

            assert await on_set(pub, dev_id(plug), "switch/on-off")(True) is True
            await pub.until(lambda: pub.value(dev_id(plug), "switch/on-off") is True)
            writes.flush()
            await quiet(listener)
            assert committed(tmp_path, *ON_OFF)[plug] == 1
            assert committed(tmp_path, *ACTIVE_POWER)[plug] == 777  # the same transaction
            assert writes.durable_commits == durable + 1

            # the plug reports its state again, unchanged, and a new power: no commit
            await bridge.sim.call("report", {"ieee": plug, "cluster": "on_off",
                                             "attributes": {"on_off": 1}})
            await bridge.sim.call("report", {"ieee": plug, "cluster": "electrical_measurement",
                                             "attributes": {"active_power": 778}})
            await pub.until(lambda: pub.value(dev_id(plug), "meter/power") == 77.8)
            assert any(key[0] == "_save_attribute" and key[1][3] == ON_OFF[0]
                       for key in writes.pending)  # the repeat did reach the batch
            writes.flush()
            await quiet(listener)
            assert committed(tmp_path, *ACTIVE_POWER)[plug] == 777
            assert writes.durable_commits == durable + 1

    run(main())


def test_a_row_that_fails_is_logged_and_the_others_of_its_batch_are_written(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with joined_and_held(tmp_path, 2) as (_, _, listener, plugs):
            writes: CoalescedWrites = listener.enqueue.__self__
            first, second = (event(p, 0x050B, 700 + n) for n, p in enumerate(plugs))
            first.value = object()  # no SQLite type: binding it fails
            listener.enqueue("_save_attribute", first)
            listener.enqueue("_save_attribute", second)
            with caplog.at_level(logging.DEBUG, logger="gatewayd.zigbee.db_writes"):
                writes.flush()
                await quiet(listener)
            failed = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
            assert len(failed) == 1 and failed[0].startswith(
                "zigbee.db: _save_attribute failed: "), failed
            rows = await attribute_rows(listener, 0x050B)
            assert rows[plugs[1]] == 701 and rows.get(plugs[0]) != 700

    run(main())


class ListenerStandIn:
    """The two methods of zigpy's PersistingListener that CoalescedWrites wraps."""

    def __init__(self) -> None:
        self.queued: list[tuple[str, tuple[Any, ...]]] = []

    def enqueue(self, cb_name: str, *args: Any) -> None:
        self.queued.append((cb_name, args))

    async def shutdown(self) -> None:
        return None


def event(ieee: str, attribute_id: int, value: Any = 0, *, cluster_id: int = 0x0B04,
          attribute_name: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(device_ieee=ieee, endpoint_id=1, cluster_type=0, cluster_id=cluster_id,
                           attribute_name=attribute_name, attribute_id=attribute_id,
                           manufacturer_code=None, value=value)


def test_a_clear_or_a_removal_drops_the_waiting_writes_it_makes_stale() -> None:
    async def main() -> None:
        listener = ListenerStandIn()
        writes = CoalescedWrites(listener, interval=3600)
        listener.enqueue("_save_attribute", event("aa", 1, 5))
        listener.enqueue("_save_attribute", event("aa", 1, 6))  # replaces the 5
        listener.enqueue("_save_attribute", event("aa", 2))
        listener.enqueue("_save_device_last_seen", "aa", 123.0)
        listener.enqueue("_save_attribute", event("bb", 1))
        assert len(writes.pending) == 4 and writes.coalesced == 1 and not listener.queued
        listener.enqueue("_clear_attribute", event("aa", 1))
        assert [k[1][4] for k in writes.pending if k[1] != "aa" and k[1][0] == "aa"] == [2]
        listener.enqueue("_remove_device", SimpleNamespace(ieee="aa"))
        assert [k[1] for k in writes.pending] == [("bb", 1, 0, 0x0B04, 1, None)]
        assert [q[0] for q in listener.queued] == ["_clear_attribute", "_remove_device"]
        await listener.shutdown()  # the waiting write goes out first, as one batch
        assert listener.queued[-1][0] == BATCH_HANDLER
        assert [a[0].device_ieee for _, a in listener.queued[-1][1][0]] == ["bb"]

    run(main())


def test_a_removal_drops_the_waiting_writes_of_that_device_as_zigpy_calls_it() -> None:
    """zigpy names the device by an EUI64 object in last-seen writes and removals, by
    its text in attribute events; equal addresses in other objects are the same device."""
    async def main() -> None:
        listener = ListenerStandIn()
        writes = CoalescedWrites(listener, interval=3600)
        gone, kept = (t.EUI64.convert(f"00:11:22:33:44:55:66:{n:02x}") for n in (1, 2))
        listener.enqueue("_save_attribute", event(str(gone), 1))
        listener.enqueue("_save_device_last_seen", gone, 1.0)
        listener.enqueue("_save_device_last_seen", t.EUI64(gone), 2.0)  # the same device
        listener.enqueue("_save_attribute", event(str(kept), 1))
        listener.enqueue("_save_device_last_seen", kept, 3.0)
        assert len(writes.pending) == 4 and writes.coalesced == 1
        assert [a for (name, _), a in writes.pending.items()
                if name == "_save_device_last_seen"] == [(t.EUI64(gone), 2.0), (kept, 3.0)]
        listener.enqueue("_remove_device", SimpleNamespace(ieee=t.EUI64(gone)))
        assert list(writes.pending.values()) == [(event(str(kept), 1),), (kept, 3.0)]
        await listener.shutdown()
        assert [name for name, _ in listener.queued[-1][1][0]] == [
            "_save_attribute", "_save_device_last_seen"]

    run(main())


def test_what_it_remembers_of_addresses_is_bounded() -> None:
    async def main() -> None:
        listener = ListenerStandIn()
        writes = CoalescedWrites(listener, interval=3600)
        for n in range(3 * MAX_ADDRESSES):
            ieee = t.EUI64.convert(f"00:11:22:33:44:55:{n >> 8:02x}:{n & 0xFF:02x}")
            listener.enqueue("_save_device_last_seen", ieee, float(n))
        assert len(writes._texts) <= MAX_ADDRESSES
        assert len(writes.pending) == 3 * MAX_ADDRESSES and writes.coalesced == 0
        await listener.shutdown()

    run(main())


def test_what_it_remembers_of_durable_values_is_bounded() -> None:
    """Past its bound it forgets, and a repeat it forgot makes one more commit: never a
    change that makes none."""
    async def main() -> None:
        listener = ListenerStandIn()
        writes = CoalescedWrites(listener, interval=3600, durable={ON_OFF_NAME})
        batches = []
        for n in range(3 * MAX_DURABLE):
            for value in (0, 0, 1):  # a state, its repeat, a change
                listener.enqueue("_save_attribute", event(f"{n:016x}", 0, value,
                                                          cluster_id=0x0006,
                                                          attribute_name="on_off"))
                writes.flush()
                batches.append(listener.queued.pop()[1][1])  # the batch's commit flag
                writes._in_flight = False  # the stand-in writes nothing: the next may go
            assert len(writes._durable_values) <= MAX_DURABLE
        assert batches == [True, False, True] * (3 * MAX_DURABLE)
        await listener.shutdown()

    run(main())


def test_zigpys_own_writes_on_a_zigpy_they_were_not_written_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Coalesced writes and snapshot saves reach into zigpy's PersistingListener: on any
    zigpy but the pinned one they stay off, and zigpy's own writer keeps the database."""
    monkeypatch.setattr(pinned, "ZIGPY_VERSION", "0.0.0")

    async def other_zigpy() -> str:
        bridge, pub = await started(Radio("virtual", tmp_path))
        assert bridge.app is not None
        listener = bridge.app._dblistener
        assert not isinstance(getattr(listener.enqueue, "__self__", None), CoalescedWrites)
        assert not hasattr(listener, BATCH_HANDLER) and not hasattr(listener, SAVE_HANDLER)
        plug = await join(bridge, pub, "plug")  # saved by zigpy, from its clone
        await bridge.sim.call("report", {"ieee": plug, "cluster": "electrical_measurement",
                                         "attributes": {"active_power": 421}})
        await pub.until(lambda: pub.value(dev_id(plug), "meter/power") == 42.1)
        await bridge.stop()
        return plug

    plug = run(other_zigpy())
    monkeypatch.undo()

    async def restart() -> None:
        bridge, pub = await started(Radio("virtual", tmp_path))
        await pub.state(dev_id(plug), "ready")
        assert pub.value(dev_id(plug), "meter/power") == 42.1  # from zigbee.db
        assert isinstance(bridge.app._dblistener.enqueue.__self__, CoalescedWrites)
        await bridge.stop()

    run(restart())
