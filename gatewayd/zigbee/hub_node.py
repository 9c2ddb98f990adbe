"""The hub's own ``zigbee`` node: permit join, device count, radio status, install codes.

Settable properties reach the bridge through :class:`NodeActions`; a
:class:`~gatewayd.zigbee.inputs.BridgeError` becomes the ``/set``'s error (its code and
message) on the errors topic.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol, TypeVar

from gatewayd import homie
from gatewayd.zigbee.inputs import BridgeError

HUB_NODE = "zigbee"
T = TypeVar("T")


class NodeActions(Protocol):
    async def permit_join(self, seconds: int | None = None) -> int: ...

    async def add_install_code(self, ieee: str, code: str,
                               seconds: int | None = None) -> str: ...

    async def remove(self, ieee: str) -> str: ...


def zigbee_node(permit_join_max: int, bridge: NodeActions) -> homie.Node:
    async def on_permit(value: Any) -> int:
        return await _front(bridge.permit_join(int(value)))

    async def on_install(value: Any) -> str:
        # The code as printed on a label comes in groups of four: all after the address.
        parts = str(value).replace(",", " ").split(None, 1)
        if len(parts) != 2:
            raise homie.CommandError(homie.VALIDATION, "expected '<ieee> <install code>'")
        return await _front(bridge.add_install_code(parts[0], parts[1]))

    async def on_remove(value: Any) -> str:
        return await _front(bridge.remove(str(value)))

    props = [
        homie.Property("permitjoin", "Permit join", datatype="integer", unit="s",
                       format=f"0:{permit_join_max}", settable=True, value=0,
                       on_set=on_permit),
        homie.Property("device-count", "Devices", datatype="integer", value=0),
        homie.Property("channel", "Channel", datatype="integer"),
        homie.Property("pan-id", "PAN ID"),
        homie.Property("status", "Radio status", value="starting"),
        homie.Property("install-code", "Add install code", settable=True, retained=False,
                       on_set=on_install),
        homie.Property("remove", "Remove device", settable=True, retained=False,
                       on_set=on_remove),
    ]
    return homie.Node(HUB_NODE, "Zigbee", properties=props)


async def _front(action: Awaitable[T]) -> T:
    try:
        return await action
    except BridgeError as exc:
        raise homie.CommandError(exc.code, str(exc)) from None
