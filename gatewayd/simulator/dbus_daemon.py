"""A private ``dbus-daemon`` that stands in for the system bus."""

from __future__ import annotations

import os
import shutil
import string
from pathlib import Path
from xml.sax.saxutils import escape

from gatewayd.simulator.procs import Child, dbus_ping, wait_until

# System-bus semantics (names owned by services, method calls) without the system
# bus's policy files: everyone on this private bus may own and talk to everything.
_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>{address}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
  <limit name="max_replies_per_connection">50000</limit>
</busconfig>
"""
# libdbus refuses longer socket paths ("Socket name too long"): 99 bytes fit every platform's
# sockaddr_un, so it holds itself to that, not to Linux's 107.
MAX_SOCKET_PATH = 99
# What a D-Bus address may carry unescaped (D-Bus specification, "Server Addresses"), less
# "*" and "\\", which the specification allows but dbus_fast (bleak's) refuses.
_ADDRESS_SAFE = frozenset((string.ascii_letters + string.digits + "-_/.").encode())


def socket_address(socket: Path) -> str:
    """``unix:path=...`` for this socket, its bytes percent-escaped as D-Bus addresses need
    (a space, or one of ``,;=:`` which separate an address's parts, would break it)."""
    raw = os.fsencode(socket)
    return "unix:path=" + "".join(chr(b) if b in _ADDRESS_SAFE else f"%{b:02x}" for b in raw)


def check_socket_path(socket: Path) -> None:
    """Refuse, naming --workdir, a socket path too long for dbus-daemon to listen on."""
    length = len(os.fsencode(socket))
    if length > MAX_SOCKET_PATH:
        raise RuntimeError(f"{socket}: the private D-Bus socket's path is {length} bytes, "
                           f"more than the {MAX_SOCKET_PATH} D-Bus allows: choose a shorter "
                           "--workdir")


class PrivateBus:
    """``dbus-daemon`` listening on ``<workdir>/system_bus_socket``."""

    SOCKET_NAME = "system_bus_socket"
    START_TIMEOUT = 10.0  # s for the daemon to answer its first Ping

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.socket = workdir / self.SOCKET_NAME
        self.address = socket_address(self.socket)
        self.child: Child | None = None

    def start(self) -> PrivateBus:
        exe = shutil.which("dbus-daemon")
        if exe is None:
            raise RuntimeError("dbus-daemon not found: install the 'dbus' package "
                               "(scripts/setup.sh does)")
        check_socket_path(self.socket)
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "system-bus.conf"
        conf.write_text(_CONFIG.format(address=escape(self.address)))
        self.socket.unlink(missing_ok=True)
        self.child = Child("dbus-daemon", [exe, "--nofork", "--nopidfile",
                                           f"--config-file={conf}"],
                           self.workdir / "dbus-daemon.log")
        # The socket file exists before the daemon listens on it: wait for an answer.
        wait_until(lambda: self.socket.exists() and dbus_ping(self.address), self.START_TIMEOUT,
                   "the private D-Bus daemon to answer a Ping", self.child)
        return self

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()
            self.child = None
        self.socket.unlink(missing_ok=True)

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """An environment whose system bus is this one."""
        env = dict(base)
        env["DBUS_SYSTEM_BUS_ADDRESS"] = self.address
        env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        return env
