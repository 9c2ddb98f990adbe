"""The hub's own hardware: GPIO lines, the button and the status LED.

Three layers, all on the asyncio loop:

* **Lines.** A :class:`LineBackend` hands out output lines and *debounced* input lines.
  :class:`GpiodBackend` drives real ones through libgpiod v2's Python bindings; the ``gpiod``
  module is injectable, so tests run the very same code against a fake at the library
  boundary. :class:`SimulatedBackend` keeps lines in memory for ``gatewayd --simulate``.
  Virtual ``gpio`` devices (:mod:`gatewayd.virtual.gpio`) use the same backends.
* **Button** (:class:`Button`): released before ``long_press_seconds`` is a short press
  (opens the BLE commissioning window); held that long is a long press (factory reset),
  fired while still held so the person holding it sees the LED react. :meth:`Button.press`
  runs the same actions for ``gatewayctl button short|long``.
* **LED** (:class:`Led`): one named pattern at a time (:data:`PATTERNS`); ``identify`` and
  other flashes overlay the base pattern for a while.

:class:`Hardware` puts them together for the daemon.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from gatewayd.config import ButtonConfig, LedConfig

log = logging.getLogger(__name__)

CONSUMER = "gatewayd"
MAX_EVENTS = 64  # edge events read per wake-up; the rest wait in the kernel's buffer
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


# ---- libgpiod v2 ------------------------------------------------------------------------------

def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class _GpiodOutput:
    def __init__(self, gpiod: Any, request: Any, line: int, name: str, initial: bool) -> None:
        self._gpiod = gpiod
        self._request = request
        self._line = line
        self._name = name
        self.value = initial

    def set(self, active: bool) -> None:
        value = self._gpiod.line.Value.ACTIVE if active else self._gpiod.line.Value.INACTIVE
        try:
            self._request.set_value(self._line, value)
        except (OSError, ValueError) as exc:
            raise HardwareError(f"gpio {self._name}: cannot set the line: {_reason(exc)}") from None
        self.value = active

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._request.release()


class _GpiodInput:
    def __init__(self, gpiod: Any, request: Any, line: int, name: str,
                 on_change: ChangeHandler, debounce_ms: int) -> None:
        self._gpiod = gpiod
        self._request = request
        self._line = line
        self._name = name
        self._loop = asyncio.get_running_loop()
        self._fd: int = request.fd
        self._debouncer = Debouncer(self._read, on_change, debounce_ms / 1000, name)
        # The request's file descriptor becomes readable when the kernel queued edge events:
        # no thread, no polling.
        self._loop.add_reader(self._fd, self._readable)

    @property
    def value(self) -> bool:
        return self._debouncer.value

    def _read(self) -> bool:
        try:
            return bool(self._request.get_value(self._line) == self._gpiod.line.Value.ACTIVE)
        except (OSError, ValueError) as exc:
            raise HardwareError(_reason(exc)) from None

    def _readable(self) -> None:
        try:
            events = self._request.read_edge_events(MAX_EVENTS)
        except (OSError, ValueError) as exc:
            log.warning("gpio %s: reading edge events failed: %s", self._name, _reason(exc))
            return
        if events:
            self._debouncer.edge()

    def close(self) -> None:
        self._debouncer.close()
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._fd)
        with contextlib.suppress(Exception):
            self._request.release()


class GpiodBackend:
    """GPIO lines through libgpiod v2 (``gpiod`` >= 2). One line request per line.

    ``gpiod`` is the module to use; by default the installed one, imported on first use so a
    hub without GPIO configured never needs it.
    """

    def __init__(self, gpiod: Any = None, consumer: str = CONSUMER) -> None:
        self._gpiod = gpiod
        self.consumer = consumer

    def _module(self) -> Any:
        if self._gpiod is None:
            try:
                import gpiod
            except ImportError:
                raise HardwareError("the gpiod Python package (libgpiod v2 bindings) is not "
                                    "installed: pip install 'gatewayd[gpio]'") from None
            self._gpiod = gpiod
        if not hasattr(self._gpiod, "request_lines"):
            # Debian's python3-libgpiod 1.x has another API altogether.
            raise HardwareError("the installed gpiod module is libgpiod v1; gatewayd needs the "
                                "v2 bindings (pip package gpiod >= 2)")
        return self._gpiod

    def _request(self, chip: str, line: int, settings: Any) -> Any:
        gpiod = self._module()
        try:
            return gpiod.request_lines(chip, consumer=self.consumer, config={line: settings})
        except (OSError, ValueError) as exc:
            raise HardwareError(f"gpio {chip} line {line}: {_reason(exc)}") from None

    def output(self, chip: str, line: int, *, active_low: bool = False,
               initial: bool = False) -> OutputLine:
        gpiod = self._module()
        value = gpiod.line.Value.ACTIVE if initial else gpiod.line.Value.INACTIVE
        settings = gpiod.LineSettings(direction=gpiod.line.Direction.OUTPUT,
                                      active_low=active_low, output_value=value)
        request = self._request(chip, line, settings)
        return _GpiodOutput(gpiod, request, line, f"{chip}:{line}", initial)

    def input(self, chip: str, line: int, *, on_change: ChangeHandler, active_low: bool = False,
              bias: str = "as-is", debounce_ms: int = 0) -> InputLine:
        gpiod = self._module()
        biases = {"as-is": gpiod.line.Bias.AS_IS, "pull-up": gpiod.line.Bias.PULL_UP,
                  "pull-down": gpiod.line.Bias.PULL_DOWN, "disabled": gpiod.line.Bias.DISABLED}
        if bias not in biases:
            raise HardwareError(f"gpio {chip} line {line}: bias must be one of {', '.join(BIASES)}")
        # Debouncing happens here, in software (Debouncer), with the same semantics on every
        # chip and in the simulator; the kernel only reports edges.
        settings = gpiod.LineSettings(direction=gpiod.line.Direction.INPUT,
                                      edge_detection=gpiod.line.Edge.BOTH, bias=biases[bias],
                                      active_low=active_low)
        request = self._request(chip, line, settings)
        try:
            return _GpiodInput(gpiod, request, line, f"{chip}:{line}", on_change, debounce_ms)
        except BaseException:
            with contextlib.suppress(Exception):
                request.release()
            raise


# ---- the simulated world ---------------------------------------------------------------------

class SimOutput:
    """An output line in memory; ``history`` keeps the recent (loop time, level) writes."""

    def __init__(self, backend: SimulatedBackend, key: tuple[str, int], initial: bool) -> None:
        self._backend = backend
        self._key = key
        self._loop = asyncio.get_running_loop()
        self.value = initial
        self.history: collections.deque[tuple[float, bool]] = collections.deque(maxlen=1000)
        self.history.append((self._loop.time(), initial))

    def set(self, active: bool) -> None:
        if active != self.value:
            self.history.append((self._loop.time(), active))
        self.value = active

    def close(self) -> None:
        self._backend._release(self._key)


class SimInput:
    def __init__(self, backend: SimulatedBackend, key: tuple[str, int], on_change: ChangeHandler,
                 debounce_ms: int) -> None:
        self._backend = backend
        self._key = key
        self.level = False
        self._debouncer = Debouncer(lambda: self.level, on_change, debounce_ms / 1000,
                                    f"{key[0]}:{key[1]}")

    @property
    def value(self) -> bool:
        return self._debouncer.value

    def drive(self, active: bool) -> None:
        if active != self.level:
            self.level = active
            self._debouncer.edge()

    def close(self) -> None:
        self._debouncer.close()
        self._backend._release(self._key)


class SimulatedBackend:
    """GPIO lines in memory (``gatewayd --simulate``); :meth:`drive` is a finger on an input."""

    def __init__(self) -> None:
        self.lines: dict[tuple[str, int], SimOutput | SimInput] = {}

    def _claim(self, chip: str, line: int) -> tuple[str, int]:
        key = (chip, line)
        if key in self.lines:
            raise HardwareError(f"gpio {chip} line {line}: Device or resource busy")
        return key

    def _release(self, key: tuple[str, int]) -> None:
        self.lines.pop(key, None)

    def output(self, chip: str, line: int, *, active_low: bool = False,
               initial: bool = False) -> OutputLine:
        key = self._claim(chip, line)
        out = self.lines[key] = SimOutput(self, key, initial)
        return out

    def input(self, chip: str, line: int, *, on_change: ChangeHandler, active_low: bool = False,
              bias: str = "as-is", debounce_ms: int = 0) -> InputLine:
        key = self._claim(chip, line)
        inp = self.lines[key] = SimInput(self, key, on_change, debounce_ms)
        return inp

    def drive(self, chip: str, line: int, active: bool) -> None:
        inp = self.lines.get((chip, line))
        if not isinstance(inp, SimInput):
            raise HardwareError(f"gpio {chip} line {line} is not a requested input")
        inp.drive(active)

    def output_line(self, chip: str, line: int) -> SimOutput:
        out = self.lines.get((chip, line))
        if not isinstance(out, SimOutput):
            raise HardwareError(f"gpio {chip} line {line} is not a requested output")
        return out


# ---- the button -------------------------------------------------------------------------------

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
            except Exception as exc:
                self.last["ok"] = False
                self.last["error"] = f"{type(exc).__name__}: {exc}"
                log.exception("button: the %s-press action failed", kind)
                raise
        self.last["ok"] = True
        return result

    def status(self) -> dict[str, Any]:
        return {"enabled": self.cfg.enabled, "line": f"{self.cfg.chip}:{self.cfg.line}",
                "error": self.error, "pressed": self.pressed,
                "long_press_seconds": self.cfg.long_press_seconds, "presses": dict(self.counts),
                "last": self.last}


# ---- the LED ----------------------------------------------------------------------------------

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
}
IDENTIFY_SECONDS = 10.0
ERROR_SECONDS = 5.0
RESET_SECONDS = 3.0

# Onboarding states (gatewayd.onboarding.State values) and the pattern each one shows.
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

    def flash(self, name: str, seconds: float) -> None:
        """Show ``name`` for ``seconds``, then the base pattern again (a newer flash wins)."""
        _check_pattern(name)
        if self._overlay_timer is not None:
            self._overlay_timer.cancel()
        self.overlay = name
        self._overlay_timer = asyncio.get_running_loop().call_later(seconds, self._end_flash)
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


# ---- together ---------------------------------------------------------------------------------

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
        self._on_long = on_long_press
        self.button = Button(button, backend, on_short_press=on_short_press,
                             on_long_press=self._long_press if on_long_press else None)
        self._signals: list[int] = []

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

    def onboarding_changed(self, state: str, progress: dict[str, Any]) -> None:
        """An :meth:`Onboarding.subscribe` listener: the LED follows the hub's phase.

        A failed pairing attempt (back to unpaired with a failure) flashes ``error`` first.
        """
        pattern = ONBOARDING_PATTERNS.get(str(state))
        if pattern is None:
            return
        if pattern == "pairing" and progress.get("last_failure"):
            self.led.flash("error", ERROR_SECONDS)
        self.led.set_pattern(pattern)

    def add_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        """Simulator only: SIGUSR1 is a short press, SIGUSR2 a long one."""
        for sig, kind in ((signal.SIGUSR1, "short"), (signal.SIGUSR2, "long")):
            loop.add_signal_handler(sig, self.button._fire, kind)
            self._signals.append(sig)

    def status(self) -> dict[str, Any]:
        return {"button": self.button.status(), "led": self.led.status()}
