"""The cloud link's publish and clear paths (gatewayd.cloud.publisher) on a recording sender:
what goes out, in which order, within which bounds. The broker round trip of the same paths
is in test_cloud_link.py; here each rule is one fast, exact check."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from gatewayd import homie
from gatewayd.cloud.publisher import WINDOW, Outbox, Pending, Publisher
from tests.helpers import run_async

ROOT = "root"


class Sender:
    """Stands in for paho: records each publication and answers a message id."""

    def __init__(self) -> None:
        self.sent: list[homie.Message] = []
        self.drops: list[str] = []  # why the publisher gave the connection up
        self.refuse = False

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> int | None:
        if self.refuse:
            return None
        self.sent.append(homie.Message(topic, payload.decode(), retain, qos))
        return len(self.sent)

    def topics(self, start: int = 0) -> list[str]:
        return [m.topic for m in self.sent[start:]]

    def drop(self, reason: str) -> None:
        self.drops.append(reason)


def device(state: str = "ready", *, level: Any = 5) -> homie.Device:
    switch = homie.Node("switch", "Switch", properties=[
        homie.Property("level", "Level", datatype="integer", value=level),
        homie.Property("on", "On", datatype="boolean", settable=True)])
    return homie.Device("lamp", "Lamp", state=state, nodes=[switch])


def drain(pub: Publisher, sender: Sender) -> None:
    """Pump and acknowledge until nothing is waiting or in flight."""
    for _ in range(1000):
        pub.pump(sender)
        if pub.idle.is_set():
            return
        for mid in list(pub._inflight):
            pub.acknowledged(mid)
    raise AssertionError("the publisher never became idle")


def run(coro: Any) -> Any:
    return run_async(coro, timeout=10.0)


def test_a_device_tree_starts_with_init_and_ends_with_its_state() -> None:
    async def main() -> None:
        pub, sender = Publisher(100), Sender()
        pub.use_root(ROOT)
        pub.announce([device()])
        drain(pub, sender)
        base = f"{ROOT}/sweet-home/lamp"
        assert sender.sent[0] == homie.Message(f"{base}/$state", "init")
        assert sender.sent[-1] == homie.Message(f"{base}/$state", "ready")
        assert homie.Message(f"{base}/switch/level", "5") in sender.sent
        assert all(m.retain and m.qos == 1 for m in sender.sent)
        # A reconnect announces again, without init: apps do not see the device restart.
        mark = len(sender.sent)
        pub.announce([device()])
        drain(pub, sender)
        assert f"{base}/$state" not in sender.topics(mark)[:-1]
        assert sender.sent[-1] == homie.Message(f"{base}/$state", "ready")

    run(main())


def test_removing_a_device_clears_its_state_first_then_everything_it_published() -> None:
    async def main() -> None:
        pub, sender = Publisher(100), Sender()
        pub.use_root(ROOT)
        lamp = device()
        pub.announce([lamp])
        drain(pub, sender)
        published = {m.topic for m in sender.sent}
        mark = len(sender.sent)
        pub.forget(lamp)
        drain(pub, sender)
        cleared = sender.sent[mark:]
        base = f"{ROOT}/sweet-home/lamp"
        assert cleared[0] == homie.Message(f"{base}/$state", ""), \
            "apps must stop showing the device before its attributes vanish"
        assert all(m.payload == "" and m.retain for m in cleared)
        assert published <= {m.topic for m in cleared}
        assert len({m.topic for m in cleared}) == len(cleared)  # each topic once

    run(main())


def test_clearing_topics_sends_every_state_first() -> None:
    async def main() -> None:
        pub, sender = Publisher(100), Sender()
        pub.use_root(ROOT)
        topics = {f"{ROOT}/sweet-home/a/$name", f"{ROOT}/sweet-home/b/$state",
                  f"{ROOT}/sweet-home/a/$state", f"{ROOT}/sweet-home/a/n/p"}
        pub.clear_topics(topics)
        drain(pub, sender)
        assert sender.topics() == [f"{ROOT}/sweet-home/a/$state", f"{ROOT}/sweet-home/b/$state",
                                   f"{ROOT}/sweet-home/a/$name", f"{ROOT}/sweet-home/a/n/p"]

    run(main())


def test_a_topic_published_once_is_cleared_even_if_the_model_dropped_it() -> None:
    async def main() -> None:
        pub, sender = Publisher(100), Sender()
        pub.use_root(ROOT)
        pub.announce([device()])
        drain(pub, sender)
        smaller = homie.Device("lamp", "Lamp")  # the property is gone from the model
        mark = len(sender.sent)
        pub.forget(smaller)
        drain(pub, sender)
        assert f"{ROOT}/sweet-home/lamp/switch/level" in sender.topics(mark)
        # Forgotten: a second removal clears only what the model still names.
        mark = len(sender.sent)
        pub.forget(smaller)
        drain(pub, sender)
        assert f"{ROOT}/sweet-home/lamp/switch/level" not in sender.topics(mark)

    run(main())


def test_what_each_device_published_stays_its_own() -> None:
    """Devices of one kind publish the same topics under their own base: each is
    remembered, and cleared, under its own."""
    async def main() -> None:
        pub, sender = Publisher(100), Sender()
        pub.use_root(ROOT)
        lamps = [homie.Device(i, "Lamp", nodes=[homie.Node("switch", "Switch", properties=[
            homie.Property("level", "Level", datatype="integer", value=5)])])
            for i in ("lamp-a", "lamp-ab")]  # one id the start of the other
        pub.announce(lamps)
        drain(pub, sender)
        smaller = homie.Device("lamp-a", "Lamp")
        assert f"{ROOT}/sweet-home/lamp-a/switch/level" in pub.owned_topics(smaller)
        assert not any("lamp-ab" in t for t in pub.owned_topics(smaller))
        with pytest.raises(ValueError, match="not a topic of device 'lamp-a'"):
            pub.enqueue(homie.Message(f"{ROOT}/sweet-home/lamp-ab/switch/level", "1"),
                        key="k", device="lamp-a")

    run(main())


def test_a_publication_in_flight_when_the_account_changes_is_not_remembered_for_the_new_one(
        ) -> None:
    async def main() -> None:
        pub, sender = Publisher(100), Sender()
        pub.use_root(ROOT)
        pub.announce([device()])
        pub.pump(sender)  # in flight, never acknowledged
        pub.use_root("another-account")
        pub.connection_lost()  # they go out again
        drain(pub, sender)
        base = "another-account/sweet-home/lamp/"
        assert pub.owned_topics(device()) == device().topics("another-account")
        assert all(t.startswith(base) for t in pub.owned_topics(device()))

    run(main())


def test_the_outbox_goes_before_trees_and_coalesces_by_key() -> None:
    async def main() -> None:
        pub, sender = Publisher(100), Sender()
        pub.use_root(ROOT)
        pub.announce([device()])
        first: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        pub.enqueue(homie.Message(f"{ROOT}/x", "1", retain=False), key="x", done=first)
        pub.enqueue(homie.Message(f"{ROOT}/x", "2", retain=False), key="x")
        pub.enqueue(homie.Message(f"{ROOT}/y", "3", retain=False), key="y")
        drain(pub, sender)
        assert [(m.topic, m.payload) for m in sender.sent[:2]] == [(f"{ROOT}/x", "2"),
                                                                   (f"{ROOT}/y", "3")]
        assert first.done() and first.result() is False  # replaced: never sent
        assert pub.status() == {"buffered": 0, "announcing": 0, "in_flight": 0}

    run(main())


def test_publishing_outside_the_accounts_tree_is_refused() -> None:
    async def main() -> None:
        pub = Publisher(10)
        with pytest.raises(ValueError):  # no account yet
            pub.enqueue(homie.Message(f"{ROOT}/x", "1"), key="x")
        pub.use_root(ROOT)
        for topic in ("other/x", ROOT, f"{ROOT}x/y", "$SYS/x"):
            with pytest.raises(ValueError, match="refusing"):
                pub.enqueue(homie.Message(topic, "1"), key=topic)
        assert len(pub.outbox) == 0 and pub.idle.is_set()

    run(main())


def test_at_most_a_window_of_publications_is_unacknowledged() -> None:
    async def main() -> None:
        pub, sender = Publisher(1000), Sender()
        pub.use_root(ROOT)
        for i in range(WINDOW + 10):
            pub.enqueue(homie.Message(f"{ROOT}/t{i}", str(i)), key=i)
        pub.pump(sender)
        assert len(sender.sent) == WINDOW and not pub.idle.is_set()
        assert pub.status() == {"buffered": 10, "announcing": 0, "in_flight": WINDOW}
        assert pub.acknowledged(1) and not pub.acknowledged(1) and not pub.acknowledged(999)
        pub.pump(sender)
        assert len(sender.sent) == WINDOW + 1
        drain(pub, sender)
        assert sender.topics() == [f"{ROOT}/t{i}" for i in range(WINDOW + 10)]
        assert await pub.flush(1.0)

    run(main())


def test_a_lost_connection_sends_unacknowledged_publications_again_in_order() -> None:
    async def main() -> None:
        pub, sender = Publisher(100), Sender()
        pub.use_root(ROOT)
        loop = asyncio.get_running_loop()
        done = [loop.create_future() for _ in range(3)]
        for i in range(3):
            pub.enqueue(homie.Message(f"{ROOT}/t{i}", str(i)), key=i, done=done[i])
        pub.pump(sender)
        pub.acknowledged(1)
        assert done[0].result() is True and not done[1].done()
        pub.connection_lost()
        pub.pump(None)  # offline: nothing goes anywhere
        assert pub.status()["buffered"] == 2 and not pub.idle.is_set()
        mark = len(sender.sent)
        pub.pump(sender)
        assert sender.topics(mark) == [f"{ROOT}/t1", f"{ROOT}/t2"]
        # paho refusing a publication keeps it at the front for the next pump
        pub.enqueue(homie.Message(f"{ROOT}/late", "x"), key="late")
        sender.refuse = True
        pub.pump(sender)
        sender.refuse = False
        mark = len(sender.sent)
        pub.pump(sender)
        assert sender.topics(mark) == [f"{ROOT}/late"]
        assert not await pub.flush(0.01)  # still in flight

    run(main())


def test_a_full_outbox_drops_the_oldest_and_counts() -> None:
    async def main() -> None:
        box = Outbox(3)
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(5)]
        for i in range(5):
            box.put(Pending(homie.Message(f"{ROOT}/t{i}", ""), i, done=futures[i]))
        assert len(box) == 3 and box.dropped == 2
        assert [f.result() for f in futures[:2]] == [False, False]
        assert [box.pop().key for _ in range(3)] == [2, 3, 4]  # type: ignore[union-attr]
        assert box.pop() is None
        box.put(Pending(homie.Message(f"{ROOT}/a", ""), "a"))
        box.put(Pending(homie.Message(f"{ROOT}/a", "new"), "a"), replace=False)
        box.put(Pending(homie.Message(f"{ROOT}/b", ""), "b"), front=True)
        first = box.pop()
        second = box.pop()
        assert first is not None and first.key == "b"
        assert second is not None and second.msg.payload == ""  # a newer entry was waiting

    run(main())


def test_a_stops_goodbyes_into_a_full_outbox_push_out_the_backlog_not_each_other() -> None:
    """A slow broker fills the outbox; the goodbyes put ahead of it had been evicted at once
    (the oldest by position was the one just put first): every child stayed ready."""
    async def main() -> None:
        pub, sender = Publisher(5), Sender()
        pub.use_root(ROOT)
        for i in range(5):
            pub.enqueue(homie.Message(f"{ROOT}/hub/backlog/p{i}", str(i)), key=i)
        said = pub.goodbye(["child1", "child2", "hub"])
        assert pub.outbox.dropped == 3 and not said.done()
        drain(pub, sender)
        assert said.result() is True
        home = f"{ROOT}/sweet-home"
        assert sender.topics() == [f"{home}/child1/$state", f"{home}/child2/$state",
                                   f"{home}/hub/$state", f"{ROOT}/hub/backlog/p3",
                                   f"{ROOT}/hub/backlog/p4"]

    run(main())


def test_another_account_starts_from_nothing() -> None:
    async def main() -> None:
        pub, sender = Publisher(100), Sender()
        pub.use_root(ROOT)
        pub.announce([device()])
        drain(pub, sender)
        pub.enqueue(homie.Message(f"{ROOT}/x", "1"), key="x")
        pub.use_root("other")
        assert len(pub.outbox) == 0
        mark = len(sender.sent)
        pub.forget(device())  # nothing was published under the new root
        drain(pub, sender)
        assert all(t.startswith("other/") for t in sender.topics(mark))
        pub.announce([device()])
        drain(pub, sender)
        assert homie.Message("other/sweet-home/lamp/$state", "init") in sender.sent[mark:]

    run(main())


def test_a_newer_value_waiting_wins_over_an_older_one_coming_back() -> None:
    async def main() -> None:
        pub, sender = Publisher(100), Sender()
        pub.use_root(ROOT)
        pub.enqueue(homie.Message(f"{ROOT}/x", "1"), key="x")
        pub.pump(sender)  # "1" in flight
        pub.enqueue(homie.Message(f"{ROOT}/x", "2"), key="x")  # a newer value waits
        pub.connection_lost()  # "1" was never acknowledged
        mark = len(sender.sent)
        pub.pump(sender)
        assert [m.payload for m in sender.sent[mark:]] == ["2"]
        # A caller may ask not to replace what is waiting.
        pub.enqueue(homie.Message(f"{ROOT}/y", "first"), key="y")
        pub.enqueue(homie.Message(f"{ROOT}/y", "second"), key="y", replace=False)
        # ... or to go first.
        pub.enqueue(homie.Message(f"{ROOT}/urgent", "now"), key="u", front=True)
        mark = len(sender.sent)
        pub.pump(sender)
        assert [m.payload for m in sender.sent[mark:]] == ["now", "first"]

    run(main())


def test_a_refused_publication_keeps_its_place_in_the_queue() -> None:
    async def main() -> None:
        pub, sender = Publisher(100), Sender()
        pub.use_root(ROOT)
        for name in ("a", "b"):
            pub.enqueue(homie.Message(f"{ROOT}/{name}", name), key=name)
        sender.refuse = True
        pub.pump(sender)
        assert not pub.idle.is_set() and pub.status()["buffered"] == 2
        sender.refuse = False
        pub.pump(sender)
        assert sender.topics() == [f"{ROOT}/a", f"{ROOT}/b"]

    run(main())


def test_a_tree_paho_could_not_take_yet_keeps_the_publisher_busy() -> None:
    # flush() (the goodbye before a stop) waits on idle: an announced tree whose first
    # message paho refused is still to be sent, so the publisher must not look idle.
    async def main() -> None:
        pub, sender = Publisher(100), Sender()
        pub.use_root(ROOT)
        pub.announce([device()])
        sender.refuse = True
        pub.pump(sender)
        assert not pub.idle.is_set() and pub.status()["buffered"] == 1
        sender.refuse = False
        drain(pub, sender)
        assert sender.sent[0] == homie.Message(f"{ROOT}/sweet-home/lamp/$state", "init")

    run(main())


def test_trees_cut_by_a_lost_connection_go_out_whole_again() -> None:
    async def main() -> None:
        pub, sender = Publisher(100), Sender()
        pub.use_root(ROOT)
        lamp = device()
        pub.announce([lamp])
        pub.pump(sender)  # the whole tree in flight, nothing acknowledged
        first = sender.topics()
        pub.connection_lost()
        mark = len(sender.sent)
        pub.announce([lamp])  # as the link does after the reconnect
        pub.pump(sender)
        again = sender.topics(mark)
        # The tree goes again, whole and once, $state last: not its cut messages ahead of
        # it as well (their "ready" before the attributes).
        assert set(again) == set(first) and len(again) == len(set(again))
        assert sender.sent[-1] == homie.Message(f"{ROOT}/sweet-home/lamp/$state", "ready")

    run(main())


def test_a_forgotten_device_stops_announcing_and_starts_over_if_it_returns() -> None:
    async def main() -> None:
        pub, sender = Publisher(100), Sender()
        pub.use_root(ROOT)
        lamp = device()
        pub.announce([lamp])
        drain(pub, sender)
        pub.announce([lamp])  # a reconnect is announcing it ...
        pub.forget(lamp)  # ... when it is removed: its tree stops there
        mark = len(sender.sent)
        drain(pub, sender)
        assert all(m.payload == "" for m in sender.sent[mark:])
        pub.announce([lamp])  # it comes back: a new device to apps, init first
        mark = len(sender.sent)
        drain(pub, sender)
        assert sender.sent[mark] == homie.Message(f"{ROOT}/sweet-home/lamp/$state", "init")

    run(main())


@pytest.mark.parametrize("retain", [True, False], ids=["retained", "not-retained"])
def test_a_devices_own_publication_is_cleared_with_it_when_retained(retain: bool) -> None:
    """Clearing a topic publishes an empty retained message: only a retained topic has
    anything on the broker to clear."""
    async def main() -> None:
        pub, sender = Publisher(100), Sender()
        pub.use_root(ROOT)
        extra = f"{ROOT}/sweet-home/lamp/extra/thing"
        pub.enqueue(homie.Message(extra, "1", retain=retain), key=extra, device="lamp")
        drain(pub, sender)
        mark = len(sender.sent)
        pub.forget(device())
        drain(pub, sender)
        if retain:
            assert homie.Message(extra, "") in sender.sent[mark:]
        else:
            assert extra not in sender.topics(mark)

    run(main())


def test_dropping_is_logged_at_the_first_and_every_hundredth(
        caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        box = Outbox(1)
        for i in range(202):
            box.put(Pending(homie.Message(f"{ROOT}/t{i}", ""), i))
        assert box.dropped == 201

    run(main())
    counts = [r.getMessage() for r in caplog.records if "cloud outbox full" in r.getMessage()]
    assert [m.split("dropped ")[1].split(" ")[0] for m in counts] == ["1", "100", "200"]
    assert "(1 entries)" in counts[0]


def test_waiting_publications_of_an_old_account_are_given_up() -> None:
    async def main() -> None:
        pub = Publisher(100)
        pub.use_root(ROOT)
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        pub.enqueue(homie.Message(f"{ROOT}/x", "1"), key="x", done=done)
        pub.use_root(ROOT)  # the same account: nothing is lost
        assert not done.done() and len(pub.outbox) == 1
        pub.use_root("other")
        assert done.result() is False and len(pub.outbox) == 0
        box = Outbox(5)
        waiting: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        box.put(Pending(homie.Message(f"{ROOT}/y", ""), "y", done=waiting))
        box.put(Pending(homie.Message(f"{ROOT}/y", "newer"), "y"))
        assert waiting.result() is False  # replaced by default
        box.clear()
        assert len(box) == 0

    run(main())


def test_a_topic_one_device_clears_stays_owned_by_its_twin() -> None:
    """Devices of one kind share what they remember; clearing a topic of one of them
    leaves the other's topic to be cleared when that device goes."""
    async def main() -> None:
        pub, sender = Publisher(100), Sender()
        pub.use_root(ROOT)
        twins = [homie.Device(i, "Lamp", nodes=[homie.Node("switch", "Switch", properties=[
            homie.Property("level", "Level", datatype="integer", value=5)])])
            for i in ("lamp-a", "lamp-b")]
        pub.announce(twins)
        drain(pub, sender)
        pub.enqueue(homie.Message(f"{ROOT}/sweet-home/lamp-a/switch/level", ""),
                    key="clear", device="lamp-a")
        drain(pub, sender)
        bare_a, bare_b = homie.Device("lamp-a", "Lamp"), homie.Device("lamp-b", "Lamp")
        assert f"{ROOT}/sweet-home/lamp-a/switch/level" not in pub.owned_topics(bare_a)
        assert f"{ROOT}/sweet-home/lamp-b/switch/level" in pub.owned_topics(bare_b)
        mark = len(sender.sent)
        pub.forget(bare_b)
        drain(pub, sender)
        assert f"{ROOT}/sweet-home/lamp-b/switch/level" in sender.topics(mark)

    run(main())


