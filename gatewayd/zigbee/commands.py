"""A ``/set``'s cluster command, framed as zigpy frames it, past zigpy's request building.

zigpy 2.4 sends ``cluster.on()`` through ``Cluster.command``, ``request`` and
``_create_request``, which build the ZCL header and its frame control as typed structs
(each ``Struct.__new__`` binds its arguments through ``inspect.Signature``) and then
serialize them: about two fifths of the CPU a ``/set`` spends on the event loop before
bellows has the frame (cProfile of the ``/set`` task, bench/README.md "A `/set`'s
command"). For the commands a ``/set`` sends (server clusters, no manufacturer code) the
header is three bytes known in advance but for the transaction number; :class:`FastCommands`
writes them and hands the frame to the endpoint's ``request`` with the arguments
``Cluster.request`` gives it, so everything from there on (the device's pending replies,
the radio, retries and timeouts) is zigpy's and bellows'. The command's own arguments
are still built and serialized by zigpy's schema, with its checks.

Anything it is not sure to frame the same way is zigpy's: a client cluster, a
manufacturer-specific command or cluster, a quirk's cluster class that overrides how
commands are sent, a name zigpy would resolve otherwise, another zigpy version
(:mod:`~gatewayd.zigbee.pinned`). tests/test_zigbee_commands.py compares the two
frames for every command the mapping table sends. What upstream zigpy could take: the
header serialized from plain integers in ``_create_request``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any

import zigpy.types as t
from zigpy.const import APS_REPLY_TIMEOUT
from zigpy.typing import UNDEFINED
from zigpy.zcl import Cluster

from gatewayd.zigbee.pinned import written_for

# The frame control zigpy writes for ``Cluster.command`` on a server cluster: frame type
# cluster-specific (1), not manufacturer-specific, client to server, default response
# asked for (zigpy disables it only on client clusters).
CLUSTER_COMMAND_TO_SERVER = 0x01
# Cluster classes remembered (a network has a few dozen; quirks may make one per model).
MAX_CLASSES = 256


class FastCommands:
    """Installed with the report fast paths once a radio runs; ``sent`` counts the
    commands it framed."""

    def __init__(self) -> None:
        self.sent = 0
        self._zigpys: dict[type, bool] = {}  # per cluster class: sends as zigpy does

    @classmethod
    def install(cls) -> FastCommands | None:
        return cls() if written_for("zigpy", "command fast path") else None

    def request(self, cluster: Cluster, name: str, args: Mapping[str, Any]
                ) -> Awaitable[Any] | None:
        """What ``getattr(cluster, name)(**args)`` would send, sent; None (and nothing
        done) where this cannot be sure to send the same."""
        kind: type[Any] = type(cluster)
        if not cluster.is_server or not self._sends_as_zigpy(kind) \
                or hasattr(kind.ClientCommandDefs, name):  # zigpy's __getattr__ looks there first
            return None
        definition = getattr(kind.ServerCommandDefs, name, None)
        if definition is None:
            return None
        command = cluster.server_commands[definition.id]  # as Cluster.command looks it up
        if cluster._get_effective_manufacturer_code(command, UNDEFINED) is not None:
            return None
        payload = command.schema(**args).serialize()  # refuses bad arguments before a TSN
        endpoint = cluster.endpoint
        # Typed as zigpy's header gives them on.
        tsn, command_id = t.uint8_t(endpoint.device.get_sequence()), t.uint8_t(command.id)
        self.sent += 1
        send: Any = endpoint.request  # typed for zigpy's ClusterId, which it is given too
        sent: Awaitable[Any] = send(
            cluster=cluster.cluster_id, sequence=tsn,
            data=bytes((CLUSTER_COMMAND_TO_SERVER, tsn, command_id)) + payload,
            command_id=command_id, timeout=APS_REPLY_TIMEOUT, expect_reply=True,
            use_ieee=False, ask_for_ack=None, priority=None, retries=None, retry_delay=None,
            aps_encryption=cluster.aps_encryption)
        return sent

    def _sends_as_zigpy(self, kind: type) -> bool:
        """The class sends commands with zigpy's own code, not a quirk's."""
        known = self._zigpys.get(kind)
        if known is None:
            if len(self._zigpys) >= MAX_CLASSES:
                self._zigpys.clear()
            known = self._zigpys[kind] = all(
                getattr(kind, name) is getattr(Cluster, name)
                for name in ("command", "request", "_create_request", "__getattr__"))
        return known
