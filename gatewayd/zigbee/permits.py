"""Permit-join windows: opening and closing joining on the radio, with or without an
install code, and the hub node's ``permitjoin`` value counting down to 0."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from gatewayd.zigbee.inputs import parse_ieee, parse_install_code

if TYPE_CHECKING:
    from zigpy.application import ControllerApplication

log = logging.getLogger(__name__)


class PermitJoin:
    """One joining window at a time; ``publish`` gets the seconds of ``permitjoin``."""

    def __init__(self, limit: int, publish: Callable[[int], None]) -> None:
        self.limit = limit
        self.publish = publish
        self._until = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def _clamp(self, seconds: int | None, low: int) -> int:
        return self.limit if seconds is None else max(low, min(int(seconds), self.limit))

    def _opened(self, seconds: int) -> None:
        loop = asyncio.get_running_loop()
        self._until = loop.time() + seconds
        self.cancel()
        self._timer = loop.call_later(seconds, self.publish, 0)
        self.publish(seconds)

    async def open(self, app: ControllerApplication, seconds: int | None) -> int:
        """Open (or with 0 close) joining for ``seconds`` (default: the limit)."""
        seconds = self._clamp(seconds, 0)
        await app.permit(seconds)
        self._opened(seconds)
        log.info("zigbee: permit join %s", f"open for {seconds} s" if seconds else "closed")
        return seconds

    async def with_install_code(self, app: ControllerApplication, ieee: str, code: str,
                                seconds: int | None) -> str:
        """Let ``ieee`` join with its Zigbee 3.0 install code; opens joining for it."""
        address = parse_ieee(ieee)
        raw = parse_install_code(code)
        import zigpy.types
        import zigpy.util

        seconds = self._clamp(seconds, 1)
        await app.permit_with_link_key(zigpy.types.EUI64.convert(address),
                                       zigpy.util.convert_install_code(raw), seconds)
        self._opened(seconds)
        log.info("zigbee: install code accepted for %s, joining open for %s s", address, seconds)
        return address

    def closed(self) -> None:
        """The radio (re)started: whatever window was open is gone with its old session."""
        self._until = 0.0
        self.cancel()
        self.publish(0)

    def remaining(self) -> int:
        return max(0, round(self._until - asyncio.get_running_loop().time()))

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