def test_a_full_outbox_drops_expendable_entries_first_oldest_first() -> None:
    """A flood of command errors (expendable) must not push the hub's own values out."""
    async def main() -> None:
        pub = Publisher(4)
        pub.use_root(ROOT)
        loop = asyncio.get_running_loop()
        value = loop.create_future()
        errors = [loop.create_future() for _ in range(3)]
        pub.enqueue(homie.Message(f"{ROOT}/value", "1"), key="value", done=value)
        for i, done in enumerate(errors):
            pub.enqueue(homie.Message(f"{ROOT}/error", str(i)), key=f"e{i}", done=done,
                        expendable=True)
        pub.enqueue(homie.Message(f"{ROOT}/other", "2"), key="other")
        pub.enqueue(homie.Message(f"{ROOT}/third", "3"), key="third")
        assert pub.outbox.dropped == 2
        assert [f.result() for f in errors[:2]] == [False, False]
        assert not value.done() and not errors[2].done()
        waiting = [pub.outbox.pop() for _ in range(4)]
        assert [item.key for item in waiting if item] == ["value", "e2", "other", "third"]

    run(main())


def test_an_expendable_entry_coming_back_is_dropped_before_newer_ones() -> None:
    """An expendable publication put back at the front (its connection was lost) is the
    oldest: the next overflow drops it first."""
    box = Outbox(3)
    for key in ("a", "b"):
        box.put(Pending(homie.Message(f"{ROOT}/{key}", ""), key, expendable=True))
    box.put(Pending(homie.Message(f"{ROOT}/back", ""), "back", expendable=True), front=True)
    box.put(Pending(homie.Message(f"{ROOT}/mine", ""), "mine"))
    assert [box.pop().key for _ in range(3)] == ["a", "b", "mine"]  # type: ignore[union-attr]


