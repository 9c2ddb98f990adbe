"""Where a cloud connection goes (:class:`Endpoint`) and how it gets there (:data:`Opener`).

:func:`host_port` writes a broker's address for a user, :func:`tls_name` its host as TLS
names it.

On a hub the client opens each connection itself (:mod:`gatewayd.cloud.dial`: every
address of the name within the attempt's deadline; or paho, by PySocks, through a proxy).
Whoever builds the daemon may give it an :data:`Opener` instead, which the cloud link's and
the provisioning channel's connections then use (the daemon passes it to both;
:class:`~gatewayd.cloud.dial.DialingClient` calls it with the time the attempt has left).
``gatewayd`` gives none.
``gatewayd --simulate`` gives the simulated uplink's (:mod:`gatewayd.simulator.uplink`),
so that a Wi-Fi or internet lost in the simulated NetworkManager ends the hub's session
with its broker as on a hub, although that broker is on loopback.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass

# (address, connect timeout or None to block, source address or None): a connected TCP
# socket, or OSError as socket.create_connection raises it (the link classifies it).
Opener = Callable[[tuple[str, int], float | None, tuple[str, int] | None], socket.socket]


@dataclass(frozen=True)
class Endpoint:
    """A broker: the cloud's, or the platform's provisioning endpoint."""

    host: str
    port: int
    tls: bool
    ca_file: str = ""

    def __str__(self) -> str:
        return host_port(self.host, self.port)


def host_port(host: str, port: int) -> str:
    """``host:port`` as a user reads it: an IPv6 address in brackets (``[::1]:8883``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def tls_name(host: str) -> str:
    """``host`` as TLS names it (SNI, the certificate's check): a name without one
    trailing dot (``broker.example.`` is the absolute form of ``broker.example``, which
    certificates hold), an IPv6 literal without its zone (``%eth0``)."""
    address = host.partition("%")[0]
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(address)
        return address
    return host.removesuffix(".")
