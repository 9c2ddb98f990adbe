"""The status LED: one named pattern at a time; identify and other flashes overlay it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import Any

from gatewayd.config import LedConfig
from gatewayd.hardware.lines import (
    HardwareError,
    LineBackend,
    OutputLine,
)

log = logging.getLogger(__name__)

Step = tuple[bool, float | None]  # (lit, seconds); None holds until the pattern changes
# Each pattern differs in rhythm, not only in speed, so a person can tell them apart.
PATTERNS: dict[str, tuple[Step, ...]] = {
    "off": ((False, None),),
    "pairing": ((True, 0.5), (False, 0.5)),  # slow blink: waiting for you
    "connecting": ((True, 0.1), (False, 0.15)),  # fast blink: working on it
    "online": ((True, None),),  # steady on
    "offline": ((True, 0.1), (False, 1.9)),  # a short blip every 2 s
    "error": ((True, 0.15), (False, 0.15), (True, 0.15), (False, 1.55)),  # double blink
    "identify": ((True, 0.1), (False, 0.1)) * 3 + ((False, 0.6),),  # triple blink
    "reset": ((True, 0.04), (False, 0.04)),  # flicker: the long press was taken
    "press": ((True, 0.6), (False, 0.2)),  # long blinks: the short press was taken
}
IDENTIFY_SECONDS = 10.0
ERROR_SECONDS = 5.0
RESET_SECONDS = 3.0
PRESS_SECONDS = 1.0  # after the short press's action is done (shown while it runs too)
# Onboarding states (gatewayd.onboarding.machine.State values) and the pattern each one shows.
ONBOARDING_PATTERNS = {"unpaired": "pairing", "connecting": "connecting", "online": "online",
                       "offline": "offline"}


class Led:
    """Shows one pattern; :meth:`flash` overlays another for a while (identify, errors)."""

    def __init__(self, cfg: LedConfig, backend: LineBackend, *, time_scale: float = 1.0) -> None:
        self.cfg = cfg
        self.backend = backend
        self.time_scale = time_scale  # < 1 in tests: the same rhythm, faster
        self.base = "off"
        self.overlay: str | None = None
        self.error: str | None = None
        self._overlay_timer: asyncio.TimerHandle | None = None
        self._line: OutputLine | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._write_failed = False

    @property
    def pattern(self) -> str:
        return self.overlay or self.base

    async def start(self) -> None:
        if self.cfg.enabled:
            try:
                self._line = self.backend.output(self.cfg.chip, self.cfg.line,
                                                 active_low=self.cfg.active_low)
            except HardwareError as exc:
                self.error = str(exc)
                log.error("status LED: %s", exc)
        if self._line is not None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="led")

    async def stop(self) -> None:
        if self._overlay_timer is not None:
            self._overlay_timer.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._line is not None:
            self._write(False)
            self._line.close()
            self._line = None

    def set_pattern(self, name: str) -> None:
        """The base pattern: what the LED shows when no flash is running."""
        _check_pattern(name)
        if name != self.base:
            log.debug("status LED: %s", name)
            self.base = name
            self._changed.set()

    def flash(self, name: str, seconds: float | None) -> None:
        """Show ``name`` for ``seconds`` (None: until the next flash), then the base pattern
        again (a newer flash wins)."""
        _check_pattern(name)
        if self._overlay_timer is not None:
            self._overlay_timer.cancel()
            self._overlay_timer = None
        if seconds is not None:
            self._overlay_timer = asyncio.get_running_loop().call_later(seconds,
                                                                        self._end_flash)
        if name != self.overlay:
            self.overlay = name
            self._changed.set()

    def _end_flash(self) -> None:
        self._overlay_timer = None
        self.overlay = None
        self._changed.set()

    def _write(self, lit: bool) -> None:
        if self._line is None:
            return
        try:
            self._line.set(lit)
        except HardwareError as exc:
            if not self._write_failed:  # once: a broken LED must not flood the journal
                log.error("status LED: %s", exc)
            self._write_failed = True
            self.error = str(exc)  # `gatewayctl status` shows it while writes fail
            return
        self.error = None

    async def _run(self) -> None:
        while True:
            self._changed.clear()
            for lit, seconds in itertools.cycle(PATTERNS[self.pattern]):
                self._write(lit)
                if seconds is None:
                    await self._changed.wait()
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), seconds * self.time_scale)
                if self._changed.is_set():
                    break

    def status(self) -> dict[str, Any]:
        return {"enabled": self.cfg.enabled, "line": f"{self.cfg.chip}:{self.cfg.line}",
                "error": self.error, "pattern": self.pattern, "base": self.base,
                "overlay": self.overlay}


def _check_pattern(name: str) -> None:
    if name not in PATTERNS:
        raise ValueError(f"unknown LED pattern {name!r} (known: {', '.join(PATTERNS)})")
