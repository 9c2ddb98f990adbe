"""Notifications: what a user wants to be told, on ``<root>/notifications/create``.

Each is a 2Smart notification (``message``, ``logLevel``, ``senderType``, ``type``,
``senderId``), published QoS 1, not retained, through the link's bounded outbox (so one
raised while offline goes out after the reconnect). The kinds (docs/cloud.md lists them):

=====================  ========  ==========================================================
kind                   level     when
=====================  ========  ==========================================================
``child-joined``       info      a Zigbee device joined the network
``child-left``         warning   a Zigbee device left (or was removed)
``interview-failed``   warning   a joined Zigbee device could not be interviewed
``radio-lost``         error     the Zigbee radio went away
``radio-recovered``    info      the Zigbee radio is back after a loss
``battery-low``        warning   a child's battery went below 10 %
``plugin-failing``     error     a virtual device's plugin failed several times in a row
``hotspot-fallback``   warning   the hub lost its network and opened its hotspot
=====================  ========  ==========================================================

**Budget.** Per sender and kind, the first ``BURST`` notifications go out at once, then at
most one every ``INTERVAL`` seconds; the ones in between are counted, not sent, and the
next one that goes out says how many were held back. So a device flapping a hundred times
a minute costs its user ``BURST`` + 1 notifications that minute, not a hundred. The
tracked (sender, kind) pairs are bounded too (least recently used forgotten first).

**States.** The kinds in :data:`STATES` tell a state (the radio lost, the radio back): the
last one delivered is what the user believes. They share one budget per sender, and the
latest one held back is owed: it goes out as soon as the budget allows (at most
``INTERVAL`` later, on the loop), unless the last one delivered already says the same.
Budgeted apart, a flapping radio's last delivered notification could be "lost" while it
was back, or "back" while it was lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

BURST = 3
INTERVAL = 60.0
MAX_TRACKED = 1024
TOPIC = "notifications/create"

# State kinds and the budget they share (see "States" above).
STATES = {"radio-lost": "radio", "radio-recovered": "radio"}

LEVELS = {"child-joined": "info", "child-left": "warning", "interview-failed": "warning",
          "radio-lost": "error", "radio-recovered": "info", "battery-low": "warning",
          "plugin-failing": "error", "hotspot-fallback": "warning"}


ACK_WAIT = 5.0  # notify() waits this long for the broker's PUBACK


class Publisher(Protocol):
    @property
    def connected(self) -> bool: ...

    @property
    def hub(self) -> Any: ...

    def publish(self, topic: str, payload: str, *, retain: bool = False,
                done: asyncio.Future[bool] | None = None) -> None: ...


def body(message: str, sender: str, level: str = "info", **extra: Any) -> str:
    """A notification in the 2Smart format."""
    return json.dumps({"message": message, "logLevel": level, "senderType": "device",
                       "type": "text", "senderId": sender, **extra})


async def notify(link: Publisher, message: str, *, level: str = "info",
                 sender: str | None = None) -> bool:
    """Send one notification now, without a budget (``sender`` defaults to the hub).

    True once the broker acknowledged it; False if it is still waiting (offline: it goes
    out after the reconnect) or was dropped from the full outbox.
    """
    done = asyncio.get_running_loop().create_future()
    link.publish(TOPIC, body(message, sender or link.hub.id, level), done=done)
    if not link.connected:
        return False
    try:
        return await asyncio.wait_for(asyncio.shield(done), ACK_WAIT)
    except TimeoutError:
        return False


class Timer(Protocol):
    def cancel(self) -> None: ...


Later = Callable[[float, Callable[[], None]], Timer]


def _call_later(delay: float, callback: Callable[[], None]) -> Timer:
    return asyncio.get_running_loop().call_later(delay, callback)


@dataclass
class _Budget:
    tokens: float
    stamp: float
    held: int = 0
    said: str | None = None  # the state kind last delivered
    owed: tuple[str, str] | None = None  # the latest state (kind, message) held back
    timer: Timer | None = None  # when the owed one can go out


class Notifications:
    """Rate-limited notifications through a publisher (the cloud link)."""

    def __init__(self, publisher: Publisher, *, clock: Callable[[], float] = time.monotonic,
                 burst: int = BURST, interval: float = INTERVAL,
                 later: Later = _call_later) -> None:
        self.publisher = publisher
        self.clock = clock
        self.later = later  # schedules an owed state's delivery (tests: by hand)
        self.burst = burst
        self.interval = interval
        self.sent = 0
        self.held = 0
        self._budgets: OrderedDict[tuple[str, str], _Budget] = OrderedDict()

    def send(self, kind: str, sender: str, message: str) -> bool:
        """Notify about ``sender`` (a device id); False if the budget held it back."""
        if kind not in LEVELS:
            raise ValueError(f"unknown notification kind {kind!r}")
        key = (sender, STATES.get(kind, kind))
        budget = self._budget(key)
        if budget.tokens < 1.0:
            budget.held += 1
            self.held += 1
            if kind in STATES:
                budget.owed = (kind, message)
                self._owe(key, budget)
            return False
        return self._deliver(key, budget, kind, message)

    def _deliver(self, key: tuple[str, str], budget: _Budget, kind: str, message: str) -> bool:
        budget.tokens -= 1.0
        if budget.held:
            message += f" ({budget.held} similar notification(s) held back)"
            budget.held = 0
        if kind in STATES:
            budget.owed = None
            if budget.timer is not None:
                budget.timer.cancel()
                budget.timer = None
        try:
            self.publisher.publish(TOPIC, body(message, key[0], LEVELS[kind]))
        except (RuntimeError, ValueError) as exc:  # not started yet: no root topic
            log.info("notification %s for %s not sent: %s", kind, key[0], exc)
            return False
        budget.said = kind if kind in STATES else budget.said
        self.sent += 1
        return True

    def _owe(self, key: tuple[str, str], budget: _Budget) -> None:
        if budget.timer is not None:
            return
        try:
            budget.timer = self.later((1.0 - budget.tokens) * self.interval,
                                      lambda: self._pay(key))
        except RuntimeError:  # no event loop: the next one of its kind says it
            log.debug("notification %s for %s owed, but no loop to send it later", *key[::-1])

    def _pay(self, key: tuple[str, str]) -> None:
        """The budget allows an owed state now: send it if it is news to the user."""
        budget = self._budgets.get(key)
        if budget is None:
            return
        budget.timer = None
        budget = self._budget(key)
        if budget.owed is None:
            return
        if budget.tokens < 1.0:  # the clock's rounding: a little later
            self._owe(key, budget)
            return
        (kind, message), budget.owed = budget.owed, None
        if kind == budget.said:
            return  # what the user was last told is the state again: the count waits
        budget.held -= 1  # this one goes out after all
        self.held -= 1
        self._deliver(key, budget, kind, message)

    def _budget(self, key: tuple[str, str]) -> _Budget:
        now = self.clock()
        budget = self._budgets.get(key)
        if budget is None:
            budget = self._budgets[key] = _Budget(float(self.burst), now)
            while len(self._budgets) > MAX_TRACKED:
                _, gone = self._budgets.popitem(last=False)
                if gone.timer is not None:
                    gone.timer.cancel()
        else:
            self._budgets.move_to_end(key)
            budget.tokens = min(float(self.burst),
                                budget.tokens + (now - budget.stamp) / self.interval)
            budget.stamp = now
        return budget

    def status(self) -> dict[str, int]:
        return {"sent": self.sent, "held_back": self.held}