def test_an_entry_that_stopped_being_expendable_is_not_dropped_as_one() -> None:
    box = Outbox(2)
    box.put(Pending(homie.Message(f"{ROOT}/l", ""), "l"))
    box.put(Pending(homie.Message(f"{ROOT}/k", "error"), "k", expendable=True))
    box.put(Pending(homie.Message(f"{ROOT}/k", "value"), "k"))  # replaces it, for good
    box.put(Pending(homie.Message(f"{ROOT}/m", ""), "m"))  # one too many: the oldest goes
    assert [box.pop().key for _ in range(2)] == ["k", "m"]  # type: ignore[union-attr]
    # ... and an expendable entry that went out is not dropped again later.
    box.put(Pending(homie.Message(f"{ROOT}/e", ""), "e", expendable=True))
    assert box.pop().key == "e"  # type: ignore[union-attr]
    for key in ("x", "y", "z"):
        box.put(Pending(homie.Message(f"{ROOT}/{key}", ""), key))
    assert box.dropped == 2
    assert [box.pop().key for _ in range(2)] == ["y", "z"]  # type: ignore[union-attr]


def test_publications_are_not_expendable_unless_asked() -> None:
    async def main() -> None:
        pub = Publisher(2)
        pub.use_root(ROOT)
        pub.enqueue(homie.Message(f"{ROOT}/mine", "1"), key="mine")
        pub.enqueue(homie.Message(f"{ROOT}/error", "e"), key="error", expendable=True)
        pub.enqueue(homie.Message(f"{ROOT}/also-mine", "2"), key="also-mine")
        assert [pub.outbox.pop().key for _ in range(2)] == ["mine", "also-mine"]  # type: ignore[union-attr]

    run(main())


