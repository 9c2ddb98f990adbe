"""Clearing what removed child devices left on the broker, also across restarts.

``remove_device`` queues empty retained payloads for a child's topics in the link's
outbox, which lives in memory. If the cloud is out of reach and the daemon restarts before
they went out (an update, the watchdog, a power cut), nothing would clear them any more:
the app would show the removed device, ``$state = ready``, for good. So each removal is
first recorded in ``state.json`` (``owed_clearings``: the device id and the account root it
was published under, :mod:`gatewayd.owed`).

After every connect, and right after a removal while connected, the hub asks the broker
which topics are retained under each owed device's tree (:mod:`~gatewayd.cloud.sweep`) and
clears exactly those, ``$state`` first. An entry goes once the broker has acknowledged its
clearings, or had nothing retained; until then every connect tries again.

* Only removals are owed: explicit ones, and children an earlier run published that are
  no longer configured (:mod:`~gatewayd.cloud.stale` hands them over). A child that merely
  was not restored at this start (a Zigbee radio down at boot) is never cleared, and
  nothing else of the account is touched: other hubs share it.
* A device added again before it was cleared (a re-join) is not owed any more, and one
  that the hub has is never cleared.
* Entries belong to the paired account (:class:`~gatewayd.state.StateStore` keeps no other):
  an entry is cleared under its own root only, and a reset hands the entries to the
  account's release (:mod:`~gatewayd.cloud.ownership`).
"""

from __future__ import annotations

import asyncio
import logging

from gatewayd.cloud.attempts import CloudOutcome, CloudResult
from gatewayd.cloud.link import CloudLink
from gatewayd.cloud.passes import Passes
from gatewayd.cloud.sweep import retained_topics
from gatewayd.owed import OwedClearing, owe, settle
from gatewayd.state import StateStore

log = logging.getLogger(__name__)

MARKER = "$sweep"  # non-retained, under the hub's tree: marks the end of the retained burst
TIMEOUT = 10.0  # for the broker's answer, and again for its acknowledgements
BATCH = 64  # devices cleared at once (asked about in smaller rounds, gatewayd.cloud.sweep)


class Leftovers:
    """Records the link's child removals and clears what the broker still has of them."""

    def __init__(self, link: CloudLink, store: StateStore, *,
                 timeout: float = TIMEOUT) -> None:
        self.link = link
        self.store = store
        self.timeout = timeout
        self._passes = Passes(link, self._pass, name="cloud-leftovers",
                              failed="clearing removed devices")
        link.on_child = self._child
        link.add_listener(self._result)

    def owed(self, root: str) -> list[str]:
        """The removed devices still to clear under ``root``, oldest first."""
        return [o.device_id for o in self.store.state.owed if o.root == root]

    async def wait(self, timeout: float) -> bool:
        """Wait for the clearing in progress, if any; False if it took longer."""
        return await self._passes.wait(timeout)

    # ---- the link's events -------------------------------------------------------------------

    def _child(self, device_id: str, removed: bool) -> None:
        state = self.store.state
        if not removed:
            if any(o.device_id == device_id for o in state.owed):
                log.info("cloud: %s is back; its retained topics are no longer to clear",
                         device_id)
                self._write(settle(state.owed, [device_id]))
            return
        if self.owe_clearing([device_id]) and not self.link.connected:
            log.info("cloud: %s removed while the cloud is out of reach; its retained topics "
                     "are cleared once it is back", device_id)

    def owe_clearing(self, device_ids: list[str]) -> bool:
        """Record ``device_ids`` as removed, to clear (now if connected); whether that is
        recorded. Also for children an earlier run published that this one no longer has
        (:mod:`~gatewayd.cloud.stale`)."""
        paired = self.store.state.cloud
        if paired is None or self.link.root not in ("", paired.root):
            return False  # the clearing is for an account the hub keeps nothing for
        owed = self.store.state.owed
        for device_id in device_ids:
            owed = owe(owed, device_id, paired.root)
        if not self._write(owed):
            return False
        if self.link.connected:
            self._passes.ask()
        return True

    def _result(self, result: CloudResult) -> None:
        if result.outcome == CloudOutcome.CONNECTED and self.owed(self.link.root):
            self._passes.ask()

    def _write(self, owed: tuple[OwedClearing, ...]) -> bool:
        try:
            self.store.set_owed(owed)
        except OSError as exc:  # the clearing still waits in the outbox: say what is at stake
            log.error("could not record the removed devices still to clear from the broker "
                      "(%s): a restart before they are cleared leaves them there", exc)
            return False
        return True

    # ---- clearing ------------------------------------------------------------------------------

    async def _pass(self) -> None:
        root = self.link.root
        absent = [d for d in self.owed(root) if d not in set(self.link.device_ids())]
        for i in range(0, len(absent), BATCH):
            if not await self._clear(root, absent[i:i + BATCH]):
                break

    async def _clear(self, root: str, device_ids: list[str]) -> bool:
        """Clear what the broker has of ``device_ids``; whether it was seen done."""
        topics, complete = await retained_topics(self.link, device_ids, marker=MARKER,
                                                 timeout=self.timeout)
        if self.link.root != root:
            return False  # another account now: its clearings are not ours to publish
        # Only what is still owed and still absent: a device may have come back meanwhile.
        present = set(self.link.device_ids())
        ids = [d for d in self.owed(root) if d in device_ids and d not in present]
        prefixes = tuple(f"{root}/sweet-home/{d}/" for d in ids)
        loop = asyncio.get_running_loop()
        acks: list[asyncio.Future[bool]] = []
        for topic in sorted((t for t in topics if t.startswith(prefixes)),
                            key=lambda t: (not t.endswith("/$state"), t)):
            ack: asyncio.Future[bool] = loop.create_future()
            try:
                self.link.publish(topic[len(root) + 1:], "", retain=True, done=ack)
            except ValueError:  # a topic the hub never makes (an empty level): not its own
                log.warning("cloud: cannot clear %r", topic)
                continue
            acks.append(ack)
        if not complete:
            log.warning("cloud: could not learn every retained topic of %d removed device(s) "
                        "(no answer from the broker in %g s, or too many messages at once); "
                        "trying again at the next connection", len(ids), self.timeout)
            return False
        if acks:
            done, waiting = await asyncio.wait(acks, timeout=self.timeout)
            if waiting or not all(a.result() for a in done):
                return False  # the next connection asks the broker again
        if ids:
            self._write(settle(self.store.state.owed, ids))
        log.info("cloud: cleared %d retained topic(s) of %d removed device(s)", len(acks),
                 len(ids))
        return True
