"""Which Zigbee children are still there: battery ones by age, mains ones by a ping.

A mains-powered device that has been silent longer than ``mains_timeout`` is pinged (a
read of the Basic cluster's ``zcl_version``); one that does not answer is unreachable, one
that answers is heard. A battery device cannot be pinged (it sleeps): silent longer than
``battery_timeout``, it is reported silent. Devices already disconnected are pinged too, so
their return is seen.

Ages are kept on the monotonic clock (:class:`HeardClock`): zigpy's ``last_seen`` is wall
clock time, which NTP may step by days on a Pi whose fake-hwclock was behind; compared with
the wall clock across such a step, a device heard a second before looked silent for two
days and was reported ``disconnected``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gatewayd.zigbee.child import Child


class AvailabilityHost(Protocol):
    def child_heard(self, child: Child) -> None: ...

    def child_unreachable(self, child: Child) -> None: ...

    def child_silent(self, child: Child) -> None: ...


async def watch_availability(children: Callable[[], Iterable[Child]], host: AvailabilityHost,
                             *, interval: float, mains_timeout: float, battery_timeout: float,
                             ping_timeout: float) -> None:
    """Check every ``interval`` seconds until cancelled."""
    clock = HeardClock()
    clock.ages(children())  # the devices restored: aged by the wall clock, this once
    while True:
        await asyncio.sleep(interval)
        pings = []
        for child, age in clock.ages(children()):
            if child.sleepy:
                if age > battery_timeout:
                    host.child_silent(child)
            elif child.state in ("ready", "disconnected") and age > mains_timeout:
                pings.append(_ping(child, host, ping_timeout))
        await asyncio.gather(*pings)


class HeardClock:
    """When each child was last heard, on the monotonic clock.

    zigpy's ``last_seen`` changes with every frame a device sends; at each check, a value
    that changed since the previous one is a frame heard in between: its wall-clock age, but
    never more than the (monotonic) time since that check, whatever the wall clock did
    meanwhile. A value that did not change keeps the monotonic time it was given. The first
    check has nothing to bound it: the devices restored from zigbee.db are aged by the wall
    clock, as they were heard before this start.
    """

    def __init__(self) -> None:
        self._heard: dict[Child, tuple[float | None, float]] = {}  # last_seen, monotonic
        self._checked: float | None = None

    def ages(self, children: Iterable[Child]) -> list[tuple[Child, float]]:
        """Each child with the seconds since it was last heard; forgets the children gone."""
        mono, wall = time.monotonic(), time.time()
        bound = math.inf if self._checked is None else mono - self._checked
        heard: dict[Child, tuple[float | None, float]] = {}
        for child in children:
            last_seen = child.device.last_seen
            known = self._heard.get(child)
            if known is not None and known[0] == last_seen:
                heard[child] = known
            else:
                age = min(max(wall - (last_seen or 0), 0.0), bound)
                heard[child] = (last_seen, mono - age)
        self._heard, self._checked = heard, mono
        return [(child, mono - at) for child, (_, at) in heard.items()]


async def _ping(child: Child, host: AvailabilityHost, timeout: float) -> None:
    dev = child.device
    basic = next((ep.in_clusters[0x0000] for ep in dev.non_zdo_endpoints
                  if 0x0000 in ep.in_clusters), None)
    if basic is None:
        return
    try:
        async with asyncio.timeout(timeout):
            await basic.read_attributes(["zcl_version"])
    except Exception:  # any failure means: not reachable now
        host.child_unreachable(child)
    else:
        host.child_heard(child)