def test_a_publication_unacknowledged_past_the_timeout_gives_the_connection_up_once() -> None:
    async def main() -> None:
        now = [100.0]
        pub, sender = Publisher(100, clock=lambda: now[0]), Sender()
        assert pub.ack_timeout == 60.0  # docs/cloud.md: twice the keepalive, 60 s by default
        pub.use_root(ROOT)
        pub.enqueue(homie.Message(f"{ROOT}/x", "1"), key="x")
        pub.pump(sender)  # in flight, and the broker never answers
        now[0] = 160.0
        pub.pump(sender)
        assert sender.drops == []  # not yet: the timeout is not past
        now[0] = 160.5
        pub.pump(sender)
        pub.pump(sender)
        assert sender.drops == ["the broker has not acknowledged a publication for 60 s"]
        pub.pump(None)  # offline: nothing to give up
        # The next connection is watched again.
        pub.connection_lost()
        pub.pump(sender)
        now[0] = 300.0
        pub.pump(sender)
        assert len(sender.drops) == 2

    run(main())


def test_a_withdrawn_publication_leaves_the_outbox_and_costs_no_other_its_place() -> None:
    """A platform request that timed out while offline is withdrawn: it no longer counts
    against the outbox, so a full outbox drops nothing real on its account."""
    async def main() -> None:
        box = Outbox(2)
        request: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        box.put(Pending(homie.Message(f"{ROOT}/req", "{}"), "req", done=request))
        box.put(Pending(homie.Message(f"{ROOT}/a", "1"), "a"))
        request.cancel()
        await asyncio.sleep(0)  # the future's callbacks run on the next turn of the loop
        assert len(box) == 1
        box.put(Pending(homie.Message(f"{ROOT}/b", "2"), "b"))
        assert box.dropped == 0
        assert [box.pop().key for _ in range(2)] == ["a", "b"]  # type: ignore[union-attr]
        # Withdrawn, then replaced by a newer entry for its key before it could leave: the
        # newer entry stays.
        old: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        box.put(Pending(homie.Message(f"{ROOT}/k", "old"), "k", done=old))
        old.cancel()
        box.put(Pending(homie.Message(f"{ROOT}/k", "new"), "k"))
        await asyncio.sleep(0)
        assert box.pop().msg.payload == "new"  # type: ignore[union-attr]

    run(main())



