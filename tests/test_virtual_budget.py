"""How fast, and how large, a virtual device may be (gatewayd.virtual.budget, .checks):
what reaches the cloud link from a plugin publishing in a loop, what the device says
meanwhile, and the description sizes refused.

Time is a fake clock with its own timers (:class:`FakeTime`), advanced by the test: the
counts are exact and nothing waits on the wall clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from gatewayd import homie
from gatewayd.cloud.attempts import CloudOutcome
from gatewayd.config import spec
from gatewayd.credentials import mqtt_username
from gatewayd.simulator.broker import Broker
from gatewayd.virtual import Registry, VirtualDevice
from gatewayd.virtual.budget import BURST
from gatewayd.virtual.checks import MAX_NODE_PROPERTIES, MAX_NODES, MAX_PROPERTIES
from gatewayd.virtual.host import VirtualDevices
from tests.cloud_helpers import WSP, Monitor, creds_for, make_link
from tests.cloud_helpers import run as run_with_link
from tests.test_hardware import run
from tests.test_virtual_host import FakePublisher, Knob, configs, error_of

pytestmark = pytest.mark.timeout(60)


class Timer:
    def __init__(self, due: float, call: Callable[[], None]) -> None:
        self.due, self.call, self.cancelled = due, call, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeTime:
    """A clock and a call_later that move only when the test says."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.timers: list[Timer] = []

    def clock(self) -> float:
        return self.now

    def later(self, delay: float, call: Callable[[], None]) -> Timer:
        timer = Timer(self.now + delay, call)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        for _ in range(100_000):  # bounded: each timer runs once
            due = [t for t in self.timers if not t.cancelled and t.due <= end]
            if not due:
                break
            timer = min(due, key=lambda t: t.due)
            self.timers.remove(timer)
            self.now = max(self.now, timer.due)
            timer.call()
        self.now = end


class Chatty(VirtualDevice):
    """A retained reading and an event, published as fast as :meth:`flood` can."""

    def nodes(self) -> list[homie.Node]:
        return [homie.Node("flood", properties=[
            homie.Property("count", datatype="integer", value=0),
            homie.Property("ev", retained=False)])]

    async def flood(self, n: int, events: bool = True) -> None:
        for i in range(1, n + 1):
            self.publish("flood", "count", i)
            if events:
                self.publish("flood", "ev", f"e{i}")
            await asyncio.sleep(0)  # a yield, as a task publishing in a loop does


def chatty_of(vd: VirtualDevices) -> Chatty:
    """The flooding plugin of the test's device ``fl``."""
    plugin = vd.hosted["virtual-fl"].plugin
    assert isinstance(plugin, Chatty)
    return plugin


def published(pub: FakePublisher, device_id: str, path: str) -> list[Any]:
    """The values the cloud link was given for ``path``, in order."""
    return [v for d, p, v in pub.values if d == device_id and p == path]


def start(text: str, pub: FakePublisher, time: FakeTime, **types: type[VirtualDevice]
          ) -> VirtualDevices:
    reg = Registry(extra={"chatty": Chatty, "knob": Knob, **types}, group=None)
    return VirtualDevices(configs(text), pub, registry=reg, call_timeout=0.3,
                          start_timeout=0.3, stop_timeout=0.3, clock=time.clock,
                          later=time.later)


