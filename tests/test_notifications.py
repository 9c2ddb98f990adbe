"""Notifications: the 2Smart format, the per-sender budget, and what raises them (issue 16).

Time is an injected clock: a hundred flaps over "a minute" take no real minute.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gatewayd import homie
from gatewayd.cloud.notifications import BURST, INTERVAL, LEVELS, TOPIC, Notifications
from gatewayd.onboarding.listeners import fallback_notice
from gatewayd.onboarding.table import State
from gatewayd.virtual import Registry, VirtualDevice
from gatewayd.virtual.host import FAILING_AFTER, VirtualDevices
from tests.fakes import progress
from tests.helpers import run_async
from tests.test_bridge import dev_id, join, started
from tests.test_hardware import until
from tests.test_virtual_host import FakePublisher, configs
from tests.zigbee_radios import Radio

pytestmark = pytest.mark.timeout(60)
run = functools.partial(run_async, timeout=40.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sent:
    """A publisher that records what the link would publish."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def publish(self, topic: str, payload: str, *, retain: bool = False) -> None:
        assert topic == TOPIC and not retain
        self.messages.append(json.loads(payload))

    def kinds(self, sender: str, word: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["senderId"] == sender and word in m["message"]]


def notifications(clock: Clock | None = None) -> tuple[Notifications, Sent]:
    sent = Sent()
    return Notifications(sent, clock=clock or Clock()), sent  # type: ignore[arg-type]


