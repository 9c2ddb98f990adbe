"""The order an app subscriber sees a device in, against a real mosquitto (docs/interfaces.md
§8.2): ``$state = init`` for a new device, its whole retained tree, then its state and
values; its heartbeat only after that; nothing it still has deleted on the way.

The app here subscribes with QoS 0, as the review's did: the broker then hands it every
message in the order the hub sent them (with QoS 1 a broker may let a QoS 0 heartbeat
overtake QoS 1 messages queued behind its in-flight limit for the subscriber).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from gatewayd import homie
from gatewayd.cloud.ownership import Ownership
from gatewayd.cloud.publisher import WINDOW
from gatewayd.credentials import mqtt_username
from gatewayd.simulator.broker import PLATFORM_USER, Broker
from gatewayd.simulator.platform import SimPlatform
from tests.cloud_helpers import (
    HUB_ID,
    WSP,
    Monitor,
    Received,
    creds_for,
    fast_config,
    make_child,
    make_link,
    run,
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]

ROOT = mqtt_username(WSP)


def base(device_id: str = HUB_ID) -> str:
    return f"{ROOT}/sweet-home/{device_id}"


class AppView(Monitor):
    """A subscriber to everything, with QoS 0."""

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        client.subscribe(self.topic, qos=0)


def seen(messages: list[Received], device_id: str) -> list[tuple[str, str]]:
    """What the app saw of one device, in order: (topic below the device, payload),
    heartbeats left out."""
    prefix = f"{base(device_id)}/"
    return [(m.topic[len(prefix):], m.text) for m in messages
            if m.topic.startswith(prefix) and not m.topic.endswith("/$heartbeat")]


def tree_end(view: list[tuple[str, str]]) -> int:
    """Where the device's tree ends: its first ``$state`` other than ``init``."""
    return next(i for i, (t, p) in enumerate(view) if t == "$state" and p != "init")


def assert_announced_in_order(view: list[tuple[str, str]], device: homie.Device) -> None:
    assert view[0] == ("$state", "init"), f"{device.id}: first seen {view[:3]}"
    end = tree_end(view)
    assert ("$state", "init") not in view[1:], f"{device.id}: init again: {view}"
    prefix = f"{device.base(ROOT)}/"
    tree = {m.topic[len(prefix):] for m in device.messages(ROOT)}
    missing = tree - {t for t, _ in view[:end]}
    assert not missing, f"{device.id}: {view[end]} before {sorted(missing)}"
    for path, _ in device.paths():
        values = [i for i, (t, _) in enumerate(view) if t == path]
        datatype = view.index((f"{path}/$datatype", device.find(path).datatype.value))
        assert not values or values[0] > datatype, f"{device.id}: {path} before $datatype"


def big_device(device_id: str) -> homie.Device:
    """A device whose tree is longer than the window: it cannot go out at once."""
    nodes = [homie.Node(f"n{n}", f"Node {n}", properties=[
        homie.Property(f"p{p}", f"P{p}", datatype="integer", value=0) for p in range(4)])
        for n in range(2)]
    device = homie.Device(device_id, "Big", state="init", nodes=nodes)
    assert len(list(device.messages(ROOT))) > WINDOW
    return device


def small_device(device_id: str) -> homie.Device:
    return homie.Device(device_id, "Small", state="init", nodes=[homie.Node("n0", properties=[
        homie.Property("p0", datatype="integer", value=0)])])


@pytest.fixture
def platform(broker: Broker, tmp_path: Path) -> Iterator[SimPlatform]:
    """The platform, to hear of a release (a reset while online tells it)."""
    sim = SimPlatform(broker.host, broker.port, PLATFORM_USER, broker.platform_password,
                      tmp_path / "platform.json").start()
    yield sim
    sim.stop()


