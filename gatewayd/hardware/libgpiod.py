"""The libgpiod v2 line backend: real GPIO lines on a Pi.

The ``gpiod`` module is injectable, so tests run this very code against a fake at the
library boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Any

from gatewayd.hardware.lines import (
    BIASES,
    ChangeHandler,
    Debouncer,
    HardwareError,
    InputLine,
    OutputLine,
)
from gatewayd.runtime.backoff import backoff_delay

log = logging.getLogger(__name__)

CONSUMER = "gatewayd"
MAX_EVENTS = 64  # edge events read per wake-up; the rest wait in the kernel's buffer
# An input whose reads fail is requested again after this long, doubling up to the cap.
REREQUEST_FIRST = 1.0
REREQUEST_MAX = 60.0


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
    """An input line; one whose reads fail (its chip removed) is requested again, backing
    off, and says why in :attr:`error` meanwhile."""

    def __init__(self, gpiod: Any, request: Any, line: int, name: str,
                 on_change: ChangeHandler, debounce_ms: int,
                 rerequest: Callable[[], Any], rerequest_first: float) -> None:
        self._gpiod = gpiod
        self._request: Any = request
        self._line = line
        self._name = name
        self._loop = asyncio.get_running_loop()
        self._fd: int = request.fd
        self._rerequest = rerequest
        self.error: str | None = None
        self._first = rerequest_first
        self._failures = 0  # new requests since the line last worked
        self._said = ""  # what the log said since a read last worked: "", "failed", "back"
        self._retry: asyncio.TimerHandle | None = None
        self._rng = random.Random()  # noqa: S311 (retry jitter, not a secret)
        self._debouncer = Debouncer(self._read, on_change, debounce_ms / 1000, name)
        # The request's file descriptor becomes readable when the kernel queued edge events:
        # no thread, no polling.
        self._loop.add_reader(self._fd, self._readable)

    @property
    def value(self) -> bool:
        return self._debouncer.value

    def _read(self) -> bool:
        if self._request is None:
            raise HardwareError("the line is being requested again")
        try:
            return bool(self._request.get_value(self._line) == self._gpiod.line.Value.ACTIVE)
        except (OSError, ValueError) as exc:
            raise HardwareError(_reason(exc)) from None

    def _readable(self) -> None:
        try:
            events = self._request.read_edge_events(MAX_EVENTS)
        except (OSError, ValueError) as exc:
            self._failed(f"reading edge events failed: {_reason(exc)}")
            return
        self._failures, self._said = 0, ""
        if events:
            self._debouncer.edge()

    def _failed(self, why: str) -> None:
        """A failed read: its fd may stay readable (a chip removed reports POLLHUP|POLLERR,
        its reads ENODEV), so it is watched no more, and the line is requested again after
        a backoff with jitter. Said once in the log (until a read works again), shown in
        the status meanwhile."""
        self._drop_request()
        self._debouncer.close()
        log.log(logging.DEBUG if self._said else logging.ERROR,
                "gpio %s: %s; requesting the line again, backing off up to %.0f s",
                self._name, why, REREQUEST_MAX)
        self._said = self._said or "failed"
        self.error = f"gpio {self._name}: {why}; requesting the line again"
        self._schedule()

    def _schedule(self) -> None:
        delay = backoff_delay(self._failures, self._first, REREQUEST_MAX, self._rng, floor=0.5)
        self._failures += 1
        self._retry = self._loop.call_later(delay, self._request_again)

    def _request_again(self) -> None:
        self._retry = None
        try:
            request = self._rerequest()
            fd = request.fd
        except HardwareError as exc:
            self.error = f"{exc}; requesting the line again"
            log.debug("gpio %s: requesting the line again failed: %s", self._name, exc)
            self._schedule()
            return
        self._request, self._fd = request, fd
        self._loop.add_reader(fd, self._readable)
        self.error = None
        log.log(logging.INFO if self._said == "failed" else logging.DEBUG,
                "gpio %s: the line is requested again", self._name)
        self._said = "back"
        self._debouncer.edge()  # its level may have changed meanwhile: read it, settled

    def _drop_request(self) -> None:
        request, self._request = self._request, None
        if request is None:
            return
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._fd)
        with contextlib.suppress(Exception):
            request.release()

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._debouncer.close()
        self._drop_request()


class GpiodBackend:
    """GPIO lines through libgpiod v2 (``gpiod`` >= 2). One line request per line.

    ``gpiod`` is the module to use; by default the installed one, imported on first use so a
    hub without GPIO configured never needs it. ``rerequest_first``: seconds before an input
    whose reads fail is first requested again (tests shorten it).
    """

    def __init__(self, gpiod: Any = None, consumer: str = CONSUMER, *,
                 rerequest_first: float = REREQUEST_FIRST) -> None:
        self._gpiod = gpiod
        self.consumer = consumer
        self.rerequest_first = rerequest_first

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
            return _GpiodInput(gpiod, request, line, f"{chip}:{line}", on_change, debounce_ms,
                               rerequest=lambda: self._request(chip, line, settings),
                               rerequest_first=self.rerequest_first)
        except BaseException:
            with contextlib.suppress(Exception):
                request.release()
            raise
