"""Clearing what an earlier run of the hub published and this one no longer has.

The link clears what it knows it published (a removed device, the topics a replacement no
longer has), but it knows that for one run only. A ``[[virtual]]`` entry deleted from the
configuration, or turned from a command sensor into a switch, stayed on the broker for
good: the app showed the dropped device as ``disconnected``, or a node that ``$nodes`` no
longer names. :mod:`~gatewayd.cloud.published` remembers across restarts which children
were published under each account and the shape of each one's tree; at every connection,
and whenever a child is added while connected, this module compares that with what the
hub has now:

* A recorded child of a kind the hub knows completely at start (:meth:`StaleTopics.owns_all`:
  the virtual devices, which are exactly the configured ones) that is no longer there is
  handed to :mod:`~gatewayd.cloud.leftovers` as removed: its retained topics are cleared,
  ``$state`` first, and until then a reset's release names it. A Zigbee child is not of
  such a kind: one that merely was not restored at a start (the radio down) stays.
* A child whose tree has another shape than recorded has its retained topics asked of the
  broker (:mod:`~gatewayd.cloud.sweep`), and those its present tree does not have are
  cleared (never a ``/set`` topic: the hub would hear the clearing as a command). The new
  shape is recorded once the broker acknowledged the clearings; until then every
  connection asks again.
* A child not recorded yet under a root the record knows is recorded: it is new, nothing
  of it can be stale. Under a root the record did not know when this run first connected
  to it (the first start after an upgrade from a release without the record, 0.1.2 or
  older, or a lost file), every child not recorded is first compared with what the
  broker keeps, as a changed one is: an earlier release may have published it with
  another tree. It is recorded as :data:`~gatewayd.cloud.published.UNSWEPT` until then,
  so a comparison that did not finish is done again at the next connection.

The hub's own device is not tracked (components that start after the connection complete
its tree: the Zigbee node), and nothing happens in a quiet session (an old account being
released, :mod:`~gatewayd.cloud.ownership`). Runs on the loop; one pass at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from gatewayd import homie
from gatewayd.cloud.attempts import CloudOutcome, CloudResult
from gatewayd.cloud.leftovers import BATCH, MARKER, TIMEOUT, Leftovers
from gatewayd.cloud.link import CloudLink
from gatewayd.cloud.passes import Passes
from gatewayd.cloud.published import UNSWEPT, PublishedDevices, shape
from gatewayd.cloud.sweep import retained_topics
from gatewayd.cloud.topics import matches
from gatewayd.state import StateStore

log = logging.getLogger(__name__)


class StaleTopics:
    """Compares the children the hub has with what earlier runs published, and clears the
    difference. Hooks into the link's child events after whatever hook it already has."""

    def __init__(self, link: CloudLink, store: StateStore, leftovers: Leftovers,
                 record: PublishedDevices, *, timeout: float = TIMEOUT) -> None:
        self.link = link
        self.store = store
        self.leftovers = leftovers
        self.record = record
        self.timeout = timeout
        self._complete: dict[str, frozenset[str]] = {}  # id prefix -> all of that kind
        self._pending: set[str] = set()  # children to compare with the record
        self._unknown: set[str] = set()  # roots the record knew nothing of in this run
        self._passes = Passes(link, self._pass, name="cloud-stale",
                              failed="clearing what earlier runs published")
        chained = link.on_child

        def on_child(device_id: str, removed: bool) -> None:
            chained(device_id, removed)
            self._child(device_id, removed)

        link.on_child = on_child
        link.add_listener(self._result)

    def owns_all(self, prefix: str, device_ids: Iterable[str]) -> None:
        """The children whose id starts with ``prefix`` are ``device_ids`` for this whole
        run (the configured virtual devices): any other one recorded was dropped."""
        self._complete[prefix] = frozenset(device_ids)

    def published(self, root: str) -> list[str]:
        """The children recorded as published under ``root`` (for a release)."""
        return self.record.devices(root)

    def knows(self, root: str) -> bool:
        """Whether the record knows ``root`` (if not, which children an earlier release
        published there is known to the broker alone)."""
        return self.record.knows(root)

    async def wait(self, timeout: float) -> bool:
        """Wait for the pass in progress, if any; False if it took longer."""
        return await self._passes.wait(timeout)

    async def flush(self) -> None:
        """At stop: the record as it is now is on disk."""
        await self.record.flush()

    # ---- the link's events -------------------------------------------------------------------

    def _child(self, device_id: str, removed: bool) -> None:
        if removed:  # cleared by the link, and owed until then (gatewayd.cloud.leftovers)
            self._pending.discard(device_id)
            paired = self.store.state.cloud
            self.record.forget(self.link.root or (paired.root if paired else ""), [device_id])
            self.record.save()
            return
        self._pending.add(device_id)
        if self.link.connected:
            self._passes.ask()

    def _result(self, result: CloudResult) -> None:
        if result.outcome == CloudOutcome.CONNECTED:
            self._pending.update(self.link.device_ids()[1:])
            self._passes.ask()

    # ---- a pass ------------------------------------------------------------------------------

    def _quiet(self) -> bool:
        """The link is connected only to release an old account: nothing of ours to do."""
        state = self.store.state
        root = self.link.root
        return (state.release is not None and state.release.cloud.root == root
                and (state.cloud is None or state.cloud.root != root))

    async def _pass(self) -> None:
        root = self.link.root
        if not root or self._quiet():
            self._pending.clear()
            return
        if not self.record.knows(root):
            self._unknown.add(root)
            self.record.know(root)  # even without children: a release must not ask the broker
        present = self.link.device_ids()[1:]
        self._retire(root, present)
        reshaped = []
        for device_id in present:
            if device_id not in self._pending:
                continue
            digest = shape(self.link.device(device_id))
            recorded = self.record.shape_of(root, device_id)
            if recorded is None and root in self._unknown:
                recorded = UNSWEPT  # an earlier release may have published another tree
                self.record.note(root, device_id, recorded)
            if recorded in (None, digest):
                self.record.note(root, device_id, digest)
            else:
                reshaped.append(device_id)
        self._pending.clear()
        self.record.save()
        for i in range(0, len(reshaped), BATCH):
            if not await self._clear(root, reshaped[i:i + BATCH]):
                break

    def _retire(self, root: str, present: list[str]) -> None:
        """Hand the recorded children that are no longer configured to the leftovers."""
        have = set(present)
        dropped = [d for d in self.record.devices(root) if d not in have and any(
            d.startswith(prefix) and d not in ids for prefix, ids in self._complete.items())]
        if dropped and self.leftovers.owe_clearing(dropped):
            log.info("cloud: %d device(s) no longer configured (%s); clearing what the broker "
                     "keeps of them", len(dropped), ", ".join(dropped[:8]))
            self.record.forget(root, dropped)

    async def _clear(self, root: str, device_ids: list[str]) -> bool:
        """Clear the topics of ``device_ids`` their present trees do not have; whether the
        broker told everything and acknowledged the clearings."""
        topics, complete = await retained_topics(self.link, device_ids, marker=MARKER,
                                                 timeout=self.timeout)
        if self.link.root != root:
            return False  # another account now: not its topics
        present = set(self.link.device_ids())
        loop = asyncio.get_running_loop()
        acks: list[asyncio.Future[bool]] = []
        swept: dict[str, str] = {}
        for device_id in device_ids:
            if device_id not in present:
                continue  # removed meanwhile: its removal clears it
            device = self.link.device(device_id)
            base, keep = f"{device.base(root)}/", device.topics(root)
            commands = homie.set_filters(root, device_id)
            for topic in sorted(t for t in topics if t.startswith(base) and t not in keep
                                and not any(matches(f, t) for f in commands)):
                ack: asyncio.Future[bool] = loop.create_future()
                try:
                    self.link.publish(topic[len(root) + 1:], "", retain=True, done=ack)
                except ValueError:  # a topic the hub never makes (an empty level)
                    log.warning("cloud: cannot clear %r", topic)
                    continue
                acks.append(ack)
            swept[device_id] = shape(device)
        if not complete:
            log.warning("cloud: could not learn every retained topic of %d device(s) whose "
                        "tree changed; trying again at the next connection", len(device_ids))
            return False
        if acks:
            done, waiting = await asyncio.wait(acks, timeout=self.timeout)
            if waiting or not all(a.result() for a in done):
                return False  # the next connection asks the broker again
        for device_id, digest in swept.items():
            self.record.note(root, device_id, digest)
        self.record.save()
        log.info("cloud: cleared %d retained topic(s) that %d device(s) no longer have",
                 len(acks), len(swept))
        return True
