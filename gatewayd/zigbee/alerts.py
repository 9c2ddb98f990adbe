"""What the Zigbee bridge tells the user: joins, leaves, failed interviews, the radio, batteries.

The bridge reports events here; :attr:`Alerts.notify` is wired by the daemon to the rate-limited
notifications (:class:`gatewayd.cloud.notifications.Notifications`): kind, sender device id,
message. Edge-triggered: a radio loss is told once until it is back, a low battery once per
fall below the threshold.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gatewayd.zigbee.child import Child

log = logging.getLogger(__name__)

BATTERY = ("$telemetry", "battery")
BATTERY_LOW = 10  # percent
BATTERY_OK = BATTERY_LOW + 5  # hysteresis: a value wobbling at 9-10 % is one fall

Notify = Callable[[str, str, str], object]
MAX_REFUSED = 1024  # properties whose refused values were said; then the log says no more


class Alerts:
    def __init__(self, hub_id: Callable[[], str]) -> None:
        self.hub_id = hub_id
        self.notify: Notify = lambda kind, sender, message: None
        self._radio_lost = False
        self._battery_low: set[str] = set()
        self._refused: set[tuple[str, ...]] = set()

    def joined(self, child: Child) -> None:
        self.notify("child-joined", child.device_id, f"Zigbee device {child.ieee} joined")

    def left(self, child: Child) -> None:
        self.notify("child-left", child.device_id, f"{child.name} left the network")

    def interview_failed(self, child: Child) -> None:
        self.notify("interview-failed", child.device_id,
                    f"{child.name} joined but could not be set up; it is tried again when "
                    "the device wakes up")

    def radio_lost(self) -> None:
        if not self._radio_lost:
            self._radio_lost = True
            self.notify("radio-lost", self.hub_id(),
                        "The Zigbee radio was lost; the hub keeps trying to bring it back")

    def radio_up(self) -> None:
        if self._radio_lost:
            self._radio_lost = False
            self.notify("radio-recovered", self.hub_id(), "The Zigbee radio is back")

    def value(self, child: Child, path: tuple[str, str], value: Any) -> None:
        if path != BATTERY or not isinstance(value, int):
            return
        if value < BATTERY_LOW and child.device_id not in self._battery_low:
            self._battery_low.add(child.device_id)
            self.notify("battery-low", child.device_id, f"{child.name}: battery at {value} %")
        elif value >= BATTERY_OK:
            self._battery_low.discard(child.device_id)

    def not_published(self, key: tuple[str, ...], value: Any, exc: Exception) -> None:
        """A value the property's own ``$format`` does not allow (a humidity sensor's 100.5 %)
        is not published, as Zigbee2MQTT does not publish it: said once per property, for a
        sensor that overshoots does so at every report. A KeyError is a device removed while
        its value was coalescing: nothing to tell."""
        if (isinstance(exc, KeyError) or key in self._refused
                or len(self._refused) >= MAX_REFUSED):
            log.debug("zigbee: %s = %r not published: %s", "/".join(key), value, exc)
            return
        self._refused.add(key)
        log.warning("zigbee: %s: %s; not published (its later values outside it are logged "
                    "at debug level)", "/".join(key), exc)
