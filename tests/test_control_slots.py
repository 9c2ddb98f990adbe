"""Calls that may wait long on the control socket (platform requests, resets) hold slots of
their own, bounded in total and per user; quick commands never queue behind them.

Before: waitress served the socket with 2 threads; two platform requests to a platform that
did not answer held both, `gatewayctl status` waited, and a `gatewayctl reset` given up as
"did not answer" (exit 3) ran when a thread came free.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatewayd.control.app import create_control_app
from gatewayd.control.platform import platform_blueprint
from gatewayd.control.slots import PLATFORM
from gatewayd.ctl.client import UnixHTTPConnection
from gatewayd.runtime.corecall import CoreCall
from gatewayd.simulator.broker import Broker
from tests.cloud_helpers import Monitor
from tests.helpers import BIN, ctl, ctl_json, wait_for
from tests.test_e2e_simulator import Sim, http_get

PER_USER = ("you have 2 platform requests waiting on the control socket already, the most "
            "one user may; try again when one has finished")
ALL = ("3 platform requests already wait on the control socket, the most it takes at "
       "once; try again when one has finished")


class SilentPlatform:
    """A platform client whose requests wait until :attr:`answer` is set."""

    def __init__(self) -> None:
        self.answer = asyncio.Event()
        self.waiting = 0
        self._cond = threading.Condition()

    async def request(self, endpoint: str, data: Any, *, timeout: float,
                      caller: str) -> Any:
        with self._cond:
            self.waiting += 1
            self._cond.notify_all()
        await self.answer.wait()
        return data

    def wait_for_waiting(self, count: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.waiting >= count, 10), self.waiting


def test_platform_requests_are_bounded_per_user_and_in_total(
        core_loop: asyncio.AbstractEventLoop) -> None:
    platform = SilentPlatform()
    call = CoreCall(core_loop)
    app = create_control_app(object(), call,  # type: ignore[arg-type]
                             extra=[platform_blueprint(platform, call)])  # type: ignore[arg-type]
    url = "/api/v1/platform/request"

    def ask(user: str) -> tuple[int, Any]:
        reply = app.test_client().post(url, json={"endpoint": "echo", "data": user},
                                       environ_base={"REMOTE_ADDR": user})
        return reply.status_code, reply.get_json()

    answers: list[tuple[int, Any]] = []
    held = [threading.Thread(target=lambda u=user: answers.append(ask(u)))
            for user in ("uid 1", "uid 1", "uid 2")]
    for thread in held:
        thread.start()
    platform.wait_for_waiting(3)
    assert ask("uid 3") == (429, {"error": {"code": "too-many-waiting", "message": ALL}})
    core_loop.call_soon_threadsafe(platform.answer.set)
    for thread in held:
        thread.join(10)
    assert sorted(answers, key=lambda a: str(a[1])) == [(200, {"endpoint": "echo", "data": user})
                               for user in ("uid 1", "uid 1", "uid 2")]
    # The slots are free again; one user may hold PLATFORM.per_client, not a third.
    assert ask("uid 1") == (200, {"endpoint": "echo", "data": "uid 1"})
    platform.answer.clear()
    held = [threading.Thread(target=lambda: answers.append(ask("uid 1")))
            for _ in range(PLATFORM.per_client)]
    for thread in held:
        thread.start()
    platform.wait_for_waiting(4 + PLATFORM.per_client)
    assert ask("uid 1") == (429, {"error": {"code": "too-many-waiting", "message": PER_USER}})
    core_loop.call_soon_threadsafe(platform.answer.set)
    for thread in held:
        thread.join(10)


@pytest.fixture
def online_hub_without_platform(tmp_path: Path) -> Iterator[Sim]:
    """A simulated hub online with a broker whose platform never answers (--no-platform)."""
    sim = Sim(tmp_path / "sim", "--no-platform", "--ethernet")
    try:
        account, mqtt_info = sim.info["account"], sim.info["mqtt"]
        assert http_get(sim.pair_url(wsp=account["wsp"], token=account["token"],
                                     host=mqtt_info["host"],
                                     brport=str(mqtt_info["port"]))) == (200, "OK")
        wait_for(lambda: sim.status()["state"] == "online", 60, "the hub online")
        yield sim
    finally:
        assert sim.proc.stop(signal.SIGINT, timeout=30) == 0, sim.proc.output()


@pytest.mark.timeout(180)
@pytest.mark.slow
def test_status_answers_while_platform_requests_wait_and_one_more_is_refused(
        online_hub_without_platform: Sim) -> None:
    sim = online_hub_without_platform
    mqtt_info = sim.info["mqtt"]
    broker = Broker(sim.workdir / "observer", host=mqtt_info["host"], port=mqtt_info["port"],
                    monitor_password=mqtt_info["monitor"]["password"])
    request = [str(BIN / "gatewayctl"), "--sim", str(sim.workdir), "platform", "request",
               "echo", "--timeout", "60"]
    with Monitor(broker, "+/req/#") as requests:
        waiting = [subprocess.Popen(request, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                   for _ in range(PLATFORM.per_client)]
        try:
            wait_for(lambda: len(requests.since()) >= PLATFORM.per_client, 30,
                     "the platform requests on the broker")
            status = ctl_json("--sim", str(sim.workdir), "status")
            assert status["state"] == "online"
            assert ctl_json("--sim", str(sim.workdir), "devices")["errors"] == {}
            extra = ctl("--sim", str(sim.workdir), "--json", "platform", "request", "echo",
                        check=False)
            assert (extra.returncode, json.loads(extra.stdout)) == (1, {
                "error": PER_USER, "code": "too-many-waiting"})
            assert extra.stderr == f"gatewayctl: {PER_USER}\n"
            conn = UnixHTTPConnection(Path(sim.info["control_socket"]), timeout=10)
            conn.request("POST", "/api/v1/platform/request", body=b'{"endpoint": "echo"}')
            reply = conn.getresponse()
            assert (reply.status, json.loads(reply.read())["error"]["code"]) == (
                429, "too-many-waiting")
            conn.close()
            assert len(requests.since()) == PLATFORM.per_client  # nothing more was sent
        finally:
            for proc in waiting:
                proc.kill()
                proc.wait(10)