class Timer:
    def __init__(self, due: float, callback: Callable[[], None]) -> None:
        self.due, self.callback, self.cancelled = due, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class Later:
    """The notifications' timer, run by hand as the clock moves."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.due: list[Timer] = []

    def __call__(self, delay: float, callback: Callable[[], None]) -> Timer:
        self.due.append(Timer(self.clock.now + delay, callback))
        return self.due[-1]

    def advance(self, seconds: float) -> None:
        """The clock moves on; what fell due meanwhile runs, in order."""
        self.clock.now += seconds
        while ready := [t for t in self.due if t.due <= self.clock.now]:
            timer = min(ready, key=lambda t: t.due)
            self.due.remove(timer)
            if not timer.cancelled:
                timer.callback()


LOST, BACK = "The Zigbee radio was lost", "The Zigbee radio is back"


def radio_said(sent: Sent) -> list[str]:
    return [m["message"].split(" (")[0] for m in sent.messages]


def flap(notes: Notifications, later: Later, *steps: tuple[float, str]) -> None:
    for at, kind in steps:
        later.advance(at - later.clock.now)
        notes.send(kind, "hub-1", LOST if kind == "radio-lost" else BACK)


def test_the_2smart_format() -> None:
    notes, sent = notifications()
    assert notes.send("radio-lost", "hub-1", "The Zigbee radio was lost")
    assert sent.messages == [{"message": "The Zigbee radio was lost", "logLevel": "error",
                              "senderType": "device", "type": "text", "senderId": "hub-1"}]
    with pytest.raises(ValueError, match="unknown notification kind"):
        notes.send("gossip", "hub-1", "hello")
    assert set(LEVELS) == {"child-joined", "child-left", "interview-failed", "radio-lost",
                           "radio-recovered", "battery-low", "plugin-failing",
                           "hotspot-fallback"}


def test_a_flapping_sender_gets_its_burst_then_one_a_minute() -> None:
    clock = Clock()
    notes, sent = notifications(clock)
    for _ in range(100):  # a hundred flaps within the same second
        notes.send("child-joined", "zigbee-1", "joined")
    assert len(sent.messages) == BURST
    clock.now += INTERVAL  # one interval later: one more, saying how many were held back
    assert notes.send("child-joined", "zigbee-1", "joined")
    assert sent.messages[-1]["message"] == \
        f"joined ({100 - BURST} similar notification(s) held back)"
    assert not notes.send("child-joined", "zigbee-1", "joined")
    # Other senders and other kinds have budgets of their own.
    assert notes.send("child-joined", "zigbee-2", "joined")
    assert notes.send("child-left", "zigbee-1", "left")
    assert notes.status() == {"sent": BURST + 3, "held_back": 100 - BURST + 1}


@pytest.mark.parametrize("ends", ["radio-recovered", "radio-lost"])
def test_the_last_radio_notification_delivered_is_the_radios_state(ends: str) -> None:
    """A flapping radio: the lost and the recovered notifications are budgeted together,
    and the latest one held back goes out once the budget allows. Budgeted apart, this
    sequence left "lost" as the last word while the radio was back (and "back" while it
    was lost)."""
    clock = Clock()
    later = Later(clock)
    sent = Sent()
    notes = Notifications(sent, clock=clock, later=later)  # type: ignore[arg-type]
    start = clock.now
    flap(notes, later, *[(start, kind) for kind in ["radio-lost", "radio-recovered"] * 3],
         (start + 59, "radio-lost"), (start + 61, "radio-recovered"),
         (start + 61.5, "radio-lost"), (start + 62, "radio-recovered"))
    if ends == "radio-lost":
        flap(notes, later, (start + 63, "radio-lost"))
    later.advance(2 * INTERVAL)  # the radio stays as it is now
    assert radio_said(sent)[-1] == (BACK if ends == "radio-recovered" else LOST)
    assert len(sent.messages) <= BURST + 3 * 1  # within the budget: ~3 minutes in all
    if radio_said(sent)[-1] == LOST:  # owed, then delivered: it counts what it stands for
        assert sent.messages[-1]["message"].endswith("notification(s) held back)")
        assert sent.messages[-1]["logLevel"] == "error"


def test_a_recovery_held_back_is_not_sent_when_the_radio_is_lost_again() -> None:
    """Owed, then overtaken: what the user was last told is the state again."""
    clock = Clock()
    later = Later(clock)
    sent = Sent()
    notes = Notifications(sent, clock=clock, later=later)  # type: ignore[arg-type]
    flap(notes, later, *[(clock.now, kind) for kind in ["radio-lost", "radio-recovered"] * 2])
    assert radio_said(sent) == [LOST, BACK, LOST]  # the burst; "back" owed
    later.advance(1)
    notes.send("radio-lost", "hub-1", LOST)  # lost again before the budget allowed "back"
    later.advance(2 * INTERVAL)
    assert radio_said(sent) == [LOST, BACK, LOST]
    assert notes.status() == {"sent": 3, "held_back": 2}


def test_a_hundred_flaps_over_a_minute_stay_within_the_documented_budget() -> None:
    clock = Clock()
    notes, sent = notifications(clock)
    for _ in range(100):  # one flap every 0.6 s: 60 s in all
        notes.send("child-joined", "zigbee-1", "joined")
        clock.now += 0.6
    assert len(sent.messages) <= BURST + 60 / INTERVAL + 1


def test_zigbee_joins_leaves_and_the_radio(tmp_path: Path) -> None:
    """A join gives exactly one "joined"; a hundred join/leave flaps of one device stay
    within the budget; losing and regaining the radio is told once each."""
    clock = Clock()

    async def main() -> None:
        bridge, pub = await started(Radio("virtual", tmp_path))
        notes, sent = notifications(clock)
        bridge.alerts.notify = notes.send
        plug = await join(bridge, pub, "plug")
        child = dev_id(plug)
        assert [m["message"] for m in sent.kinds(child, "")] == [f"Zigbee device {plug} joined"]
        net = bridge.virtual
        assert net is not None
        for _ in range(100):
            net.leave(plug)
            await pub.state(child, "lost")
            net.join("plug", ieee=plug)
            await pub.state(child, "ready")
        assert len(sent.kinds(child, "joined")) == BURST  # the clock did not move
        assert len(sent.kinds(child, "left the network")) == BURST
        net.unplug()
        await pub.until(lambda: sent.kinds("aa-bb-cc-dd-ee-ff", "lost"))
        net.replug()
        await pub.until(lambda: sent.kinds("aa-bb-cc-dd-ee-ff", "is back"))
        assert [m["logLevel"] for m in sent.messages if m["senderId"] == "aa-bb-cc-dd-ee-ff"] \
            == ["error", "info"]
        await bridge.stop()

    run(main())


def test_a_low_battery_is_told_once_per_fall(tmp_path: Path) -> None:
    async def main() -> None:
        bridge, pub = await started(Radio("virtual", tmp_path))
        notes, sent = notifications()
        bridge.alerts.notify = notes.send
        sensor = await join(bridge, pub, "th-sensor", "sleeping")
        child = dev_id(sensor)
        net = bridge.virtual
        assert net is not None
        for half_percent in (18, 16, 30, 10):  # 9 %, 8 %, back to 15 %, then 5 %
            net.report(sensor, "power", {"battery_percentage_remaining": half_percent})
            await pub.until(lambda h=half_percent: pub.value(child, "$telemetry/battery")
                            == h // 2)
        assert [m["message"] for m in sent.kinds(child, "battery")] == [
            f"{bridge.children[sensor].name}: battery at 9 %",
            f"{bridge.children[sensor].name}: battery at 5 %"]
        await bridge.stop()

    run(main())


class Fickle(VirtualDevice):
    """Its /set fails while ``failing`` is set."""

    failing = True

    def nodes(self) -> list[homie.Node]:
        return [homie.Node("nn", "N", properties=[
            homie.Property("pp", datatype="integer", settable=True, value=0)])]

    async def on_set(self, node_id: str, property_id: str, value: Any) -> Any:
        if Fickle.failing:
            raise RuntimeError("the relay does not answer")
        return None


def test_a_plugin_that_keeps_failing_is_told_once_per_streak() -> None:
    async def main() -> None:
        notes, sent = notifications()
        publisher = FakePublisher()
        host = VirtualDevices(configs("[[virtual]]\ntype = \"fickle\"\nid = \"relay\"\n"),
                              publisher, registry=Registry(extra={"fickle": Fickle},
                                                           group=None))
        host.notify = notes.send
        await host.start()

        async def set_value(value: int, answers: int) -> None:
            publisher.command("virtual-relay", "nn/pp", str(value))
            await until(lambda: len(publisher.rejected) + len(publisher.accepted) == answers)

        for n in range(1, FAILING_AFTER + 3):  # a streak of five failures: told once
            await set_value(n, n)
        assert [m["message"] for m in sent.kinds("virtual-relay", "keeps failing")] == [
            "relay keeps failing (on_set: on_set raised RuntimeError)"]
        Fickle.failing = False
        await set_value(0, FAILING_AFTER + 3)  # it works again: the streak ends
        Fickle.failing = True
        for n in range(FAILING_AFTER):
            await set_value(n, FAILING_AFTER + 4 + n)
        assert len(sent.kinds("virtual-relay", "keeps failing")) == 2
        await host.stop()

    run(main())


def test_the_hotspot_fallback_is_told_once_per_fall() -> None:
    told: list[tuple[str, str, str]] = []
    listener = fallback_notice(lambda *note: told.append(note), "hub-1")
    listener(State.ONLINE, progress("online", hotspot=False))
    listener(State.OFFLINE, progress("offline", hotspot=False))  # within the grace
    listener(State.OFFLINE, progress("offline", hotspot=True))  # the hotspot is up
    listener(State.OFFLINE, progress("offline", hotspot=True))  # again: no repeat
    assert told == [("hotspot-fallback", "hub-1", "The hub lost its network and opened its "
                                                  "hotspot so it can be paired again")]
    listener(State.CONNECTING, progress("connecting", hotspot=False))
    listener(State.OFFLINE, progress("offline", hotspot=True))
    assert len(told) == 2
