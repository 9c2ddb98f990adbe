"""Releasing an account: what a paired hub does when it is reset to be paired again.

While its old credentials still work, the hub tells the platform (REQ/RES
``device/ownership``, event ``released``) and clears its own and its children's retained
topics under the old root, so nothing of it lingers in the old account (the next owner may
be someone else). Which retained topics exist is asked of the broker, not guessed: the hub
subscribes to its devices' trees, collects what is retained, and clears exactly that
(:mod:`~gatewayd.cloud.sweep`). Its devices are the hub, its children, the children
removed whose topics are not yet seen cleared (:mod:`~gatewayd.cloud.leftovers`) and every
child recorded as published under the account (:mod:`~gatewayd.cloud.stale`): one dropped
from the configuration, or not restored at this start, is the account's too.

An account the record knows nothing of (its devices published by a release without the
record, 0.1.2 or older, then reset with the daemon stopped: ``--full`` leaves no child
either) has its devices asked of the broker: each device's ``$localip`` and
``$implementation`` under the root (:func:`~gatewayd.cloud.sweep.retained_values`). Other
hubs of the account publish there too, so only the children this hub published are taken:
a gatewayd child (``$implementation`` ``gatewayd <kind>``) with the ``$localip`` the hub
left retained (children publish the hub's address). It hears of at most :data:`MAX_FOUND`
devices under the root, all hubs' together: a broker that keeps more, or tells more at
once than the hub can take, gives an incomplete release (the children heard of are
cleared, the others stay).

* First, either way: the reset writes ``state.json`` with the old account and the device
  ids kept as a pending ``release`` (mode 0600); a reset that cannot write it is refused
  and nothing is sent.
* Online at the reset: then right away, on the live connection, which then ends without
  the usual ``$state = disconnected`` goodbyes (they would re-create retained topics);
  once released, the pending release is dropped. If the broker did not tell in time
  everything it keeps, what was seen is cleared and the release stays pending, as if the
  reset had been offline: the next pairing finishes it.
* Offline at the reset: the pending release stays until the next successful pairing.
  That pairing's cloud step first opens a quiet session with the old account (no device
  published, no will), releases, and only then connects with the new one. If the old
  broker cannot be reached then, the pairing goes on and the release is dropped with it:
  the old account keeps the hub's last retained topics, and the log and docs/cloud.md say
  so.
"""

from __future__ import annotations

import logging
import time

from gatewayd import homie
from gatewayd.cloud.attempts import CloudOutcome
from gatewayd.cloud.leftovers import Leftovers
from gatewayd.cloud.link import CloudLink
from gatewayd.cloud.reqres import PlatformError
from gatewayd.cloud.stale import StaleTopics
from gatewayd.cloud.sweep import retained_topics, retained_values
from gatewayd.credentials import CloudCredentials
from gatewayd.owed import MAX_RELEASE_DEVICES, Release

log = logging.getLogger(__name__)

ENDPOINT = "device/ownership"
MARKER = "$release"  # non-retained, under the hub's tree: marks the end of the retained burst
RELEASE_TIMEOUT = 5.0
# Devices of an account the record knows nothing of (all its hubs') that a release hears
# of: two retained messages each, within the 512 the hub keeps waiting for its loop.
MAX_FOUND = 250
CHILD_IMPLEMENTATION = b"gatewayd "  # "gatewayd zigbee", "gatewayd virtual": a hub's child
HUB_IMPLEMENTATION = b"gatewayd"  # a hub itself


def same_account(a: CloudCredentials, b: CloudCredentials) -> bool:
    return (a.host, a.broker_port, a.root) == (b.host, b.broker_port, b.root)