def big(device_id: str = "big") -> homie.Device:
    """A device whose tree is longer than the window, with an event property."""
    nodes = [homie.Node(f"n{n}", properties=[
        *(homie.Property(f"p{p}", datatype="integer", value=0) for p in range(4)),
        homie.Property("press", datatype="string", retained=False)]) for n in range(2)]
    return homie.Device(device_id, "Big", state="init", nodes=nodes)


def update(pub: Publisher, path: str, payload: str, *, retain: bool = True,
           device_id: str = "big") -> None:
    """What the link's set_value / set_state queue for a device."""
    topic = f"{ROOT}/sweet-home/{device_id}/{path}"
    pub.enqueue(homie.Message(topic, payload, retain=retain), key=topic, device=device_id)


def test_a_devices_updates_wait_for_its_tree_and_only_what_it_passed_goes_again() -> None:
    async def main() -> None:
        pub, sender = Publisher(100), Sender()
        pub.use_root(ROOT)
        device = big()
        pub.announce([device])
        pub.pump(sender)  # the window: the start of the tree, n0/p0 among it
        base = f"{ROOT}/sweet-home/big"
        assert f"{base}/n0/p0" in sender.topics() and f"{base}/n1/p3" not in sender.topics()
        # As the link does: the model first, then the publication.
        device.find("n0/p0").set(5)
        update(pub, "n0/p0", "5")  # passed: goes again, after the tree
        device.find("n1/p3").set(7)
        update(pub, "n1/p3", "7")  # not passed yet: the tree carries it
        device.state = "ready"
        update(pub, "$state", "ready")
        update(pub, "n0/press", "single", retain=False)  # an event: after the tree
        pub.pump(sender)
        assert pub.status()["buffered"] == 4  # held, none sent
        drain(pub, sender)
        sent = [(m.topic[len(base) + 1:], m.payload) for m in sender.sent]
        end = sent.index(("$state", "ready"))
        assert sent[0] == ("$state", "init")
        assert sent[end + 1:] == [("n0/p0", "5"), ("n0/press", "single")]
        assert [p for t, p in sent if t == "n1/p3"] == ["7"]
        assert [p for t, p in sent if t == "$state"] == ["init", "ready"]

    run(main())


