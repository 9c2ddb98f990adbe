"""The one door from worker threads (web servers, paho, bleak) into the asyncio core."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class CoreUnavailable(RuntimeError):
    """The core is shutting down or did not answer in time."""


class CoreTimeout(CoreUnavailable):
    """The core did not answer in time. The call is cancelled, but what it started may go
    on (a factory reset does: :meth:`gatewayd.hub.Hub.reset`)."""


class CoreCall:
    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float = 15.0) -> None:
        self.loop = loop
        self.timeout = timeout

    def __call__(self, fn: Callable[..., Awaitable[T]], *args: Any,
                 timeout: float | None = None) -> T:
        if self.loop.is_closed():
            raise CoreUnavailable("the daemon is shutting down")
        coro = fn(*args)
        assert asyncio.iscoroutine(coro), "CoreCall takes a coroutine function"
        # Scheduled from an empty context, not a copy of this thread's: a web thread's
        # holds its request (Flask keeps it in a context variable), and every task the
        # core starts from here inherits the context, so a long-lived one (a joined
        # device's) would keep the request, its environ and its body alive for good.
        future: concurrent.futures.Future[T] = contextvars.Context().run(
            asyncio.run_coroutine_threadsafe, coro, self.loop)
        try:
            return future.result(self.timeout if timeout is None else timeout)
        except TimeoutError:
            future.cancel()
            raise CoreTimeout("the daemon did not answer in time") from None