def test_a_flood_is_held_to_the_budget_and_the_cloud_ends_on_the_latest_value(
        caplog: pytest.LogCaptureFixture) -> None:
    pub, time = FakePublisher(), FakeTime()
    vd = start('[[virtual]]\ntype = "chatty"\nid = "fl"\n[[virtual]]\ntype = "knob"\n'
               'id = "kk"\n', pub, time)
    half = BURST // 2  # a value and an event each round

    async def main() -> None:
        await vd.start()
        chatty, knob = vd.hosted["virtual-fl"].plugin, vd.hosted["virtual-kk"].plugin
        assert isinstance(chatty, Chatty) and isinstance(knob, Knob)
        await chatty.spawn(chatty.flood(1000))
        assert published(pub, "virtual-fl", "flood/count") == list(range(1, half + 1))
        assert published(pub, "virtual-fl", "flood/ev") == [f"e{i}" for i in range(1, half + 1)]
        assert chatty.value("flood", "count") == 1000  # the model has the latest at once
        assert pub.state("virtual-fl") == "alert"
        assert error_of(vd, "virtual-fl") == (
            f"publishing faster than 50 values/s (bursts of {BURST}): {1000 - half} events "
            f"dropped, {1000 - half} values held back (their latest sent as the budget allows)")
        # Another device is not held back by it.
        assert knob.publish("knob", "clicks", 5) is True
        assert published(pub, "virtual-kk", "knob/clicks") == [5]
        assert pub.state("virtual-kk") == "ready"

        time.advance(0.05)  # the budget refills: the held value goes out, the latest only
        counts = published(pub, "virtual-fl", "flood/count")
        assert counts == [*range(1, half + 1), 1000]
        assert pub.state("virtual-fl") == "alert"  # until it has been calm a while
        time.advance(10)
        assert pub.state("virtual-fl") == "ready" and error_of(vd, "virtual-fl") is None
        assert len(published(pub, "virtual-fl", "flood/count")) == half + 1
        assert pub.states.count(("virtual-fl", "alert")) == 1  # no $state storm
        # Within its budget again, a value goes out at once.
        assert chatty.publish("flood", "count", 7) is True
        assert published(pub, "virtual-fl", "flood/count")[-1] == 7
        await vd.stop()

    with caplog.at_level(logging.INFO):
        run(main())
    said = [r.getMessage() for r in caplog.records if "budget" in r.getMessage()]
    assert said == [
        "virtual-fl: publishes faster than 50 values/s (bursts of 256): the latest values go "
        "out as the budget allows, events beyond it are dropped",
        f"virtual-fl: publishes within its budget again; {1000 - half} events were dropped, "
        f"{1000 - half} values held back"]


def test_on_the_broker_a_flood_is_the_budget_ending_on_the_latest_value(
        broker: Broker) -> None:
    time = FakeTime()
    base = f"{mqtt_username(WSP)}/sweet-home/virtual-fl"

    async def main() -> None:
        link = make_link()
        vd = VirtualDevices(configs('[[virtual]]\ntype = "chatty"\nid = "fl"\n'), link,
                            registry=Registry(extra={"chatty": Chatty}, group=None),
                            clock=time.clock, later=time.later)
        with Monitor(broker) as mon:
            await link.start(creds_for(broker))
            assert (await link.wait_result(5)).outcome is CloudOutcome.CONNECTED
            await vd.start()
            await mon.await_for(f"{base}/$state", "ready")
            chatty = chatty_of(vd)
            mark = mon.mark()
            await chatty.spawn(chatty.flood(1000))
            await mon.await_for(f"{base}/$state", "alert", mark=mark)
            time.advance(0.05)
            await mon.await_for(f"{base}/flood/count", "1000", mark=mark)
            time.advance(10)
            await mon.await_for(f"{base}/$state", "ready", mark=mark)
            # The link may merge a value still waiting for its turn with the next (its
            # outbox): at most what the budget let through reaches the broker.
            counts = mon.values(f"{base}/flood/count", mark)
            assert 2 <= len(counts) <= BURST // 2 + 1 and counts[-1] == "1000"
            assert 1 <= len(mon.values(f"{base}/flood/ev", mark)) <= BURST // 2
            await vd.stop()
            await link.stop()

    run_with_link(main(), timeout=45)


