"""Loaded by the daemon's interpreter when ``python -m bench.memory --trace`` puts this
directory on its PYTHONPATH: tracemalloc from the first import, and a snapshot written
on SIGUSR1 (to ``$GATEWAYD_MEMPROBE_DIR/snap-<n>``, then ``done-<n>``). A bench tool only:
nothing in the daemon knows of it."""

import gc
import os
import signal
import tracemalloc

_DIR = os.environ.get("GATEWAYD_MEMPROBE_DIR")
if _DIR:
    tracemalloc.start(int(os.environ.get("GATEWAYD_MEMPROBE_FRAMES", "12")))
    _taken = [0]

    def _snapshot(signum: int, frame: object) -> None:
        gc.collect()  # what is alive, not what waits for the collector
        _taken[0] += 1
        tracemalloc.take_snapshot().dump(os.path.join(_DIR, f"snap-{_taken[0]}"))
        open(os.path.join(_DIR, f"done-{_taken[0]}"), "w").close()

    signal.signal(signal.SIGUSR1, _snapshot)
