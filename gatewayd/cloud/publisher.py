"""What the cloud link sends, in what order, within what bounds.

Two sources feed one QoS 1 window of ``WINDOW`` unacknowledged publications:

* the **outbox** (:class:`Outbox`): everything that is not a device's retained tree
  (non-retained values, notifications, command errors, REQ/RES requests, topic clearings).
  It is bounded; a newer payload for the same key replaces the older one in place, and when
  it is full the oldest entry is dropped and counted, the oldest *expendable* one first (an
  error answering someone else's command): a flood of bad commands from the cloud must not
  push the hub's own values and requests out;
* the **trees**: after every (re)connect each device's retained tree, rendered lazily from
  the model, so a value changed while offline goes out once, the latest.

The outbox goes first, but for a device's own updates (its values and ``$state``) while
its tree is still to go out: apps must see ``$state = init`` (a new device), the whole tree,
then its state and values, never a value before its ``$datatype`` or a ``ready`` before the
device's attributes. Those are held (:class:`Held`, bounded like the outbox) until the
tree is out; the tree renders the latest value of each topic as it passes it, so what it
passes supersedes what is held for that topic, and only updates of topics it had already
passed go out after it. A tree's messages cut short by a lost connection are not sent
again: the tree itself goes out again, whole.

A publication the broker has not acknowledged within
``ack_timeout`` means the broker lost it or its PUBACK (mosquitto drops every packet to a
client whose outgoing queue is full, PUBACKs included, since its fix for CVE-2023-28366):
paho never sends it again within the session, so the window would stay full for as long
as the connection lives. The publisher then has the connection dropped; after the
reconnect everything unacknowledged goes out again, but for what its owner withdrew
(cancelled its ``done``; see :class:`Pending`).

:class:`Publisher` also remembers which retained topics each device has on the broker, so
a removed device (or a property that no longer exists) can be cleared. Everything here
runs on the asyncio loop; paho is reached through the
:class:`~gatewayd.cloud.net.Connection` the link passes to :meth:`Publisher.pump`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from gatewayd import homie
from gatewayd.cloud.retained import RetainedSuffixes

log = logging.getLogger(__name__)

WINDOW = 32  # unacknowledged QoS 1 publications at a time


@dataclass(eq=False)
class Pending:
    """One publication waiting to go out or to be acknowledged."""

    msg: homie.Message
    key: Hashable
    device: str | None = None  # set for messages of a device's retained tree
    # Resolved True on PUBACK, False if dropped. Its owner cancels it to withdraw the
    # publication: a platform request whose caller was told "timeout" must not reach the
    # platform after all, from the outbox or sent again after a connection loss.
    done: asyncio.Future[bool] | None = None
    expendable: bool = False  # dropped first when the outbox is full
    sent_at: float = 0.0  # when it went to paho (in flight)
    first: bool = False  # put ahead of the backlog (a stop's goodbye): dropped last
    tree: bool = False  # a message of its device's retained tree

    @property
    def withdrawn(self) -> bool:
        return self.done is not None and self.done.cancelled()

    def resolve(self, delivered: bool) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(delivered)


class Outbox:
    """Publications waiting for the connection or for room in the window. Bounded.

    Entries with the same key coalesce (a newer payload for a property replaces the older
    one in place). When full, the oldest expendable entry is dropped and counted, or if
    there is none the oldest entry.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.dropped = 0
        self._items: OrderedDict[Hashable, Pending] = OrderedDict()
        self._expendable: OrderedDict[Hashable, None] = OrderedDict()  # keys, oldest first

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Pending, *, replace: bool = True, front: bool = False) -> None:
        old = self._items.get(item.key)
        if old is not None:
            if not replace:
                return  # a newer entry is already waiting
            old.resolve(False)
        self._items[item.key] = item
        self._expendable.pop(item.key, None)
        if item.done is not None:
            # A withdrawn entry leaves at once: waiting for pop() would let it hold a place
            # that a real publication loses when the outbox is full.
            item.done.add_done_callback(lambda _: self._leave_if_withdrawn(item))
        if item.expendable:
            self._expendable[item.key] = None
            if front:
                self._expendable.move_to_end(item.key, last=False)
        if front:
            item.first = True
            self._items.move_to_end(item.key, last=False)
        while len(self._items) > self.limit:
            if self._expendable:
                evicted = self._items.pop(self._expendable.popitem(last=False)[0])
            else:
                # The oldest of the backlog: what was put ahead of it (at the front, so
                # "oldest" by position) is what must go out.
                key = next((k for k, p in self._items.items() if not p.first), None)
                evicted = (self._items.pop(key) if key is not None
                           else self._items.popitem(last=False)[1])
            self.count_dropped(evicted)

    def count_dropped(self, evicted: Pending) -> None:
        evicted.resolve(False)
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 100 == 0:
            log.warning("cloud outbox full (%d entries): dropped %d publication(s) so far, "
                        "oldest first", self.limit, self.dropped)

    def _leave_if_withdrawn(self, item: Pending) -> None:
        if item.withdrawn and self._items.get(item.key) is item:
            del self._items[item.key]
            self._expendable.pop(item.key, None)

    def pop(self) -> Pending | None:
        """The oldest entry that is still wanted (withdrawn ones are skipped and forgotten)."""
        while self._items:
            item = self._items.popitem(last=False)[1]
            self._expendable.pop(item.key, None)
            if not item.withdrawn:
                return item
        return None

    def clear(self) -> None:
        for item in self._items.values():
            item.resolve(False)
        self._items.clear()
        self._expendable.clear()


