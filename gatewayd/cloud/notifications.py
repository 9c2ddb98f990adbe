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


@dataclass
class _Budget:
    tokens: float
    stamp: float
    held: int = 0


class Notifications:
    """Rate-limited notifications through a publisher (the cloud link)."""

    def __init__(self, publisher: Publisher, *, clock: Callable[[], float] = time.monotonic,
                 burst: int = BURST, interval: float = INTERVAL) -> None:
        self.publisher = publisher
        self.clock = clock
        self.burst = burst
        self.interval = interval
        self.sent = 0
        self.held = 0
        self._budgets: OrderedDict[tuple[str, str], _Budget] = OrderedDict()

    def send(self, kind: str, sender: str, message: str) -> bool:
        """Notify about ``sender`` (a device id); False if the budget held it back."""
        if kind not in LEVELS:
            raise ValueError(f"unknown notification kind {kind!r}")
        budget = self._budget((sender, kind))
        if budget.tokens < 1.0:
            budget.held += 1
            self.held += 1
            return False
        budget.tokens -= 1.0
        if budget.held:
            message += f" ({budget.held} similar notification(s) held back)"
            budget.held = 0
        try:
            self.publisher.publish(TOPIC, body(message, sender, LEVELS[kind]))
        except (RuntimeError, ValueError) as exc:  # not started yet: no root topic
            log.info("notification %s for %s not sent: %s", kind, sender, exc)
            return False
        self.sent += 1
        return True

    def _budget(self, key: tuple[str, str]) -> _Budget:
        now = self.clock()
        budget = self._budgets.get(key)
        if budget is None:
            budget = self._budgets[key] = _Budget(float(self.burst), now)
            while len(self._budgets) > MAX_TRACKED:
                self._budgets.popitem(last=False)
        else:
            self._budgets.move_to_end(key)
            budget.tokens = min(float(self.burst),
                                budget.tokens + (now - budget.stamp) / self.interval)
            budget.stamp = now
        return budget

    def status(self) -> dict[str, int]:
        return {"sent": self.sent, "held_back": self.held}
