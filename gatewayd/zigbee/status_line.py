"""The Zigbee part of the hub's one-line status: what ``systemctl status gatewayd`` shows
(systemd's ``STATUS=``) and ``gatewayctl status`` gives as ``status_text``.

It reads ``zigbee: starting``, ``zigbee: down: <why>``, ``zigbee: up, no devices`` or
``zigbee: up, 12 devices (9 ready, 2 sleeping, 1 disconnected)``: the radio as the hub's
``zigbee/status`` property says, and how many children are in each ``$state``, so that a
vendor's support can read a hub's Zigbee network from its journal and tools, and a
supervisor can wait for every device without asking the control socket (which would load
its web app).

A change is sent once per turn of the event loop, however many children changed in it:
200 restored devices are one line, not 200 counts of 200.

Standard library only: nothing here imports zigpy.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

# $state values (docs/interfaces.md §8.4) in the order the line gives them: working, then
# not yet, then not working. Any other comes last, by name.
STATES = ("ready", "sleeping", "init", "disconnected", "alert", "lost")


def describe(radio: str, states: Iterable[str]) -> str:
    """The line for a radio whose ``zigbee/status`` is ``radio`` (``ready``,
    ``down: <why>``, or ``starting`` before the first try) and children in ``states``."""
    if radio != "ready":
        return f"zigbee: {radio}"
    counts = Counter(states)
    total = sum(counts.values())
    if not total:
        return "zigbee: up, no devices"
    order = {state: n for n, state in enumerate(STATES)}
    parts = [f"{counts[state]} {state}"
             for state in sorted(counts, key=lambda s: (order.get(s, len(STATES)), s))]
    return f"zigbee: up, {total} device{'s' if total != 1 else ''} ({', '.join(parts)})"


class HasState(Protocol):
    @property
    def state(self) -> str: ...


class StatusLine:
    """Keeps the bridge's line current: told of every ``zigbee/status`` and child count the
    bridge publishes (:meth:`hub_value`) and of every child ``$state`` (:meth:`changed`).
    ``send`` None: nobody reads it (no line is made)."""

    def __init__(self, send: Callable[[str], None] | None,
                 children: Mapping[str, HasState]) -> None:
        self._send = send
        self._children = children
        self.radio = "starting"
        self._pending = False

    def hub_value(self, prop: str, value: object) -> None:
        if prop == "status":
            self.radio = str(value)
        if prop in ("status", "device-count"):
            self.changed()

    def changed(self) -> None:
        if self._send is None or self._pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # driven without a loop (a test): nothing to coalesce with
            self.send()
            return
        self._pending = True
        loop.call_soon(self.send)

    def send(self) -> None:
        self._pending = False
        if self._send is not None:
            self._send(describe(self.radio, (c.state for c in self._children.values())))
