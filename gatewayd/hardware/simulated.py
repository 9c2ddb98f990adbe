"""The simulated line backend: lines in memory for ``gatewayd --simulate`` and tests."""

from __future__ import annotations

import asyncio
import collections

from gatewayd.hardware.lines import (
    ChangeHandler,
    Debouncer,
    HardwareError,
    InputLine,
    OutputLine,
)


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
    error: str | None = None  # an input in memory never fails

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
