"""How fast a virtual device may publish (:class:`Outlet`, one per device).

Every value a plugin publishes becomes an MQTT message to the cloud broker, over what may
be a metered or slow link; nothing else limits a plugin that publishes in a loop. So each
device has a budget, a token bucket of :data:`RATE` values a second with bursts of
:data:`BURST`:

* a retained value over the budget is *held*: the model takes it at once (``value()``,
  and a reconnection's republication, carry it), and the property's latest value goes out
  when the budget allows, so the cloud never ends on a stale value however many were
  skipped; while values are held, new ones queue behind them;
* an event (a non-retained property) over the budget is dropped and counted;
* while that lasts the device has a fault, ``publishing faster than 50 values/s (...)``
  (``$state = alert``, ``gatewayctl devices``), logged once when it starts and once when it
  ends (within the host's :class:`LogBudget`); it ends :data:`CALM` s after the last value
  over the budget.

docs/virtual-devices.md ("Limits") says why the numbers are what they are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from gatewayd import homie
from gatewayd.runtime.logsetup import LogBudget

RATE = 50.0  # values a second a device may publish, sustained
BURST = 256  # values at once: a whole node's worth of properties (checks.MAX_NODE_PROPERTIES)
CALM = 5.0  # seconds without a value over the budget that end an episode

FAULT = "budget"  # the key of its fault in the device's faults (Hosted.faults)

Later = Callable[[float, Callable[[], None]], Any]  # the loop's call_later


class Outlet:
    """One device's publish path: the property, its value, then the budget.

    While an episode lasts, its fault is ``faults[FAULT]`` (its counts kept current);
    ``changed`` is called when it starts and ends (the device's ``$state``).
    """

    def __init__(self, device: homie.Device, publisher: homie.ChildPublisher, *,
                 log: logging.Logger, say: LogBudget, faults: dict[str, str],
                 changed: Callable[[], None], clock: Callable[[], float],
                 later: Later) -> None:
        self._device, self._publisher = device, publisher
        self._log, self._say, self._faults, self._changed = log, say, faults, changed
        self._clock, self._later = clock, later
        self._tokens = float(BURST)
        self._last = clock()
        self._held: dict[str, tuple[str, str]] = {}  # path: (node, property), oldest first
        self._timer: Any = None
        self._closed = False
        self._over_at: float | None = None  # the last value over the budget; None: no episode
        self._logged = False  # this episode's start was logged
        self.held = self.dropped = 0  # this episode's

    def publish(self, node_id: str, property_id: str, value: Any, *, force: bool) -> bool:
        device = self._device
        path = f"{node_id}/{property_id}"
        try:
            prop = device.find(path)
        except KeyError:
            raise KeyError(f"{device.id} has no property {path}") from None
        canonical = prop.validate(value)
        if prop.retained and not force and prop.value == canonical:
            return False
        self._refill()
        if not self._held and self._tokens >= 1:
            self._tokens -= 1
            self._publisher.set_value(device.id, node_id, property_id, canonical)
            return True
        if prop.retained:
            prop.set(canonical)  # the latest: what goes out when the budget allows
            self._held.setdefault(path, (node_id, property_id))
            self.held += 1
        else:
            self.dropped += 1
        self._over()
        return prop.retained

    def close(self) -> None:
        """The device stops: what is held goes out now (at most one value a property)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._held:
            self._send_oldest()

    def fault(self) -> str:
        return (f"publishing faster than {RATE:g} values/s (bursts of {BURST}): "
                f"{self.dropped} events dropped, {self.held} values held back (their latest "
                f"sent as the budget allows)")

    # ---- the bucket -----------------------------------------------------------------------

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(float(BURST), self._tokens + (now - self._last) * RATE)
        self._last = now

    def _over(self) -> None:
        starts = self._over_at is None
        self._over_at = self._clock()
        if starts:
            self._logged = self._say.allow()
            if self._logged:
                self._log.warning("%s: publishes faster than %g values/s (bursts of %d): the "
                                  "latest values go out as the budget allows, events beyond "
                                  "it are dropped", self._device.id, RATE, BURST)
        self._faults[FAULT] = self.fault()
        if starts:
            self._changed()
        self._schedule()

    def _schedule(self) -> None:
        if self._timer is not None or self._closed:
            return
        if self._held:
            delay = (1 - self._tokens) / RATE
        else:
            assert self._over_at is not None
            delay = self._over_at + CALM - self._clock()
        self._timer = self._later(max(delay, 0.001), self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._closed:
            return
        self._refill()
        while self._held and self._tokens >= 1:
            self._tokens -= 1
            self._send_oldest()
        if self._over_at is None:
            return
        if self._held or self._clock() < self._over_at + CALM:
            self._schedule()
            return
        if self._logged:
            self._log.info("%s: publishes within its budget again; %d events were dropped, "
                           "%d values held back", self._device.id, self.dropped, self.held)
        self._over_at, self.held, self.dropped = None, 0, 0
        self._faults.pop(FAULT, None)
        self._changed()

    def _send_oldest(self) -> None:
        path, (node_id, property_id) = next(iter(self._held.items()))
        del self._held[path]
        try:
            value = self._device.find(path).value
            self._publisher.set_value(self._device.id, node_id, property_id, value)
        except Exception:  # the link's fault, not the plugin's: the others still go out
            self._log.exception("publishing %s of %s failed", path, self._device.id)
