"""How the Zigbee bridge publishes (a base of :class:`~gatewayd.bridge.ZigbeeBridge`, kept
apart so each reads in one sitting): a child's value and ``$state``, and the hub's
``zigbee`` node, whose ``device-count`` counts the devices joined, not those that left.

A value the cloud's model refuses (a device reporting out of its range) is an alert, not
an error that stops the bridge (:mod:`~gatewayd.zigbee.alerts`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gatewayd import homie
from gatewayd.zigbee.alerts import Alerts
from gatewayd.zigbee.children import Children
from gatewayd.zigbee.coalesce import Key
from gatewayd.zigbee.hub_node import HUB_NODE
from gatewayd.zigbee.status_line import StatusLine

if TYPE_CHECKING:
    from gatewayd.zigbee.child import Child


class BridgePublishing:
    """The bridge's publications; the bridge provides what is declared here."""

    publisher: homie.ChildPublisher
    hub: homie.Device | None
    hub_node: homie.Node
    alerts: Alerts
    status_line: StatusLine
    children: Children

    def _publish(self, key: Key, value: Any) -> None:
        try:
            self.publisher.set_value(*key, value)
        except (KeyError, ValueError) as exc:
            self.alerts.not_published(key, value, exc)

    def _set_state(self, child: Child, state: str) -> None:
        if child.state == state and child.homie is not None and child.homie.state == state:
            return
        left, child.state = child.state == "lost", state
        self.status_line.changed()
        if child.homie is not None:
            self.publisher.set_state(child.device_id, state)
        if left != (state == "lost"):
            self._count()  # it left, or is back

    def _hub_value(self, prop: str, value: Any) -> None:
        self.status_line.hub_value(prop, value)
        if self.hub is not None and self.hub.nodes.get(HUB_NODE) is self.hub_node:
            self._publish((self.hub.id, HUB_NODE, prop), value)

    def _count(self) -> None:  # the devices joined, not those that left (lost)
        self._hub_value("device-count", sum(c.state != "lost" for c in self.children.values()))