def test_devices_added_while_connected_go_init_tree_then_their_values(broker: Broker) -> None:
    """A device added while connected, with a tree longer than the window (or queued behind
    another's), whose owner sets values and ``ready`` at once: apps saw ``ready`` before
    the device's attributes, a value before its ``$datatype``, then ``init`` after all."""
    big, small = big_device("virtual-big"), small_device("virtual-small")

    async def main() -> list[Received]:
        link = make_link()
        with AppView(broker) as app:
            await link.start(creds_for(broker))
            await app.await_for(f"{base()}/$state", "ready")
            assert await link.flush(5)  # the window is empty: the first WINDOW go at once
            mark = app.mark()
            link.add_device(big)  # WINDOW messages of its tree go out now, n0/p0 among them
            link.add_device(small)  # its tree waits for big's
            link.set_value(big.id, "n0", "p0", 5)  # a topic its tree has passed ...
            link.set_value(big.id, "n1", "p3", 7)  # ... and one it has not
            link.set_state(big.id, "ready")
            link.set_value(small.id, "n0", "p0", 3)
            link.set_state(small.id, "ready")
            await app.await_for(f"{base(small.id)}/$state", "ready", mark=mark)
            await app.await_for(f"{base(big.id)}/n0/p0", "5", mark=mark)
            await link.stop()
            return app.since(mark)

    messages = run(main())
    big_view, small_view = seen(messages, big.id), seen(messages, small.id)
    assert_announced_in_order(big_view, big)
    assert_announced_in_order(small_view, small)
    assert [p for t, p in big_view if t == "$state"][:2] == ["init", "ready"]
    assert [p for t, p in small_view if t == "$state"][:2] == ["init", "ready"]
    # The value its tree had passed goes out after the tree; the one it had not, in it.
    end = tree_end(big_view)
    assert [(i > end, p) for i, (t, p) in enumerate(big_view) if t == "n0/p0"] == \
        [(False, "0"), (True, "5")]
    assert [p for t, p in big_view if t == "n1/p3"] == ["7"]
    assert [p for t, p in small_view if t == "n0/p0"] == ["3"]


def test_a_replaced_child_keeps_the_localip_it_gets_from_the_hub(broker: Broker) -> None:
    """A Zigbee join, rejoin or re-interview replaces the child's description with one
    that has no address of its own: its ``$localip`` was deleted, then published again."""
    async def main() -> list[Received]:
        link = make_link()
        link.add_device(make_child())
        with AppView(broker) as app:
            await link.start(creds_for(broker))
            await app.await_for(f"{base('virtual-lamp')}/$state", "ready")
            mark = app.mark()
            again = make_child()
            again.localip = again.mac = ""  # the hub fills them in
            link.add_device(again)
            await app.await_for(f"{base('virtual-lamp')}/$state", "ready", mark=mark)
            await link.stop()
            return app.since(mark)

    view = seen(run(main()), "virtual-lamp")
    assert [p for t, p in view if t == "$localip"] == ["127.0.0.1"]
    assert [p for t, p in view if t == "$mac"] == ["aa:bb:cc:dd:ee:ff"]
    assert not [t for t, p in view if p == ""], view


@pytest.mark.parametrize("online", [True, False], ids=["online", "offline"])
def test_a_re_pair_after_a_reset_starts_every_device_from_init(
        broker: Broker, platform: SimPlatform, online: bool) -> None:
    """A factory reset, then a pairing to the same account: the hub is a new one to the
    account's apps. Its trees went out without ``init``, the hub ``ready`` at once."""
    link, child = make_link(), make_child()
    link.add_device(child)

    async def main() -> list[Received]:
        creds = creds_for(broker)
        with AppView(broker) as app:
            await link.start(creds)
            await app.await_for(f"{base(child.id)}/$state", "ready")
            if not online:
                await link.stop()  # the cloud out of reach at the reset
            ownership = Ownership(link, timeout=3.0)
            released = await ownership.release_at_reset(await ownership.to_release(creds))
            assert released is online and not link.connected
            # The release's clearings reached the broker before this marker: the app has
            # seen them once it sees the marker.
            await asyncio.to_thread(app.publish, f"{ROOT}/test-marker", "reset")
            await app.await_for(f"{ROOT}/test-marker", "reset")
            mark = app.mark()  # the link is stopped: nothing else comes meanwhile
            await link.start(creds)  # the pairing's cloud step, same account
            await app.await_for(f"{base(child.id)}/$state", "ready", mark=mark)
            await app.await_for(f"{base()}/$state", "ready", mark=mark)
            await link.stop()
            return app.since(mark)

    messages = run(main())
    assert_announced_in_order(seen(messages, HUB_ID), link.hub)
    assert_announced_in_order(seen(messages, child.id), child)


def test_no_device_beats_before_its_tree_is_out(broker: Broker) -> None:
    """At a connect (a pairing, a reconnect) the heartbeats began at once, while the
    trees waited for the window: apps heard of a device before its ``$state``."""
    children = [make_child(f"virtual-lamp-{n}") for n in range(2)]

    async def main() -> list[Received]:
        link = make_link(fast_config(heartbeat_interval=0.2))
        for device in children:
            link.add_device(device)
        with AppView(broker) as app:
            await link.start(creds_for(broker))
            for device in [link.hub, *children]:
                await app.await_for(f"{base(device.id)}/$heartbeat")
            await link.stop()
            return app.since()

    messages = run(main())
    for device_id in [HUB_ID, *(c.id for c in children)]:
        topics = [m.topic for m in messages]
        first_beat = topics.index(f"{base(device_id)}/$heartbeat")
        ready = next(i for i, m in enumerate(messages)
                     if m.topic == f"{base(device_id)}/$state" and m.text != "init")
        assert ready < first_beat, f"{device_id}: a heartbeat before its tree was out"
