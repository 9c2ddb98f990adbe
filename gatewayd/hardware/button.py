"""The hub's button: short and long presses from a GPIO line or ``gatewayctl button``.

Released before ``long_press_seconds`` is a short press (opens the BLE commissioning
window); held that long is a long press (factory reset), fired while still held so the
person holding it sees the LED react.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from gatewayd.config import ButtonConfig
from gatewayd.hardware.lines import (
    HardwareError,
    InputLine,
    LineBackend,
    default_bias,
)

log = logging.getLogger(__name__)

PressHook = Callable[[], Awaitable[Any]]
PRESS_KINDS = ("short", "long")


class Button:
    """Short and long presses of the hub's button, from a GPIO line or :meth:`press`."""

    def __init__(self, cfg: ButtonConfig, backend: LineBackend, *,
                 on_short_press: PressHook | None, on_long_press: PressHook | None) -> None:
        self.cfg = cfg
        self.backend = backend
        self.hooks: dict[str, PressHook | None] = {"short": on_short_press,
                                                   "long": on_long_press}
        self.error: str | None = None
        self.counts = dict.fromkeys(PRESS_KINDS, 0)
        self.last: dict[str, Any] | None = None
        self._line: InputLine | None = None
        self._long_timer: asyncio.TimerHandle | None = None
        self._lock = asyncio.Lock()  # one action at a time: a reset is never interrupted
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def pressed(self) -> bool:
        return self._line is not None and self._line.value

    async def start(self) -> None:
        if not self.cfg.enabled:
            return
        try:
            self._line = self.backend.input(
                self.cfg.chip, self.cfg.line, on_change=self._changed,
                active_low=self.cfg.active_low, bias=default_bias(self.cfg.active_low),
                debounce_ms=self.cfg.debounce_ms)
        except HardwareError as exc:
            # The hub works without its button (gatewayctl still can press it).
            self.error = str(exc)
            log.error("button: %s; only 'gatewayctl button' works", exc)

    async def stop(self) -> None:
        if self._long_timer is not None:
            self._long_timer.cancel()
            self._long_timer = None
        if self._line is not None:
            self._line.close()
            self._line = None
        for task in list(self._tasks):
            task.cancel()

    def _changed(self, pressed: bool) -> None:
        loop = asyncio.get_running_loop()
        if pressed:
            self._long_timer = loop.call_later(self.cfg.long_press_seconds, self._held)
        elif self._long_timer is not None:
            self._long_timer.cancel()
            self._long_timer = None
            self._fire("short")
        # A release after a long press did its work already.

    def _held(self) -> None:
        self._long_timer = None
        self._fire("long")

    def _fire(self, kind: str) -> None:
        log.info("button: %s press", kind)

        async def run() -> None:
            # press() logs a failure; a physical press has nobody to answer to.
            with contextlib.suppress(Exception):
                await self.press(kind)

        task = asyncio.get_running_loop().create_task(run(), name=f"button-{kind}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def press(self, kind: str) -> Any:
        """Run the action of a ``short`` or ``long`` press; returns what the hook returned."""
        if kind not in PRESS_KINDS:
            raise ValueError(f"press must be one of {', '.join(PRESS_KINDS)}, got {kind!r}")
        hook = self.hooks[kind]
        self.counts[kind] += 1
        loop = asyncio.get_running_loop()
        self.last = {"press": kind, "at": round(loop.time(), 3), "ok": None}
        if hook is None:
            log.warning("button: nothing is wired to a %s press", kind)
            self.last["ok"] = False
            return None
        async with self._lock:
            try:
                result = await hook()
            except Exception:
                self.last["ok"] = False
                # Shown by `gatewayctl status` and the panel: the exception is for the log.
                self.last["error"] = "the action failed; see the hub's log"
                log.exception("button: the %s-press action failed", kind)
                raise
        self.last["ok"] = True
        return result

    def status(self) -> dict[str, Any]:
        line_error = self._line.error if self._line is not None else None
        return {"enabled": self.cfg.enabled, "line": f"{self.cfg.chip}:{self.cfg.line}",
                "error": self.error or line_error, "pressed": self.pressed,
                "long_press_seconds": self.cfg.long_press_seconds, "presses": dict(self.counts),
                "last": self.last}