def test_held_updates_are_bounded_and_given_up_with_their_tree() -> None:
    async def main() -> None:
        pub, sender = Publisher(10), Sender()
        pub.use_root(ROOT)
        pub.announce([big()])
        pub.pump(sender)  # a window of its tree in flight
        for batch in (range(10), range(10, 15)):
            for n in batch:
                update(pub, f"extra/p{n}", str(n))  # none of them in its tree
            pub.acknowledged(next(iter(pub._inflight)))  # room for one more
            pub.pump(sender)  # the outbox is read: its updates are held
        assert pub.status()["buffered"] == 10 and pub.outbox.dropped == 5
        pub.stop_announcing()  # a stop, or a session gone quiet: moot
        assert pub.status()["buffered"] == 0
        pub.announce([big()])
        update(pub, "n0/press", "single", retain=False)
        pub.pump(sender)
        pub.forget(big())  # removed: what it held goes with it, its topics are cleared
        mark = len(sender.sent)
        drain(pub, sender)
        assert all(m.payload == "" for m in sender.sent[mark:])

    run(main())


def test_a_tree_message_paho_refused_goes_before_an_update_of_its_topic() -> None:
    async def main() -> None:
        pub, sender = Publisher(100), Sender()
        pub.use_root(ROOT)
        device = big()
        pub.announce([device])
        sender.refuse = True
        pub.pump(sender)  # "$state init" refused: back to the outbox
        device.state = "ready"
        update(pub, "$state", "ready")
        sender.refuse = False
        drain(pub, sender)
        states = [m.payload for m in sender.sent if m.topic.endswith("big/$state")]
        assert states == ["init", "ready"]

    run(main())


