"""``UplinkAnnouncer``: tells the simulated world whether the hub has a way to the internet.

On a hub the cloud broker is reached through the uplink NetworkManager manages; in the
simulator it is on loopback, so the world (:mod:`gatewayd.simulator.uplink`, in gatewayd's
process) carries the hub's broker connections through a relay that this announcement opens
and closes. The mock sends one datagram, ``up``, ``limited`` (a link without internet) or
``down`` (no routed link), to the unix socket named by the ``uplink_socket`` parameter
whenever the answer changes. Without that parameter nothing is sent.
"""

from __future__ import annotations

import socket

UP, LIMITED, DOWN = "up", "limited", "down"


class UplinkAnnouncer:
    def __init__(self, path: str | None) -> None:
        self._path = path or ""
        self._last: str | None = None
        self._sock: socket.socket | None = None
        if path:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)

    def announce(self, level: str) -> None:
        if self._sock is None or level == self._last:
            return
        try:
            self._sock.sendto(level.encode(), self._path)
        except OSError:  # the world is gone or not listening: it starts from "down"
            return
        self._last = level
