"""A factory reset (gatewayd/hub.py) runs to its end and one at a time, whoever asked for it.

Cut after the state file is wiped, a reset would skip the hooks that bring the hotspot and
the BLE window back: an unpaired hub nobody can reach. So a caller that stops waiting (the
control socket's request out of time, a cancelled press) leaves the reset running, the
control socket waits for it as long as for the button's long press, and a second request
(the button while `gatewayctl reset` runs) waits for the first.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from gatewayd.config import Config, with_overrides
from gatewayd.control.app import create_control_app
from gatewayd.control.devices import PRESS_TIMEOUT
from gatewayd.credentials import CloudCredentials, WifiCredentials
from gatewayd.ctl.client import RESET_WAIT
from gatewayd.ctl.devices import cmd_button
from gatewayd.ctl.main import cmd_reset
from gatewayd.hub import RESET_TIMEOUT, Hub
from gatewayd.identity import Identity
from gatewayd.runtime.corecall import CoreCall, CoreTimeout, CoreUnavailable
from gatewayd.runtime.logsetup import Redactor
from gatewayd.runtime.sdnotify import Notifier
from gatewayd.state import StateStore
from tests.helpers import run_async
from tests.test_hardware import until

pytestmark = pytest.mark.timeout(60)

IDENTITY = Identity("dc-a6-32-12-34-56", "dc:a6:32:12:34:56", "Acme Hub")


def paired_hub(tmp_path: Path) -> Hub:
    config = with_overrides(Config(), hub={"state_dir": str(tmp_path / "state")})
    store = StateStore(config.state_dir)
    store.open(device_id=IDENTITY.device_id, mac=IDENTITY.mac)
    store.commit_pairing(WifiCredentials("HomeNet", "supersecret"),
                         CloudCredentials("user@example.com", "t0k", "127.0.0.1", 1883))
    return Hub(config, store, IDENTITY, Notifier(), Redactor())


class SlowHooks:
    """Two reset hooks: the first holds every reset until :meth:`release` (a hotspot slow
    to come up), the second notes that the reset got past it (the BLE window)."""

    def __init__(self, hub: Hub) -> None:
        self.log: list[tuple[str, bool]] = []
        self.holding = threading.Event()  # a reset is in the first hook
        self.done = threading.Event()  # a reset ran its last hook
        self._gate = asyncio.Event()
        hub.on_reset(self._slow)
        hub.on_reset(self._last)

    async def _slow(self, full: bool) -> None:
        self.log.append(("slow", full))
        self.holding.set()
        await self._gate.wait()

    async def _last(self, full: bool) -> None:
        self.log.append(("last", full))
        self.done.set()

    def release(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if loop is None:
            self._gate.set()
        else:
            loop.call_soon_threadsafe(self._gate.set)


class Impatient(CoreCall):
    """Notes the allowance each call asks for, and gives up once the reset is held in its
    first hook, as CoreCall does when the allowance runs out (it cancels the call): a
    caller whose time runs out long before the reset ends, without a test waiting a
    minute, and whatever the machine's load."""

    def __init__(self, loop: asyncio.AbstractEventLoop, hooks: SlowHooks) -> None:
        super().__init__(loop)
        self.hooks = hooks
        self.asked: list[float | None] = []

    def __call__(self, fn: Any, *args: Any, timeout: float | None = None) -> Any:
        self.asked.append(timeout)
        future = asyncio.run_coroutine_threadsafe(fn(*args), self.loop)
        if not self.hooks.holding.wait(30):
            raise AssertionError("the reset never reached its first hook")
        future.cancel()
        raise CoreTimeout("the daemon did not answer in time")


def test_a_reset_runs_to_its_end_when_its_caller_stops_waiting(tmp_path: Path) -> None:
    hub = paired_hub(tmp_path)
    hooks = SlowHooks(hub)

    async def main() -> None:
        caller = asyncio.create_task(hub.reset())
        await until(hooks.holding.is_set, what="the reset's first hook")
        caller.cancel()  # what CoreCall does to the call when its caller's time is up
        with pytest.raises(asyncio.CancelledError):
            await caller
        hooks.release()
        await until(hooks.done.is_set, what="the reset's last hook")

    run_async(main())
    assert hooks.log == [("slow", False), ("last", False)]
    assert not hub.store.state.paired