def test_a_stops_goodbyes_go_past_a_full_window_and_the_hubs_own_is_awaited() -> None:
    """A slow broker holds a whole window: the goodbyes still go out (past it), each
    "disconnected", and the stop waits for the last one, the hub's; the next connection has
    the window again, no more."""
    async def main() -> None:
        pub, sender = Publisher(100), Sender()
        pub.use_root(ROOT)
        for i in range(WINDOW + 3):
            pub.enqueue(homie.Message(f"{ROOT}/hub/backlog/p{i}", str(i)), key=i)
        pub.pump(sender)  # a window, never acknowledged
        said = pub.goodbye(["child1", "child2", "hub"])
        pub.pump(sender)
        home = f"{ROOT}/sweet-home"
        assert sender.sent[WINDOW:] == [homie.Message(f"{home}/{d}/$state", "disconnected")
                                        for d in ("child1", "child2", "hub")]
        for mid in (WINDOW + 1, WINDOW + 2):  # the children's
            assert pub.acknowledged(mid) and not said.done()
        assert pub.acknowledged(WINDOW + 3) and said.result() is True
        pub.connection_lost()
        mark = len(sender.sent)
        pub.pump(sender)
        assert sender.topics(mark) == [f"{ROOT}/hub/backlog/p{i}" for i in range(WINDOW)]

    run(main())


def test_publications_coming_back_into_a_full_outbox_drop_the_oldest_and_count() -> None:
    """After a lost connection the unacknowledged publications go back ahead of everything:
    when they alone overflow the outbox, the oldest of them is dropped (and counted)."""
    async def main() -> None:
        pub, sender = Publisher(2), Sender()
        pub.use_root(ROOT)
        loop = asyncio.get_running_loop()
        done = [loop.create_future() for _ in range(3)]
        for i in range(3):
            pub.enqueue(homie.Message(f"{ROOT}/t{i}", str(i)), key=i, done=done[i])
            pub.pump(sender)  # in flight, never acknowledged
        pub.connection_lost()
        assert pub.outbox.dropped == 1 and done[0].result() is False
        mark = len(sender.sent)
        drain(pub, sender)
        assert sender.topics(mark) == [f"{ROOT}/t1", f"{ROOT}/t2"]
        assert [f.result() for f in done[1:]] == [True, True]

    run(main())


def test_withdrawn_entries_leave_without_an_error_and_their_places_are_free(
        caplog: pytest.LogCaptureFixture) -> None:
    """A withdrawn request (its caller was told "timeout") leaves the outbox with no error in
    the log, and a withdrawn expendable entry is no longer dropped first: the next overflow
    drops the oldest real entry, as it should."""
    async def main() -> None:
        box = Outbox(2)
        loop = asyncio.get_running_loop()
        request, error = loop.create_future(), loop.create_future()
        box.put(Pending(homie.Message(f"{ROOT}/req", "{}"), "req", done=request))
        box.put(Pending(homie.Message(f"{ROOT}/error", "e"), "e", done=error, expendable=True))
        request.cancel()
        error.cancel()
        await asyncio.sleep(0)  # the futures' callbacks run on the next turn of the loop
        assert len(box) == 0
        for key in ("a", "b", "c"):
            box.put(Pending(homie.Message(f"{ROOT}/{key}", ""), key))
        assert box.dropped == 1
        assert [box.pop().key for _ in range(2)] == ["b", "c"]  # type: ignore[union-attr]

    run(main())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_a_forget_before_any_account_publishes_nothing() -> None:
    """A child removed before the hub is paired: no account, so nothing to clear."""
    async def main() -> None:
        pub = Publisher(10)
        pub.forget(device())
        assert len(pub.outbox) == 0 and pub.idle.is_set()

    run(main())


def test_held_updates_past_the_bound_drop_the_oldest_change_not_the_newest() -> None:
    async def main() -> None:
        pub, sender = Publisher(3), Sender()
        pub.use_root(ROOT)
        pub.announce([big()])
        pub.pump(sender)  # a window of its tree in flight
        loop = asyncio.get_running_loop()
        futures = {name: loop.create_future() for name in ("a1", "b", "c", "a2", "d")}
        for batch in (("a1", "b", "c"), ("a2", "d")):
            for name in batch:
                topic = f"{ROOT}/sweet-home/big/extra/{name[0]}"
                pub.enqueue(homie.Message(topic, name), key=topic, device="big",
                            done=futures[name])
            pub.acknowledged(next(iter(pub._inflight)))  # room for one more
            pub.pump(sender)  # the outbox is read: its updates are held
        # a changed again: its newer value is the newest held; b, the oldest, is dropped.
        assert pub.outbox.dropped == 1 and pub.status()["buffered"] == 3
        drain(pub, sender)
        extra = [m.payload for m in sender.sent if "/extra/" in m.topic]
        assert extra == ["c", "a2", "d"]
        assert {n: f.result() for n, f in futures.items()} == {
            "a1": False, "b": False, "c": True, "a2": True, "d": True}

    run(main())


