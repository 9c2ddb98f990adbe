"""Virtual device plugins for gatewayd's tests: one that works, one broken on purpose."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from typing import Any

from gatewayd import homie
from gatewayd.config import spec
from gatewayd.virtual import OptionError, VirtualDevice

METHODS = ("check", "init", "nodes", "start", "poll", "on_set", "stop")


@dataclass(frozen=True)
class EchoOptions:
    greeting: str = spec("hello")
    max_length: int = spec(100, min=1, max=1000)
    api_key: str = spec("", secret=True)  # logged at start, as a careless plugin would


class EchoDevice(VirtualDevice):
    """Echoes text set on ``echo/text`` and counts the changes in ``echo/count``."""

    Options = EchoOptions

    def __init__(self, ctx: Any, options: EchoOptions) -> None:
        super().__init__(ctx, options)
        self.count = 0

    @classmethod
    def check_options(cls, options: EchoOptions) -> None:
        if len(options.greeting) > options.max_length:
            raise OptionError("greeting", f"longer than max_length ({options.max_length})")

    def nodes(self) -> list[homie.Node]:
        return [homie.Node("echo", "Echo", properties=[
            homie.Property("text", "Text", settable=True, value=self.options.greeting),
            homie.Property("count", "Changes", datatype="integer", value=0),
        ])]

    async def start(self) -> None:
        if self.options.api_key:
            self.log.info("echo: calling the service with api key %s", self.options.api_key)

    async def on_set(self, node_id: str, property_id: str, value: Any) -> Any:
        if len(value) > self.options.max_length:
            raise homie.CommandError(homie.VALIDATION, "too long")
        self.count += 1
        self.publish("echo", "count", self.count)
        return value.upper()


@dataclass(frozen=True)
class BrokenOptions:
    fail_in: tuple[str, ...] = spec(METHODS)
    how: str = spec("raise", choices=("raise", "exit", "hang"))
    interval: float = spec(0.05, min=0.01)


async def _hang() -> None:
    # The nastiest kind: it swallows the first cancellation and goes on waiting.
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        pass
    await asyncio.Event().wait()


class BrokenDevice(VirtualDevice):
    """Fails (raises, exits or hangs) in the methods listed in ``fail_in``."""

    Options = BrokenOptions
    calls: dict[str, int] = {}

    @classmethod
    def _fail(cls, options: BrokenOptions, method: str) -> None:
        cls.calls[method] = cls.calls.get(method, 0) + 1
        if method not in options.fail_in:
            return
        if options.how == "exit":
            sys.exit(3)
        raise RuntimeError(f"broken in {method}")

    async def _afail(self, method: str) -> None:
        if method in self.options.fail_in and self.options.how == "hang":
            type(self).calls[method] = type(self).calls.get(method, 0) + 1
            await _hang()
        self._fail(self.options, method)

    @classmethod
    def check_options(cls, options: BrokenOptions) -> None:
        cls._fail(options, "check")

    def __init__(self, ctx: Any, options: BrokenOptions) -> None:
        super().__init__(ctx, options)
        self.poll_interval = options.interval
        self._fail(options, "init")

    def nodes(self) -> list[homie.Node]:
        self._fail(self.options, "nodes")
        return [homie.Node("thing", "Thing", properties=[
            homie.Property("level", "Level", datatype="integer", settable=True, value=1)])]

    async def start(self) -> None:
        await self._afail("start")

    async def poll(self) -> None:
        await self._afail("poll")

    async def on_set(self, node_id: str, property_id: str, value: Any) -> Any:
        await self._afail("on_set")
        return None

    async def stop(self) -> None:
        await self._afail("stop")


@dataclass(frozen=True)
class StubbornOptions:
    ignores: tuple[str, ...] = spec(("stop",))


async def _never_ends() -> None:
    # Swallows every cancellation, not only the first: nothing in asyncio can end it.
    while True:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass


class StubbornDevice(VirtualDevice):
    """Ignores every cancellation of the methods listed in ``ignores`` (``stop``,
    ``on_set``), once it says so in the log."""

    Options = StubbornOptions

    def nodes(self) -> list[homie.Node]:
        return [homie.Node("thing", "Thing", properties=[
            homie.Property("level", "Level", datatype="integer", settable=True, value=1)])]

    async def _stubborn(self, method: str) -> None:
        if method in self.options.ignores:
            self.log.info("%s: ignoring every cancellation from now on", method)
            await _never_ends()

    async def on_set(self, node_id: str, property_id: str, value: Any) -> Any:
        await self._stubborn("on_set")
        return value

    async def stop(self) -> None:
        await self._stubborn("stop")
