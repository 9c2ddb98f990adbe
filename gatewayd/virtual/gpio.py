"""``gpio``: GPIO lines as switches (outputs) and binary sensors (debounced inputs).

One device holds one or more lines (a relay board is one device with a node per relay).
Each line is a node with a boolean ``state``: settable for outputs, which follow ``/set``;
read-only for inputs, which publish every debounced change. Values are logical: with
``active_low`` the line is driven low for ``true``.

The lines come from the host's GPIO backend (:mod:`gatewayd.hardware.component`: libgpiod v2 on a
hub, in memory under ``gatewayd --simulate``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from gatewayd import homie
from gatewayd.config import ID_PATTERN, ID_SAYS, spec
from gatewayd.hardware.lines import BIASES, HardwareError, InputLine, OutputLine
from gatewayd.virtual.plugin import OptionError, VirtualDevice

MAX_LINES = 64


@dataclass(frozen=True)
class LineOptions:
    id: str = spec(pattern=ID_PATTERN, says=ID_SAYS, doc="node id, such as 'relay-1'")
    line: int = spec(min=0, max=1023, doc="line offset on the chip")
    direction: str = spec(choices=("output", "input"))
    name: str = spec("")
    chip: str = spec("", doc="default: the device's chip")
    active_low: bool = spec(False)
    initial: bool = spec(False, doc="outputs: the value at start")
    bias: str = spec("as-is", choices=BIASES, doc="inputs: pull-up, pull-down, ...")
    debounce_ms: int = spec(30, min=0, max=1000, doc="inputs: how long a level must hold")


def _lines(value: tuple[LineOptions, ...]) -> str | None:
    if not value:
        return "at least one line is needed ([[virtual.lines]] tables)"
    if len(value) > MAX_LINES:
        return f"at most {MAX_LINES} lines"
    return None


@dataclass(frozen=True)
class GpioOptions:
    lines: tuple[LineOptions, ...] = spec(check=_lines)
    chip: str = spec("/dev/gpiochip0")


class GpioDevice(VirtualDevice):
    Options = GpioOptions

    def __init__(self, ctx: Any, options: GpioOptions) -> None:
        super().__init__(ctx, options)
        self.outputs: dict[str, OutputLine] = {}
        self.inputs: dict[str, InputLine] = {}

    @staticmethod
    def _chip(options: GpioOptions, line: LineOptions) -> str:
        return line.chip or options.chip

    @classmethod
    def check_options(cls, options: GpioOptions) -> None:
        seen: set[str] = set()
        for i, line in enumerate(options.lines):
            if line.id in seen:
                raise OptionError(f"lines[{i}].id", f"duplicate line id {line.id!r}")
            seen.add(line.id)

    @classmethod
    def gpio_lines(cls, options: GpioOptions) -> list[tuple[str, int, str]]:
        return [(cls._chip(options, line), line.line, f"lines[{i}].line")
                for i, line in enumerate(options.lines)]

    def nodes(self) -> list[homie.Node]:
        nodes = []
        for line in self.options.lines:
            output = line.direction == "output"
            prop = homie.Property("state", "On" if output else "Active", datatype="boolean",
                                  settable=output, value=line.initial if output else None)
            nodes.append(homie.Node(line.id, line.name or line.id, properties=[prop],
                                    type="switch" if output else "binary-sensor"))
        return nodes

    async def start(self) -> None:
        backend = self.ctx.gpio
        if backend is None:
            raise HardwareError("no GPIO backend on this hub")
        try:
            for line in self.options.lines:
                chip = self._chip(self.options, line)
                if line.direction == "output":
                    self.outputs[line.id] = backend.output(
                        chip, line.line, active_low=line.active_low, initial=line.initial)
                else:
                    self.inputs[line.id] = backend.input(
                        chip, line.line, active_low=line.active_low, bias=line.bias,
                        debounce_ms=line.debounce_ms,
                        on_change=functools.partial(self._changed, line.id))
                    self.publish(line.id, "state", self.inputs[line.id].value)
        except HardwareError:
            self._release()
            raise

    def _changed(self, node_id: str, active: bool) -> None:
        self.publish(node_id, "state", active)

    async def on_set(self, node_id: str, property_id: str, value: Any) -> Any:
        out = self.outputs.get(node_id)
        if out is None:
            raise homie.CommandError(homie.ERROR, f"line {node_id} is not available")
        try:
            out.set(bool(value))
        except HardwareError as exc:
            raise homie.CommandError(homie.ERROR, str(exc)) from None
        return None

    async def stop(self) -> None:
        self._release()

    def _release(self) -> None:
        lines: list[OutputLine | InputLine] = [*self.outputs.values(), *self.inputs.values()]
        for line in lines:
            line.close()
        self.outputs.clear()
        self.inputs.clear()
