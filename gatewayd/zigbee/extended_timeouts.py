"""bellows' question before every unicast, answered from what it last told the NCP.

bellows 1.2.1 sends a unicast (on firmware without Nabu Casa's XNCP) as two EZSP
exchanges over the serial line: ``getExtendedTimeout`` for the destination, then
``sendUnicast``; a third, ``setExtendedTimeout``, only when the flag must change. The flag
makes the NCP space its APS retries for a device that sleeps and polls. zigpy asks for it
off on every request to a router, so for a ``/set`` to a plug bellows asks the NCP the
same question, gets the same answer and changes nothing, each time: a serial round trip
of every command (the ``/set`` round trip's median on the EZSP emulator went from 2.39
to 2.06 ms without it; bench/README.md, "bellows' second exchange").

The flag is the host's to set, except that EmberZNet turns it on by itself for sleepy
devices only (its own sleepy children, an address response a parent sends for its child,
an indirect-transaction-expiry route error, the announcement of a sleepy node). So once
bellows has left it off for a device whose receiver is on when idle, it stays off until
bellows turns it on or the device announces itself again (it may come back as a sleepy
one); an NCP reset clears every flag, which leaves "off" true. :class:`ExtendedTimeouts`
remembers the devices known to be off and answers bellows' question for them; for
everything else (turning it on, a sleepy or not yet interviewed device, a device that
has announced itself since) bellows asks the NCP as before. zigbee-herdsman's ember
driver, for comparison, never asks and leaves the flag to the stack.

It stands in front of bellows' ``set_extended_timeout`` (which ``EZSP`` hands on to its
protocol object) on bellows 1.2.1 only (:mod:`~gatewayd.zigbee.pinned`). What upstream
bellows could take: the same memory of what it last set, per address-table entry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import bellows.ezsp
import bellows.zigbee.application as bellows_app

from gatewayd.zigbee.pinned import written_for

# Devices remembered at most; past it a device is asked about as bellows does (a network
# of an EZSP coordinator has a few hundred).
MAX_KNOWN = 4096


class ExtendedTimeouts:
    """Installed on a started bellows ``ControllerApplication`` by :meth:`install`."""

    def __init__(self, app: Any, ezsp: Any) -> None:
        self.app = app
        self._off: set[Any] = set()  # EUI64s whose flag bellows left off
        self._ezsp = ezsp

    @classmethod
    def install(cls, app: Any) -> ExtendedTimeouts | None:
        """Stand in front of the started application's ``EZSP`` object. The bridge starts
        a new application after every loss of the radio; should one ever connect again
        on its own, its new ``EZSP`` object is bellows' alone, which only costs the
        question again."""
        if not isinstance(app, bellows_app.ControllerApplication) or \
                not isinstance(app._ezsp, bellows.ezsp.EZSP):
            return None
        if not written_for("bellows", "extended-timeout memory"):
            return None
        timeouts = cls(app, app._ezsp)
        handle_join: Callable[..., None] = app.handle_join

        def joined(nwk: Any, ieee: Any, *args: Any, **kwargs: Any) -> None:
            timeouts.forget(ieee)
            handle_join(nwk, ieee, *args, **kwargs)

        app.handle_join = joined
        # An attribute of the object comes before EZSP's __getattr__, which hands every
        # name it does not have to the protocol object of the moment.
        app._ezsp.set_extended_timeout = timeouts.set_extended_timeout
        return timeouts

    def forget(self, ieee: Any) -> None:
        self._off.discard(ieee)

    async def set_extended_timeout(self, nwk: Any, ieee: Any,
                                   extended_timeout: bool = True) -> None:
        if not extended_timeout and ieee in self._off and self._awake(ieee):
            return
        self._off.discard(ieee)
        await self._ezsp._protocol.set_extended_timeout(
            nwk=nwk, ieee=ieee, extended_timeout=extended_timeout)
        if not extended_timeout and len(self._off) < MAX_KNOWN:
            self._off.add(ieee)

    def _awake(self, ieee: Any) -> bool:
        """True if zigpy knows the device's receiver to be on when idle: the stack never
        turns the flag on by itself for such a device."""
        device = self.app.devices.get(ieee)
        node_desc = None if device is None else device.node_desc
        return node_desc is not None and bool(node_desc.is_receiver_on_when_idle)
