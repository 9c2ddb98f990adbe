"""``timer``: a countdown on the hub that scenarios can start, stop and react to.

Node ``timer``:

* ``duration`` (float s, settable): the countdown length; a change applies from the next start;
* ``repeat`` (boolean, settable): start over after each expiry (a periodic trigger);
* ``running`` (boolean, settable): ``true`` starts (or restarts) the countdown, ``false``
  cancels it; it turns ``false`` by itself when a non-repeating countdown expires;
* ``remaining`` (float s): updated every ``update_interval`` while running;
* ``fired`` (string, not retained): an event with the UTC time, each time the countdown expires.

Everything is local: the countdown runs on the hub, online or not. A restart of the daemon
cancels a running countdown (``running`` starts ``false`` unless ``autostart``); a
``duration`` or ``repeat`` set from the app is kept (:mod:`gatewayd.virtual.kept`).
"""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass
from typing import Any

from gatewayd import homie
from gatewayd.config import spec
from gatewayd.virtual.plugin import VirtualDevice

NODE = "timer"
MAX_DURATION = 7 * 86400.0


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


@dataclass(frozen=True)
class TimerOptions:
    duration: float = spec(60.0, min=0.1, max=MAX_DURATION, doc="countdown length, seconds")
    repeat: bool = spec(False, doc="start over after each expiry")
    autostart: bool = spec(False, doc="start counting when the daemon starts")
    update_interval: float = spec(5.0, min=0.1, max=3600,
                                  doc="seconds between 'remaining' updates")


class TimerDevice(VirtualDevice):
    Options = TimerOptions
    kept_values = (f"{NODE}/duration", f"{NODE}/repeat")

    def __init__(self, ctx: Any, options: TimerOptions) -> None:
        super().__init__(ctx, options)
        self._countdown: asyncio.Task[Any] | None = None
        self.fired = 0

    def nodes(self) -> list[homie.Node]:
        o = self.options
        return [homie.Node(NODE, self.name, properties=[
            homie.Property("duration", "Duration", datatype="float", unit="s", settable=True,
                           format=f"0.1:{MAX_DURATION:.0f}", value=o.duration),
            homie.Property("repeat", "Repeat", datatype="boolean", settable=True,
                           value=o.repeat),
            homie.Property("running", "Running", datatype="boolean", settable=True,
                           value=False),
            homie.Property("remaining", "Remaining", datatype="float", unit="s", value=0.0),
            homie.Property("fired", "Fired", retained=False),
        ])]

    async def start(self) -> None:
        if self.options.autostart:
            self._begin()
            self.publish(NODE, "running", True)

    async def on_set(self, node_id: str, property_id: str, value: Any) -> Any:
        if property_id == "running":
            if value:
                self._begin()
            else:
                self._cancel()
                self.publish(NODE, "remaining", 0.0)
        return None  # accepted as is: the link echoes it (duration/repeat take effect then)

    async def stop(self) -> None:
        self._cancel()

    def _begin(self) -> None:
        self._cancel()
        self._countdown = self.spawn(self._run(), f"{self.device_id}-countdown")

    def _cancel(self) -> None:
        if self._countdown is not None:
            self._countdown.cancel()
            self._countdown = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.value(NODE, "duration")
        while True:
            while (left := deadline - loop.time()) > 0:
                self.publish(NODE, "remaining", round(left, 1))
                await asyncio.sleep(min(self.options.update_interval, left))
            self.fired += 1
            self.publish(NODE, "remaining", 0.0)
            self.publish(NODE, "fired", utc_now(), force=True)
            if not self.value(NODE, "repeat"):
                break
            # The next period counts from the last deadline, so a repeating timer keeps its
            # rhythm; if the loop fell far behind, it counts from now instead.
            duration = self.value(NODE, "duration")
            deadline += duration
            if deadline < loop.time():
                deadline = loop.time() + duration
        self._countdown = None
        self.publish(NODE, "running", False)