class Held:
    """A device's own updates waiting for its tree to go out (see the module doc).

    Keyed by device and key, like the outbox (a newer payload replaces the older one), and
    bounded by the outbox's limit: past it the oldest is dropped and counted as the
    outbox's. The link keys a device's retained updates by topic, as its tree's messages.
    """

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox
        self._items: OrderedDict[tuple[str, Hashable], Pending] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def hold(self, item: Pending) -> None:
        assert item.device is not None
        key = (item.device, item.key)
        old = self._items.pop(key, None)
        if old is not None and old is not item:
            old.resolve(False)
        self._items[key] = item
        if len(self._items) > self._outbox.limit:
            self._outbox.count_dropped(self._items.popitem(last=False)[1])

    def superseded(self, device_id: str, msg: homie.Message) -> None:
        """The tree just rendered ``msg`` from the model: what is held for its topic is
        older."""
        held = self._items.get((device_id, msg.topic))
        if held is not None and held.msg.retain and held.msg.topic == msg.topic:
            del self._items[(device_id, msg.topic)]
            held.resolve(False)

    def release(self, device_id: str) -> None:
        """The device's tree is out: its held updates go to the outbox, oldest first (one
        waiting there for the same key is newer and stays)."""
        for key in [key for key in self._items if key[0] == device_id]:
            self._outbox.put(self._items.pop(key), replace=False)

    def drop(self, device_id: str | None = None, *, retained_only: bool = False) -> None:
        """Give up what is held (for ``device_id``; only its retained updates: a tree that
        starts over renders each of their topics anew)."""
        for key, item in list(self._items.items()):
            if device_id in (None, key[0]) and (item.msg.retain or not retained_only):
                del self._items[key]
                item.resolve(False)


class Sender(Protocol):
    """What the publisher needs from the connection: a QoS publish that answers its
    message id, or None when paho cannot take it now."""

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> int | None: ...

    def drop(self, reason: str) -> None:
        """Give the connection up (and make a new one): it lost an acknowledgement."""


