"""The door from worker threads into the core (gatewayd/runtime/corecall.py): what the
calling thread's context holds does not follow the call into the core."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import threading
import weakref

import pytest

from gatewayd.runtime.corecall import CoreCall, CoreUnavailable

REQUEST: contextvars.ContextVar[object] = contextvars.ContextVar("request")


class Request:
    """Stands for what a web framework keeps in a context variable during a request."""


def test_a_task_the_core_starts_for_a_call_does_not_keep_the_callers_context(
        core_loop: asyncio.AbstractEventLoop) -> None:
    call = CoreCall(core_loop)
    started: list[asyncio.Task[None]] = []
    stop = asyncio.Event()

    async def lives_on() -> None:  # a device's task: outlives the request that made it
        await stop.wait()

    async def join() -> object:
        started.append(asyncio.get_running_loop().create_task(lives_on()))
        return REQUEST.get(None)

    def a_request_in_a_web_thread() -> tuple[object, weakref.ref[Request]]:
        request = Request()
        REQUEST.set(request)
        return call(join), weakref.ref(request)

    result: list[tuple[object, weakref.ref[Request]]] = []
    web = threading.Thread(target=lambda: result.append(
        contextvars.Context().run(a_request_in_a_web_thread)))
    web.start()
    web.join(10)
    seen, request = result[0]
    gc.collect()
    assert seen is None, "the core saw the web thread's context variable"
    assert request() is None, "the request is still alive: a task in the core keeps it"
    assert not started[0].done()
    core_loop.call_soon_threadsafe(stop.set)
    asyncio.run_coroutine_threadsafe(asyncio.wait(started), core_loop).result(10)


def test_a_call_returns_the_coroutines_result_and_its_errors(
        core_loop: asyncio.AbstractEventLoop) -> None:
    call = CoreCall(core_loop, timeout=5)

    async def add(a: int, b: int) -> int:
        return a + b

    async def fails() -> None:
        raise ValueError("no such device")

    async def never() -> None:
        await asyncio.Event().wait()

    assert call(add, 2, 3) == 5
    with pytest.raises(ValueError, match="no such device"):
        call(fails)
    with pytest.raises(CoreUnavailable, match="did not answer in time"):
        call(never, timeout=0.05)
