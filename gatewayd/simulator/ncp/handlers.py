"""The registry of EZSP command handlers: ``@handler("name")`` on ``f(ncp, params)``,
which returns the response's fields. Kept apart so the handler modules need not import
each other."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gatewayd.simulator.ncp.ezsp_commands import BY_NAME

HandlerFunc = Callable[[Any, dict[str, Any]], dict[str, Any]]
HANDLERS: dict[str, HandlerFunc] = {}


def handler(name: str) -> Callable[[HandlerFunc], HandlerFunc]:
    if name not in BY_NAME:
        raise ValueError(f"no EZSP command {name!r} in the table")

    def register(func: HandlerFunc) -> HandlerFunc:
        if name in HANDLERS:
            raise ValueError(f"two handlers for {name}")
        HANDLERS[name] = func
        return func
    return register
