"""gatewayd.runtime.heap: start-up garbage is collected, the rest frozen out of the collector."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from gatewayd.runtime import heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # later tests get an ordinary collector


def test_settle_collects_cycles_then_freezes_what_lives() -> None:
    a, b = Node(), Node()
    a.other, b.other = b, a
    garbage = weakref.ref(a)
    del a, b  # a cycle: only the collector can free it
    kept = Node()
    frozen = heap.settle()
    assert garbage() is None, "the cycle was frozen instead of collected"
    assert frozen == gc.get_freeze_count() > 0
    assert not any(o is kept for o in gc.get_objects())  # skipped by every collection
    status = heap.status()
    assert status["frozen_objects"] == frozen and status["rss_mb"] > 0
    assert len(status["collections"]) == 3


def test_a_frozen_object_that_dies_is_collected_at_the_next_settle() -> None:
    a, b = Node(), Node()
    a.other, b.other = b, a
    alive = weakref.ref(a)
    heap.settle()  # frozen while alive (like the zigpy app before a radio restart)
    del a, b
    gc.collect()
    assert alive() is not None  # the collector skips frozen objects
    heap.settle()
    assert alive() is None


def test_a_light_settle_freezes_without_walking_the_old_generation() -> None:
    gc.collect()  # everything that lives is in the old generation now
    old = [Node() for _ in range(1000)]
    gc.collect()
    full_collections = gc.get_stats()[2]["collections"]
    young = Node()
    frozen = heap.settle(full=False)
    assert gc.get_stats()[2]["collections"] == full_collections  # no full collection
    assert frozen == gc.get_freeze_count() > len(old)
    assert not any(o is young or o is old[0] for o in gc.get_objects())  # both frozen


def test_settling_waits_after_ready_then_repeats() -> None:
    async def main() -> None:
        full_collections: list[int] = []
        twice = asyncio.Event()

        def watch(phase: str, info: dict[str, int]) -> None:  # runs on the loop's thread
            if phase == "stop" and info["generation"] == 2:
                full_collections.append(1)
                if len(full_collections) >= 2:
                    twice.set()

        gc.callbacks.append(watch)
        task = asyncio.create_task(heap.settle_periodically(first=0.05, interval=0.01))
        try:
            await asyncio.sleep(0)  # the task has started ...
            assert not full_collections  # ... and waits: the first requests come first
            await asyncio.wait_for(twice.wait(), 10)  # settled, then again
        finally:
            task.cancel()
            gc.callbacks.remove(watch)
        assert gc.get_freeze_count() > 0

    asyncio.run(main())
