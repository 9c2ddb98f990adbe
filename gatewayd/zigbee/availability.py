"""Which Zigbee children are still there: battery ones by age, mains ones by a ping.

A mains-powered device that has been silent longer than ``mains_timeout`` is pinged (a
read of the Basic cluster's ``zcl_version``); one that does not answer is unreachable, one
that answers is heard. A battery device cannot be pinged (it sleeps): silent longer than
``battery_timeout``, it is reported silent. Devices already disconnected are pinged too, so
their return is seen.
"""

from __future__ import annotations

import asyncio
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
    while True:
        await asyncio.sleep(interval)
        now = time.time()
        pings = []
        for child in children():
            age = now - (child.device.last_seen or 0)
            if child.sleepy:
                if age > battery_timeout:
                    host.child_silent(child)
            elif child.state in ("ready", "disconnected") and age > mains_timeout:
                pings.append(_ping(child, host, ping_timeout))
        await asyncio.gather(*pings)


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