def test_values_held_back_go_out_when_the_device_stops() -> None:
    pub, time = FakePublisher(), FakeTime()
    vd = start('[[virtual]]\ntype = "chatty"\nid = "fl"\n', pub, time)

    async def main() -> None:
        await vd.start()
        chatty = chatty_of(vd)
        await chatty.spawn(chatty.flood(BURST + 50, events=False))
        assert published(pub, "virtual-fl", "flood/count") == list(range(1, BURST + 1))
        await vd.stop()  # no time passed: what was held goes out all the same
        assert published(pub, "virtual-fl", "flood/count") == [*range(1, BURST + 1),
                                                              BURST + 50]
        assert not [t for t in time.timers if not t.cancelled]

    run(main())


def test_each_episode_is_logged_once_and_within_the_log_budget(
        caplog: pytest.LogCaptureFixture) -> None:
    pub, time = FakePublisher(), FakeTime()
    vd = start('[[virtual]]\ntype = "chatty"\nid = "fl"\n', pub, time)

    async def main() -> None:
        await vd.start()
        chatty = chatty_of(vd)
        for _ in range(12):  # twelve floods, each calmed down before the next
            await chatty.spawn(chatty.flood(BURST + 10, events=False))
            time.advance(10)
            assert pub.state("virtual-fl") == "ready"
        assert pub.states.count(("virtual-fl", "alert")) == 12
        await vd.stop()

    with caplog.at_level(logging.INFO):
        run(main())
    starts = [r for r in caplog.records if "publishes faster" in r.getMessage()]
    ends = [r for r in caplog.records if "within its budget again" in r.getMessage()]
    assert (len(starts), len(ends)) == (10, 10)  # the LogBudget: ten a minute


class Huge(VirtualDevice):
    """As many nodes and properties as its options say."""

    @dataclass(frozen=True)
    class Options:
        nodes: int = spec(1)
        properties: int = spec(1)
        telemetry: int = spec(0)

    def nodes(self) -> list[homie.Node]:
        o = self.options
        return [homie.Node(f"n{n}", properties=[
            homie.Property(f"p{p}") for p in range(o.properties)],
            telemetry=[homie.Property(f"t{t}") for t in range(o.telemetry)])
            for n in range(o.nodes)]


def test_a_device_too_large_is_a_placeholder_saying_which_limit() -> None:
    pub, time = FakePublisher(), FakeTime()
    vd = start(f'[[virtual]]\ntype = "huge"\nid = "nodes"\nnodes = {MAX_NODES + 1}\n'
               f'[[virtual]]\ntype = "huge"\nid = "node"\nproperties = {MAX_NODE_PROPERTIES}\n'
               'telemetry = 1\n'
               f'[[virtual]]\ntype = "huge"\nid = "total"\nnodes = 5\nproperties = '
               f'{MAX_NODE_PROPERTIES}\n'
               f'[[virtual]]\ntype = "huge"\nid = "largest"\nnodes = 4\nproperties = '
               f'{MAX_NODE_PROPERTIES}\n'
               f'[[virtual]]\ntype = "huge"\nid = "widest"\nnodes = {MAX_NODES}\n',
               pub, time, huge=Huge)

    async def main() -> None:
        await vd.start()
        said = "describe raised ModelError: "
        expected = {
            "virtual-nodes": "virtual-nodes has 65 nodes; a device has at most 64",
            "virtual-node": "node 'n0' has 257 properties; a node has at most 256, its "
                            "$options and $telemetry included",
            "virtual-total": "virtual-total has 1280 properties; a device has at most 1024, "
                             "its nodes' and its own $options and $telemetry included",
        }
        for device_id, words in expected.items():
            assert error_of(vd, device_id) == said + words
            assert pub.devices[device_id].find("status/error").value == said + words
            assert list(pub.devices[device_id].nodes) == ["status"]
        assert MAX_PROPERTIES == 4 * MAX_NODE_PROPERTIES  # "largest" is just within it
        for device_id in ("virtual-largest", "virtual-widest"):
            assert pub.state(device_id) == "ready" and error_of(vd, device_id) is None
        await vd.stop()

    run(main())
