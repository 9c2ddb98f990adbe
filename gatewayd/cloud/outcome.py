"""How the cloud link's sessions go: start outcomes, connection statistics, heartbeats.

**Start outcomes.** What one start of the link came to: the first outcome, and the
definite one.

Onboarding's cloud step asks "did these credentials work?": the first outcome answers at
once; the definite one (CONNECTED or REFUSED) waits out transient failures (DNS, TCP, TLS)
that the link retries on its own, and falls back to the latest failure when time runs out.
For an account a person has just typed in (a pairing request), a port where nothing
listens is an answer too once every try for :data:`CLOSED_SETTLE` seconds (at least
:data:`CLOSED_TRIES` tries) found it closed (``closed_is_answer``): a mistyped port never
opens, and its user need not wait out the whole ``connect_timeout`` to hear so. Others (the
stored account at a boot or a reconnect, an issued one) wait it out: a closed port there
is a broker that is starting or restarting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from gatewayd import homie
from gatewayd.cloud.attempts import CloudOutcome, CloudResult
from gatewayd.cloud.net import Connection

HEARTBEAT_PAYLOAD = b"ping"
# Devices whose heartbeats go out in one turn of the loop. A round is spread over the
# interval in such groups: all 201 of a 200-plug hub in one turn held the loop ~8 ms (the
# publications, then one write of all of them), and every Zigbee report due meanwhile
# waited (bench/README.md, "The heartbeat round").
HEARTBEAT_GROUP = 16
CLOSED_SETTLE = 5.0  # seconds of nothing but a closed port that make it an answer
CLOSED_TRIES = 3  # ... and at least this many tries found it closed


@dataclass
class LinkStats:
    connected_since: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    connects: int = 0

    def failed(self, reason: str, at: float) -> None:
        self.last_error, self.last_error_at = reason, at

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def heartbeats(conn: Connection, devices: Callable[[], Iterable[homie.Device]],
                     root: str, interval: float, tick: Callable[[], None]) -> None:
    """Non-retained ``$heartbeat`` per device, on a fixed schedule (no drift), until
    cancelled (the link cancels it when the connection ends). A round goes out in groups
    of :data:`HEARTBEAT_GROUP` devices spread evenly over the interval, so each device
    still beats once per interval, at the same offset in it while the devices stay the
    same. ``tick`` runs with every round: the link's pump, which notices a publication
    the broker never acknowledged."""
    loop = asyncio.get_running_loop()
    due = loop.time()
    while True:
        round_ = list(devices())
        groups = max(1, -(-len(round_) // HEARTBEAT_GROUP))
        for n in range(groups):
            group = round_[n * HEARTBEAT_GROUP:(n + 1) * HEARTBEAT_GROUP]
            if n:
                await asyncio.sleep(max(0.0, due + interval * n / groups - loop.time()))
                present = {id(d) for d in devices()}  # one removed meanwhile beats no more
                group = [d for d in group if id(d) in present]
            for device in group:
                conn.publish(f"{device.base(root)}/$heartbeat", HEARTBEAT_PAYLOAD, 0, False)
        tick()
        due += interval
        now = loop.time()
        if due < now:  # fell behind (a busy loop): skip beats rather than burst
            due = now + interval
        await asyncio.sleep(due - now)


class StartOutcome:
    def __init__(self, loop: asyncio.AbstractEventLoop,
                 clock: Callable[[], float] | None = None) -> None:
        self.first: asyncio.Future[CloudResult] = loop.create_future()
        self.definite: asyncio.Future[CloudResult] = loop.create_future()
        self.closed: asyncio.Future[CloudResult] = loop.create_future()  # settled closed
        self.last: CloudResult | None = None
        self._clock = clock or loop.time
        self._closed_since: float | None = None  # the first of an unbroken run of them
        self._closed_tries = 0

    def record(self, result: CloudResult) -> None:
        self.last = result
        if not self.first.done():
            self.first.set_result(result)
        definite = result.outcome in (CloudOutcome.CONNECTED, CloudOutcome.REFUSED)
        if result.port_closed:
            now = self._clock()
            if self._closed_since is None:
                self._closed_since = now
            self._closed_tries += 1
            if (self._closed_tries >= CLOSED_TRIES and now - self._closed_since >= CLOSED_SETTLE
                    and not self.closed.done()):
                self.closed.set_result(result)
        else:
            self._closed_since, self._closed_tries = None, 0
        if definite and not self.definite.done():
            self.definite.set_result(result)

    def stopped(self) -> None:
        """The link stopped before an answer: whoever waits gets TIMEOUT now."""
        for fut in (self.first, self.definite, self.closed):
            if not fut.done():
                fut.set_result(CloudResult(CloudOutcome.TIMEOUT,
                                           "the cloud link was stopped before an answer"))

    async def wait(self, timeout: float, *, first_only: bool, broker: str,
                   closed_is_answer: bool = False) -> CloudResult:
        """The first outcome, or with ``first_only=False`` the definite one: transient
        failures (DNS, TCP, TLS) are not final, it waits for CONNECTED or REFUSED (with
        ``closed_is_answer`` also a port that stays closed) and, if time runs out, returns
        the latest failure; TIMEOUT if nothing came at all."""
        futs = ([self.first] if first_only else
                [self.definite, self.closed] if closed_is_answer else [self.definite])
        done, _ = await asyncio.wait(futs, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for fut in futs:  # the definite outcome first, should both have come
            if fut in done:
                return fut.result()
        if not first_only and self.last is not None:
            return self.last
        return CloudResult(CloudOutcome.TIMEOUT,
                           f"no answer from the broker at {broker} within {timeout:g} s: "
                           "check the host, port and the hub's network")
