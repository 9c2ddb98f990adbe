"""The hardware component the daemon runs: the button and the status LED on one line backend.

It follows onboarding and the cloud link (the LED shows the hub's state), turns presses into
the hub's actions, and reports both in ``gatewayctl status``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING, Any

from gatewayd.config import ButtonConfig, LedConfig
from gatewayd.hardware.button import Button, PressHook
from gatewayd.hardware.led import (
    ERROR_SECONDS,
    IDENTIFY_SECONDS,
    ONBOARDING_PATTERNS,
    PRESS_SECONDS,
    RESET_SECONDS,
    Led,
)
from gatewayd.hardware.lines import (
    LineBackend,
)

if TYPE_CHECKING:
    from gatewayd.onboarding.progress import Progress

log = logging.getLogger(__name__)


class Hardware:
    """The daemon component for the button and the LED (``start``/``stop``).

    ``on_short_press`` opens the BLE commissioning window (and authorizes Improv);
    ``on_long_press`` is the factory reset, normally ``hub.reset``.
    """

    name = "hardware"

    def __init__(self, button: ButtonConfig, led: LedConfig, backend: LineBackend, *,
                 on_short_press: PressHook | None, on_long_press: PressHook | None,
                 led_time_scale: float = 1.0) -> None:
        self.backend = backend
        self.led = Led(led, backend, time_scale=led_time_scale)
        self._on_short = on_short_press
        self._on_long = on_long_press
        self.button = Button(button, backend,
                             on_short_press=self._short_press if on_short_press else None,
                             on_long_press=self._long_press if on_long_press else None)
        self._signals: list[int] = []
        self._state: str | None = None  # the onboarding state, and its progress
        self._progress: Progress | None = None
        self._cloud_reachable = True

    async def _short_press(self) -> Any:
        assert self._on_short is not None
        # Taken: shown at once, while the action runs (the hotspot may take seconds) and
        # PRESS_SECONDS after it, then the hub's state (pairing, if the press opened it).
        self.led.flash("press", None)
        try:
            return await self._on_short()
        finally:
            if self.led.overlay == "press":  # not if identify or a reset came meanwhile
                self.led.flash("press", PRESS_SECONDS)

    async def _long_press(self) -> Any:
        assert self._on_long is not None
        self.led.flash("reset", RESET_SECONDS)  # tells the person holding it: let go, done
        return await self._on_long()

    async def start(self) -> None:
        await self.led.start()
        await self.button.start()

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.remove_signal_handler(sig)
        self._signals.clear()
        await self.button.stop()
        await self.led.stop()

    async def press(self, kind: str) -> Any:
        """``gatewayctl button short|long``: the same action as the physical button."""
        return await self.button.press(kind)

    async def identify(self, seconds: float = IDENTIFY_SECONDS) -> dict[str, Any]:
        """``gatewayctl identify``: the LED blinks its identify pattern for ``seconds``."""
        if not 0 < seconds <= 3600:
            raise ValueError("seconds must be above 0 and at most 3600")
        self.led.flash("identify", seconds)
        return {"identify": True, "seconds": seconds, "led": self.led.cfg.enabled}

    def onboarding_changed(self, state: str, progress: Progress) -> None:
        """An :meth:`Onboarding.subscribe` listener: the LED follows the hub's phase.

        A failed pairing attempt (back to unpaired with a failure) flashes ``error`` first.
        """
        self._state, self._progress = str(state), progress
        if state == "unpaired" and progress.last_failure is not None:
            self.led.flash("error", ERROR_SECONDS)
        self._show()

    def cloud_changed(self, reachable: bool) -> None:
        """A :class:`~gatewayd.cloud.presence.CloudPresence` listener: an ``online`` hub
        whose cloud link has been down for its grace shows ``offline`` until it is back."""
        self._cloud_reachable = reachable
        self._show()

    def _show(self) -> None:
        pattern = ONBOARDING_PATTERNS.get(self._state or "")
        if pattern is None:
            return
        if pattern == "online" and not self._cloud_reachable:
            pattern = "offline"
        elif pattern == "offline" and self._progress is not None and \
                self._progress.pairing_open:
            pattern = "pairing"  # on its hotspot: no account, or a paired hub's window
        self.led.set_pattern(pattern)

    def add_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        """Simulator only: SIGUSR1 is a short press, SIGUSR2 a long one."""
        for sig, kind in ((signal.SIGUSR1, "short"), (signal.SIGUSR2, "long")):
            loop.add_signal_handler(sig, self.button._fire, kind)
            self._signals.append(sig)

    def status(self) -> dict[str, Any]:
        return {"button": self.button.status(), "led": self.led.status()}