class Publisher:
    """The outbox, the retained trees and the window in flight, for one root topic."""

    def __init__(self, limit: int, ack_timeout: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.outbox = Outbox(limit)
        self.ack_timeout = ack_timeout
        self._clock = clock
        self._dropping = False  # this connection was given up: wait for its end
        self._extra = 0  # publications let past the window (a stop's goodbyes)
        self.root = ""
        self._trees: OrderedDict[str, Iterator[homie.Message]] = OrderedDict()
        self._inflight: dict[int, Pending] = {}
        # Retained topics sent, per device, after the device's base (``.../<id>/``):
        # interned strings, in sets that the devices of one kind share.
        self._published = RetainedSuffixes()
        self._announced: set[str] = set()  # devices that went through $state=init once
        self._afresh = False  # a factory reset: the next announcing session forgets that
        self._held = Held(self.outbox)
        self.idle = asyncio.Event()  # nothing waiting and nothing in flight
        self.idle.set()

    def use_root(self, root: str, *, announcing: bool = True) -> None:
        """Another account: nothing of the old one carries over. The first session that
        announces devices after :meth:`start_afresh` announces each as new, even to the
        same account."""
        if root != self.root:
            self._published.clear()
            self._announced.clear()
            self.outbox.clear()
            self._held.drop()
        if announcing and self._afresh:
            self._announced.clear()
            self._afresh = False
        self.root = root

    def start_afresh(self) -> None:
        """A factory reset: the next pairing is a new hub to apps, ``$state = init`` first
        for every device, even with the same account (a reset released or not, the
        account's apps must not take the re-paired hub for a reconnect)."""
        self._afresh = True

    def tree_out(self, device_id: str) -> bool:
        """Whether the device's tree has gone out, and is not going out again now."""
        return device_id in self._announced and device_id not in self._trees

    # ---- what to send ---------------------------------------------------------------------

    def enqueue(self, msg: homie.Message, *, key: Hashable, device: str | None = None,
                done: asyncio.Future[bool] | None = None, replace: bool = True,
                front: bool = False, expendable: bool = False) -> None:
        # Whatever the caller, the hub publishes only inside its own tree (the broker's
        # ACL would silently drop anything else).
        if not self.root or not msg.topic.startswith(f"{self.root}/"):
            raise ValueError(f"refusing to publish outside {self.root}/#: {msg.topic!r}")
        if device is not None and not msg.topic.startswith(self._prefix(device)):
            raise ValueError(f"{msg.topic!r} is not a topic of device {device!r}")
        self.outbox.put(Pending(msg, key, device, done, expendable), replace=replace,
                        front=front)
        self.idle.clear()

    def announce(self, devices: Iterable[homie.Device]) -> None:
        """Send these devices' retained trees (again), in this order, after the outbox."""
        for device in devices:
            self._trees[device.id] = self._tree(device)
            self._held.drop(device.id, retained_only=True)  # its tree carries the latest

    def stop_announcing(self) -> None:
        self._trees.clear()
        self._held.drop()  # moot too: the next session announces every device again

    def forget(self, device: homie.Device) -> None:
        """A removed device: its tree stops, and its retained topics are cleared."""
        self._trees.pop(device.id, None)
        self._held.drop(device.id)
        self._announced.discard(device.id)
        if self.root:
            self.clear_topics(self.owned_topics(device))
            self._published.pop(device.id)

    def owned_topics(self, device: homie.Device) -> set[str]:
        prefix = self._prefix(device.id)
        sent = {prefix + suffix for suffix in self._published.get(device.id)}
        return sent | device.topics(self.root)

    def _prefix(self, device_id: str) -> str:
        return f"{homie.device_base(self.root, device_id)}/"

    def _sent(self, device_id: str, topic: str, present: bool) -> None:
        prefix = self._prefix(device_id)
        if not topic.startswith(prefix):
            return  # sent for another account (in flight when the root changed)
        suffix = sys.intern(topic[len(prefix):])
        if present:
            self._published.add(device_id, suffix)
        else:
            self._published.discard(device_id, suffix)

    def clear_topics(self, topics: set[str]) -> None:
        # An empty retained message deletes a retained topic. $state goes first so that
        # apps stop showing the device before its attributes vanish.
        for topic in sorted(topics, key=lambda t: (not t.endswith("/$state"), t)):
            self.enqueue(homie.Message(topic, ""), key=topic)

    def goodbye(self, device_ids: list[str]) -> asyncio.Future[bool]:
        """``$state = disconnected`` for ``device_ids``, in this order, ahead of everything
        waiting and past the window (the caller makes room for them at the connection): a
        backlog that a slow broker holds up must not keep a stop's goodbyes from it. The
        last one's acknowledgement."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        topics = [f"{homie.device_base(self.root, d)}/$state" for d in device_ids]
        for topic in reversed(topics):  # each goes to the front: the first one last
            self.enqueue(homie.Message(topic, "disconnected"), key=topic, front=True,
                         done=done if topic == topics[-1] else None)
        self._extra = len(topics)
        return done

    def _tree(self, device: homie.Device) -> Iterator[homie.Message]:
        base = device.base(self.root)
        if device.id not in self._announced:
            yield homie.Message(f"{base}/$state", "init")
        yield from device.messages(self.root)
        yield homie.Message(f"{base}/$state", device.state)  # read now: the latest state
        self._announced.add(device.id)

    def _next_item(self) -> Pending | None:
        while True:  # each turn sends something or finishes a tree
            while (item := self.outbox.pop()) is not None:
                if item.tree or item.device not in self._trees:
                    return item
                self._held.hold(item)  # after its device's tree, unless the tree carries it
            if not self._trees:
                return None
            device_id, tree = next(iter(self._trees.items()))
            msg = next(tree, None)
            if msg is not None:
                self._held.superseded(device_id, msg)
                # Its own key: one paho refused goes back to the outbox, where it must
                # not give way to an update of its topic (that one follows the tree).
                return Pending(msg, ("tree", msg.topic), device_id, tree=True)
            del self._trees[device_id]
            self._held.release(device_id)  # what its tree had passed: now, after it

    # ---- the window -----------------------------------------------------------------------

    def pump(self, sender: Sender | None) -> None:
        """Hand publications to paho while the window has room (``sender`` None: offline)."""
        if sender is not None and self._inflight and not self._dropping:
            waited = self._clock() - next(iter(self._inflight.values())).sent_at
            if waited > self.ack_timeout:
                self._dropping = True
                sender.drop(f"the broker has not acknowledged a publication for {waited:.0f} s")
        while sender is not None and len(self._inflight) < WINDOW + self._extra:
            item = self._next_item()
            if item is None:
                break
            msg = item.msg
            mid = sender.publish(msg.topic, msg.payload.encode(), msg.qos, msg.retain)
            if mid is None:
                self.outbox.put(item, replace=False, front=True)
                break
            item.sent_at = self._clock()
            self._inflight[mid] = item
            if item.device is not None and msg.retain:
                self._sent(item.device, msg.topic, bool(msg.payload))
        if not self.outbox and not self._trees and not self._inflight and not self._held:
            self.idle.set()
        else:
            self.idle.clear()

    async def flush(self, timeout: float) -> bool:
        """Wait until idle; False if that took longer than ``timeout``."""
        try:
            await asyncio.wait_for(self.idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def acknowledged(self, mid: int) -> bool:
        """The broker's PUBACK for ``mid``; whether it was ours (then pump again)."""
        item = self._inflight.pop(mid, None)
        if item is None:
            return False
        item.resolve(True)
        return True

    def connection_lost(self) -> None:
        """Unacknowledged publications go back to the front of the outbox, oldest first (a
        newer entry for the same key wins, a withdrawn one is not sent again); retained
        trees restart after the reconnect, whole (the link announces every device again),
        so a tree's own messages are not sent again on their own."""
        for item in reversed(list(self._inflight.values())):
            if not item.withdrawn and not item.tree:
                self.outbox.put(item, replace=False, front=True)
        self._inflight.clear()
        self._trees.clear()
        self._dropping = False
        self._extra = 0

    def status(self) -> dict[str, Any]:
        return {"buffered": len(self.outbox) + len(self._held),
                "announcing": len(self._trees),  # devices whose tree is still going out
                "in_flight": len(self._inflight)}
