"""How long to wait before trying again: exponential backoff with jitter, no I/O."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random, *,
                  floor: float = 0.0) -> float:
    """uniform(floor * c, c) seconds, c = min(cap, base * 2**attempt), attempt counting from 0.

    The default, *full jitter*, spreads a fleet of hubs that lost the same broker over the
    whole window instead of sending them back in synchronised waves. A ``floor`` (a
    fraction of ``c``) keeps a minimum wait where a failure comes back at once and a wait
    near zero would spin (a radio whose port is missing).
    """
    ceiling = min(cap, base * 2.0 ** min(attempt, 60))
    return rng.uniform(floor * ceiling, ceiling)
