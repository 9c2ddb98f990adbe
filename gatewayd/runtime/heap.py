"""The daemon's long-lived heap: collected once after start-up, then frozen out of the GC.

A hub with a Zigbee network holds some 300 000 long-lived objects (zigpy's cluster and
quirk definitions, every device's endpoints and attribute caches). CPython's full
(generation 2) collection walks all of them with the event loop stopped: 87 ms on the
benchmark machine, which set the bridge's 99th-percentile latency. ``gc.freeze()`` moves
every object that exists now into a permanent generation the collector skips; objects
created later are collected as usual, so a later full collection walks only those.

Settling runs a few seconds after READY, again each time the Zigbee radio comes up (after
the bridge has restored its devices, the other big batch of long-lived objects), and every
:data:`RESETTLE_INTERVAL` so that frozen objects that have since died get collected.

The first two are *light* (``settle(full=False)``): only the youngest generation is
collected before the freeze, a few milliseconds, because a full collection stops the
event loop for as long as it walks the heap (87 ms with 200 devices on the benchmark
machine, half a second on a busy one) and nothing may block the loop after READY (issue
18, item 11). Start-up garbage that had already reached the old generation is frozen with
the rest until the first hourly full settle. A radio that comes up *again* gets a full
settle: the zigpy application it replaced, with all its devices, is garbage to reclaim.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RESETTLE_INTERVAL = 3600.0  # seconds; one full collection (~0.1 s) an hour
# After READY, the first settle waits this long: the first requests (a /pair right after
# boot) should not queue behind a full collection.
FIRST_SETTLE_DELAY = 5.0


async def settle_periodically(first: float = FIRST_SETTLE_DELAY,
                              interval: float = RESETTLE_INTERVAL) -> None:
    await asyncio.sleep(first)
    settle(full=False)
    while True:
        await asyncio.sleep(interval)
        settle()


def settle(full: bool = True) -> int:
    """Collect everything (what was frozen before included), then freeze what lives.

    Unfreezing first matters: an object frozen while alive (a replaced zigpy app, a
    removed device) would otherwise never be collected once it became garbage. With
    ``full=False`` only the youngest generation is collected, then everything is frozen.
    """
    started = time.perf_counter()
    if full:
        gc.unfreeze()
        gc.collect()
    else:
        gc.collect(0)
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("heap settled (%s): %d objects frozen in %.0f ms", "full" if full else "light",
              frozen, (time.perf_counter() - started) * 1000)
    return frozen


def status() -> dict[str, Any]:
    """For ``gatewayctl status``: the process's memory and what the collector skips."""
    rss_kb = 0
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    except OSError:
        pass
    return {"rss_mb": round(rss_kb / 1024, 1), "frozen_objects": gc.get_freeze_count(),
            "collections": [g["collections"] for g in gc.get_stats()]}
