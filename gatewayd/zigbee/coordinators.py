"""Coordinators are not children, and a former one in ``zigbee.db`` is forgotten.

zigpy keeps every coordinator it has run with in ``zigbee.db`` as a device (node address
0x0000, logical type coordinator): the stick the hub's network was restored from when a
replacement took it over under its own address (:mod:`~gatewayd.zigbee.network_start`),
and, on hubs that adopted another network's stick before
:mod:`~gatewayd.zigbee.network_start` refused it, that network's coordinator. The bridge
took all but the running one for children: the other network's coordinator stayed a
``zigbee-…`` device for good, ``ready`` or ``disconnected``, even once the hub's own
stick was back.

:func:`is_coordinator` keeps them out of the children. :func:`take_over`, when the radio
comes up on a network ``zigbee.db`` knew under another coordinator, has zigpy forget those
(their rows deleted; no leave request: they are sticks, not on the air), drops one that
was published as a child, and has every device set up again (bind and reporting point at
a coordinator's address, now this stick's; :mod:`~gatewayd.zigbee.setups`), marked in
``zigbee-setup.json`` first so that a crash before the setups ran still has them redone.
What setting up cannot mend is said in the log: a device that never answers again has to
be paired again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from gatewayd.zigbee.children import Children
from gatewayd.zigbee.removals import let_go  # zigpy's clean-up; imports no zigpy
from gatewayd.zigbee.setups import Setups

log = logging.getLogger(__name__)

COORDINATOR_NWK = 0x0000  # a coordinator's, in every network


def is_coordinator(dev: Any) -> bool:
    """``dev`` is a coordinator (the hub's stick, or one zigbee.db kept), not a device. By
    its address alone: a device's own node descriptor may be wrong, and one that called
    itself a coordinator would be forgotten at every start."""
    return bool(dev.nwk == COORDINATOR_NWK)


def former_coordinators(app: Any) -> list[Any]:
    """The coordinators zigbee.db keeps besides the running one."""
    running = app.state.node_info.ieee
    return [dev for dev in app.devices.values() if dev.ieee != running and is_coordinator(dev)]


def take_over(app: Any, former: list[Any], children: Children, setups: Setups,
              drop: Callable[[str], None], is_child: Callable[[Any], bool]) -> None:
    """The network runs on ``app``'s stick, zigbee.db knew it under ``former``: forget
    them, ``drop`` (a child's device id) one that was a child, and set every device that
    has not left up again. Before the bridge listens to ``app``: zigpy's removal event goes
    to zigbee.db only."""
    for dev in former:
        app.devices.pop(dev.ieee, None)
        app.listener_event("device_removed", dev)  # zigbee.db deletes its rows
        let_go(dev)
        child = children.pop(str(dev.ieee), None)
        if child is not None:
            drop(child.device_id)
    again = [dev for dev in app.devices.values() if is_child(dev) and dev.is_initialized]
    for dev in again:
        setups.pending.add(str(dev.ieee))  # restored with $state init and set up again
    log.warning("zigbee: the network now runs on the stick with address %s; zigbee.db knew it "
                "under %s, now forgotten. Each of the %d device(s) is set up again to report "
                "to this stick (bind, reporting); a device that stays silent afterwards has to "
                "be paired again", app.state.node_info.ieee,
                ", ".join(str(d.ieee) for d in former), len(again))
