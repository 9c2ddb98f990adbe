"""GPIO lines behind one Protocol: what the button, the LED and virtual gpio devices use.

A :class:`LineBackend` hands out output lines and *debounced* input lines. Two backends
implement it: :mod:`gatewayd.hardware.libgpiod` (real lines, libgpiod v2) and
:mod:`gatewayd.hardware.simulated` (in memory, for ``gatewayd --simulate``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

BIASES = ("as-is", "pull-up", "pull-down", "disabled")


class HardwareError(Exception):
    """A GPIO line that cannot be used (no chip, line busy, no gpiod); says which and why."""


class OutputLine(Protocol):
    value: bool

    def set(self, active: bool) -> None: ...

    def close(self) -> None: ...


class InputLine(Protocol):
    @property
    def value(self) -> bool: ...

    # Why the line does not work right now (a failing read; it is being requested again).
    error: str | None

    def close(self) -> None: ...


ChangeHandler = Callable[[bool], None]


class LineBackend(Protocol):
    """Hands out GPIO lines. Values are *logical*: ``active_low`` is applied below."""

    def output(self, chip: str, line: int, *, active_low: bool = False,
               initial: bool = False) -> OutputLine: ...

    def input(self, chip: str, line: int, *, on_change: ChangeHandler, active_low: bool = False,
              bias: str = "as-is", debounce_ms: int = 0) -> InputLine: ...


def default_bias(active_low: bool) -> str:
    """A button to ground (active low) needs a pull-up; one to 3V3 a pull-down."""
    return "pull-up" if active_low else "pull-down"


class Debouncer:
    """Reports a level once it stayed unchanged for ``seconds`` after the last edge.

    Contacts bounce for a few milliseconds; every edge restarts the quiet period and the line
    is read only when it is over, so a burst of edges becomes at most one change.
    """

    def __init__(self, read: Callable[[], bool], on_change: ChangeHandler, seconds: float,
                 name: str) -> None:
        self._read = read
        self._on_change = on_change
        self._seconds = seconds
        self._name = name
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self.value = read()

    def edge(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(self._seconds, self._settle)

    def _settle(self) -> None:
        self._timer = None
        try:
            value = self._read()
        except (OSError, HardwareError) as exc:
            log.warning("gpio %s: cannot read the line: %s", self._name, exc)
            return
        if value == self.value:
            return  # a pulse shorter than the debounce time: bounce, not a change
        self.value = value
        try:
            self._on_change(value)
        except Exception:
            log.exception("gpio %s: change handler failed", self._name)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