def test_the_control_socket_allows_a_reset_what_the_button_does_and_never_cuts_it_short(
        core_loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    hub = paired_hub(tmp_path)
    hooks = SlowHooks(hub)
    call = Impatient(core_loop, hooks)
    client = create_control_app(hub, call).test_client()

    reply = client.post("/api/v1/reset", json={"full": True})
    assert call.asked == [RESET_TIMEOUT] and RESET_TIMEOUT == PRESS_TIMEOUT
    assert hooks.holding.is_set(), "the reset began before its caller gave up"
    assert reply.status_code == 503
    error = reply.get_json()["error"]
    assert error["code"] == "unavailable"
    assert error["message"] == (f"the reset did not finish within {RESET_TIMEOUT:g} s; it "
                                "goes on in the hub: see 'gatewayctl status'")

    hooks.release(core_loop)
    assert hooks.done.wait(10), "the reset stopped when its caller gave up"
    assert hooks.log == [("slow", True), ("last", True)]
    assert not hub.store.state.paired


def test_two_resets_at_once_run_one_after_the_other(tmp_path: Path) -> None:
    hub = paired_hub(tmp_path)
    hooks = SlowHooks(hub)

    async def main() -> list[dict[str, Any]]:
        press = asyncio.create_task(hub.reset())  # the button's long press
        await until(hooks.holding.is_set, what="the first reset's first hook")
        ctl = asyncio.create_task(hub.reset(True))  # `gatewayctl reset --full` meanwhile
        for _ in range(20):  # turns of the loop enough for a second reset to reach its hooks
            await asyncio.sleep(0)
        assert hooks.log == [("slow", False)], "the second reset did not wait"
        hooks.release()
        return list(await asyncio.gather(press, ctl))

    first, second = run_async(main())
    assert hooks.log == [("slow", False), ("last", False), ("slow", True), ("last", True)]
    assert first["paired"] is False and second["paired"] is False


def test_a_stopping_hub_lets_a_running_reset_finish_and_takes_no_new_one(
        tmp_path: Path) -> None:
    """A reset stops and starts components (a full one the Zigbee radio): the daemon
    waits for one that runs before it stops them, and refuses one asked for meanwhile."""
    hub = paired_hub(tmp_path)
    hooks = SlowHooks(hub)

    async def main() -> None:
        running = asyncio.create_task(hub.reset(True))
        await until(hooks.holding.is_set, what="the reset's first hook")
        hub.stop_requested.set()
        with pytest.raises(CoreUnavailable, match="the hub is stopping"):
            await hub.reset()
        finishing = asyncio.create_task(hub.finish_resets())
        for _ in range(20):  # turns of the loop: the stop waits while the reset is held
            await asyncio.sleep(0)
        assert not finishing.done()
        hooks.release()
        await finishing
        assert running.done() and hooks.log == [("slow", True), ("last", True)]

    run_async(main())


def test_a_reset_asked_of_a_stopping_hub_is_answered_unavailable(
        tmp_path: Path, core_loop: asyncio.AbstractEventLoop) -> None:
    """Over the control socket, as a reset or a long press: 503 with the reason, not the
    500 of an unexpected error; nothing is reset."""
    hub = paired_hub(tmp_path)

    async def stopping() -> None:
        hub.stop_requested.set()
    asyncio.run_coroutine_threadsafe(stopping(), core_loop).result(10)
    client = create_control_app(hub, CoreCall(core_loop)).test_client()
    reply = client.post("/api/v1/reset", json={"full": True})
    assert (reply.status_code, reply.get_json()) == (503, {"error": {
        "code": "unavailable",
        "message": "the hub is stopping; reset it after it has started again"}})
    assert hub.store.state.paired


class Recording:
    """A gatewayctl client that notes each request's socket timeout."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.timeouts: list[tuple[str, float | None]] = []

    def request(self, method: str, endpoint: str, body: dict[str, Any] | None = None, *,
                timeout: float | None = None) -> Any:
        self.timeouts.append((endpoint, timeout))
        return self.answer


def test_gatewayctl_waits_for_a_reset_longer_than_the_daemon_allows_it(
        capsys: pytest.CaptureFixture[str]) -> None:
    # Shorter, and gatewayctl would say "timed out" while the daemon's answer (done, or
    # "goes on") is still to come.
    assert RESET_WAIT > RESET_TIMEOUT
    client = Recording({"state": "unpaired", "press": "long"})
    args = argparse.Namespace(full=False, json=False, press="long")
    assert cmd_reset(args, client) == 0  # type: ignore[arg-type]
    assert cmd_button(args, client) == 0
    assert client.timeouts == [("reset", RESET_WAIT), ("button", RESET_WAIT)]
    capsys.readouterr()