def test_a_held_update_the_tree_carries_or_a_stop_gives_up_is_never_sent() -> None:
    """Its owner hears False: the tree rendered the model's latest value of its topic, or
    the session stopped (events as well: the next session's apps get the device afresh)."""
    async def main() -> None:
        pub, sender = Publisher(100), Sender()
        pub.use_root(ROOT)
        device = big()
        pub.announce([device])
        pub.pump(sender)
        loop = asyncio.get_running_loop()
        carried, pressed = loop.create_future(), loop.create_future()
        device.find("n1/p3").set(7)
        topic = f"{ROOT}/sweet-home/big/n1/p3"
        pub.enqueue(homie.Message(topic, "7"), key=topic, device="big", done=carried)
        pub.acknowledged(next(iter(pub._inflight)))
        pub.pump(sender)
        drain(pub, sender)
        assert carried.result() is False  # the tree sent "7" itself, once
        assert [m.payload for m in sender.sent if m.topic == topic] == ["7"]
        pub.connection_lost()
        pub.announce([device])  # the next session's tree
        pub.pump(sender)
        press = f"{ROOT}/sweet-home/big/n0/press"
        pub.enqueue(homie.Message(press, "single", retain=False), key=press, device="big",
                    done=pressed)
        pub.acknowledged(next(iter(pub._inflight)))
        pub.pump(sender)
        assert pub.status()["buffered"] == 1  # held
        pub.stop_announcing()
        assert pub.status()["buffered"] == 0 and pressed.result() is False
        pub.announce([device])
        drain(pub, sender)
        assert press not in sender.topics()

    run(main())


def test_a_device_redescribed_while_its_tree_goes_out_keeps_its_lost_property_cleared(
        ) -> None:
    """As the link replaces a device: the topics the new description lost are cleared and
    the tree starts over. A held value of a lost property must not bring its topic back
    after the tree; a held event still goes out, after it."""
    async def main() -> None:
        pub, sender = Publisher(100), Sender()
        pub.use_root(ROOT)
        old = big()
        pub.announce([old])
        pub.pump(sender)  # n0/p0 among the start of the tree
        old.find("n0/p0").set(5)
        update(pub, "n0/p0", "5")
        update(pub, "n1/press", "single", retain=False)
        pub.acknowledged(next(iter(pub._inflight)))
        pub.pump(sender)
        assert pub.status()["buffered"] == 2  # held
        new = homie.Device("big", "Big", state="init", nodes=[homie.Node("n1", properties=[
            homie.Property("press", datatype="string", retained=False)])])
        pub.clear_topics(pub.owned_topics(old) - new.topics(ROOT))
        pub.announce([new])
        mark = len(sender.sent)
        drain(pub, sender)
        base = f"{ROOT}/sweet-home/big"
        after = sender.sent[mark:]
        assert [m.payload for m in after if m.topic == f"{base}/n0/p0"] == [""]
        assert after[-2:] == [homie.Message(f"{base}/$state", "init"),
                              homie.Message(f"{base}/n1/press", "single", retain=False)]

    run(main())


def test_another_devices_coming_and_going_leaves_a_devices_held_updates_alone() -> None:
    async def main() -> None:
        pub, sender = Publisher(100), Sender()
        pub.use_root(ROOT)
        lamp = big("lamp")
        pub.announce([lamp])
        pub.pump(sender)  # n0/p0 among the start of its tree
        lamp.find("n0/p0").set(5)
        update(pub, "n0/p0", "5", device_id="lamp")
        pub.acknowledged(next(iter(pub._inflight)))
        pub.pump(sender)  # held: the tree had passed it
        other = big("other")
        pub.announce([other])  # another device joins ...
        pub.forget(other)  # ... and is removed again
        drain(pub, sender)
        base = f"{ROOT}/sweet-home/lamp"
        lamp_sent = [(m.topic, m.payload) for m in sender.sent if m.topic.startswith(base)]
        assert [p for t, p in lamp_sent if t == f"{base}/n0/p0"] == ["0", "5"]
        assert lamp_sent[-2:] == [(f"{base}/$state", "init"), (f"{base}/n0/p0", "5")]

    run(main())


def test_a_factory_reset_makes_the_next_announcing_session_start_each_device_from_init(
        ) -> None:
    """Sessions of the same account announce devices again without init (apps see a
    reconnect); after start_afresh, the first session that announces (not the quiet one
    that releases the account) starts each from init, once."""
    async def main() -> None:
        pub, sender = Publisher(100), Sender()
        lamp = device()
        init = homie.Message(f"{ROOT}/sweet-home/lamp/$state", "init")

        def session(*, quiet: bool = False) -> list[homie.Message]:
            pub.connection_lost()
            if quiet:
                pub.use_root(ROOT, announcing=False)
                return []
            pub.use_root(ROOT)
            pub.announce([lamp])
            mark = len(sender.sent)
            drain(pub, sender)
            return sender.sent[mark:]

        assert session()[0] == init
        assert init not in session()
        pub.start_afresh()
        session(quiet=True)  # the release after a reset: nothing announced
        assert session()[0] == init
        assert init not in session()

    run(main())


def test_a_devices_tree_is_out_once_it_has_gone_out_whole() -> None:
    """What the link's heartbeat asks: a device is heard of only after its tree."""
    async def main() -> None:
        pub, sender = Publisher(100), Sender()
        pub.use_root(ROOT)
        device = big()
        assert not pub.tree_out("big")
        pub.announce([device])
        pub.pump(sender)  # part of it
        assert not pub.tree_out("big")
        drain(pub, sender)
        assert pub.tree_out("big") and not pub.tree_out("other")
        pub.announce([device])  # going out again
        assert not pub.tree_out("big")
        drain(pub, sender)
        assert pub.tree_out("big")
        pub.forget(device)
        assert not pub.tree_out("big")

    run(main())