class Ownership:
    def __init__(self, link: CloudLink, *, timeout: float = RELEASE_TIMEOUT,
                 leftovers: Leftovers | None = None, stale: StaleTopics | None = None) -> None:
        self.link = link
        self.timeout = timeout
        self.leftovers = leftovers
        self.stale = stale
        self.last: dict[str, object] | None = None  # the latest release, for status

    async def to_release(self, stored: CloudCredentials) -> Release:
        """The factory reset's first step: the paired account ``stored`` and its devices, as
        the release the state keeps before anything is sent (a reset that cannot write its
        state must change nothing); nothing is sent here."""
        owed: list[str] = []
        if self.stale is not None:
            await self.stale.wait(self.timeout)  # it may hand devices to the leftovers
        if self.leftovers is not None:
            await self.leftovers.wait(self.timeout)  # its taps would be the release's too
            # Children removed but not yet seen cleared belong to the account too.
            owed = self.leftovers.owed(stored.root)
        owed += self._published(stored.root)
        devices = tuple(dict.fromkeys([*self.link.device_ids(), *owed]))[:MAX_RELEASE_DEVICES]
        return Release(cloud=stored, devices=devices, since=time.time())

    async def release_at_reset(self, pending: Release) -> bool:
        """Once the state keeps ``pending``: release it now if the link is online with that
        account, and end the session (without goodbyes); whether it was released
        completely. If not, the state keeps it and the next successful pairing finishes
        it."""
        self.link.start_afresh()  # the hub paired next is a new one to apps, even here
        creds = self.link.credentials
        if not (self.link.connected and creds is not None
                and same_account(creds, pending.cloud)):
            log.warning("reset while the cloud is out of reach: the old account (root %s) is "
                        "released at the next successful pairing", pending.cloud.root)
            return False
        try:
            released = await self.release(pending.devices)
        finally:
            await self.link.stop(goodbye=False)
        if not released:
            log.warning("reset: the old account (root %s) was not released completely; the "
                        "next successful pairing finishes it", pending.cloud.root)
        return released

    async def release_pending(self, pending: Release, new: CloudCredentials) -> bool:
        """Before connecting with ``new``: release the account a reset left behind."""
        if same_account(pending.cloud, new):
            log.info("pairing again with the same account: nothing to release")
            return True
        await self.link.stop()
        await self.link.start(pending.cloud, announce=False)
        try:
            result = await self.link.wait_result(self.timeout, first_only=False)
            if result.outcome != CloudOutcome.CONNECTED:
                log.warning("could not release the old account (root %s): %s",
                            pending.cloud.root, result.reason)
                self.last = {"root_topic": pending.cloud.root, "released": False,
                             "reason": result.reason}
                return False
            # The hub first, as the platform is told, then the children it had and has:
            # a reset made with the daemon stopped (gatewayctl) could name the hub only.
            hub, *children = self.link.device_ids()
            devices = (hub, *dict.fromkeys(
                d for d in [*pending.devices, *children, *self._published(pending.cloud.root)]
                if d != hub))
            return await self.release(devices)
        finally:
            await self.link.stop(goodbye=False)

    async def _children_on_broker(self) -> tuple[list[str], bool]:
        """The children this hub published under the account, as the broker keeps them
        (the record knows nothing of the account), and whether the broker told of all."""
        hub = self.link.hub.id
        values, complete = await retained_values(
            self.link, ("$localip", "$implementation"), marker=MARKER, timeout=self.timeout,
            limit=MAX_FOUND, always=hub)
        address = values.get(hub, {}).get("$localip")
        found = sorted(d for d, v in values.items()
                       if d != hub and homie.ID_RE.fullmatch(d) and address is not None
                       and v.get("$localip") == address
                       and v.get("$implementation", b"").startswith(CHILD_IMPLEMENTATION))
        # Another hub of the account at the same address (two homes behind routers that
        # both hand out 192.168.1.x): whose children are whose cannot be told; none taken.
        twins = sorted(d for d, v in values.items() if d != hub
                       and v.get("$localip") == address
                       and v.get("$implementation") == HUB_IMPLEMENTATION)
        if found and twins and address is not None:
            log.warning("release: another hub of the account (%s) has this hub's address %s "
                        "under root %s, so its children cannot be told from this hub's: none "
                        "of the %d found is cleared", ", ".join(twins[:3]),
                        address.decode(errors="replace"), self.link.root, len(found))
            found = []
        if not complete:
            log.warning("release: could not hear of every device under root %s (more than "
                        "%d, or no answer from the broker in %g s); the %d child(ren) heard "
                        "of are cleared, any other stays", self.link.root, MAX_FOUND,
                        self.timeout, len(found))
        elif found:
            log.info("release: %d child(ren) published by an earlier release found under "
                     "root %s", len(found), self.link.root)
        return found, complete

    def _published(self, root: str) -> list[str]:
        return self.stale.published(root) if self.stale is not None else []

    async def release(self, devices: tuple[str, ...]) -> bool:
        """On a connected link: tell the platform, clear every retained topic of
        ``devices``; whether all of them were seen and cleared in time (not if the broker
        did not say in time what it keeps, or the hub dropped part of its answer). The
        session is quiet from here on: a value published after the clearing would leave a
        topic behind."""
        self.link.go_quiet()
        root = self.link.root
        heard = True  # of every device: the record knows them, or the broker told
        if self.stale is None or not self.stale.knows(root):
            found, heard = await self._children_on_broker()
            devices = tuple(dict.fromkeys([*devices, *found]))[:MAX_RELEASE_DEVICES]
        topics, complete = await retained_topics(self.link, devices, marker=MARKER,
                                                 timeout=self.timeout)
        if not complete:
            log.warning("release: could not learn every retained topic (no answer from the "
                        "broker in %g s, or too many messages at once); clearing the %d seen "
                        "so far", self.timeout, len(topics))
        hub, children = devices[0], list(devices[1:])
        try:
            await self.link.platform.request(
                ENDPOINT, {"event": "released", "device_id": hub, "children": children},
                timeout=self.timeout)
        except PlatformError as exc:  # the clearing below matters more than the notice
            log.warning("the platform was not told about the release: %s", exc)
        self.link.clear_retained(topics)
        flushed = await self.link.flush(self.timeout)
        log.info("released root %s: %d retained topic(s) of %d device(s) cleared%s", root,
                 len(topics), len(devices), "" if flushed else " (not all acknowledged)")
        released = flushed and complete and heard
        self.last = {"root_topic": root, "released": released, "topics": len(topics),
                     "devices": len(devices), "at": time.time()}
        return released
