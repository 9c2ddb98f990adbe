"""waitress, the production WSGI server, run in threads beside the asyncio core.

On TCP (the portal: hotspot guests, the LAN) one client must not be able to take the server
from everyone else, so the server is guarded (:class:`Limits`):

* **per client**: at most ``per_client`` connections from one address; more are closed as
  soon as they are accepted, leaving the rest of the ``total`` for the next honest client;
* **slow requests**: a request must arrive whole (request line, headers, body) within
  ``request_seconds`` of its first byte; trickling a header line every few seconds no
  longer keeps a connection (waitress' own timeout counts idleness, which trickling
  resets);
* **idle connections** close after ``idle_seconds``.

The control socket (a Unix socket, root or one group) has no such limits; its requests
carry the peer's uid as their address (``REMOTE_ADDR`` ``uid 1000``), so that its app can
bound what one user holds.

Both apps are Flask apps, and Flask with werkzeug and jinja2 is 8 MB of a hub's memory
that a hub nobody talks to does not need: :class:`LazyApp` builds an app on its first
request, in the web server's thread (never on the asyncio loop).
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer, create_server
from waitress.task import ThreadedTaskDispatcher

log = logging.getLogger(__name__)
LOOP_TIMEOUT = 0.2  # seconds waitress' select() waits at most


@dataclass(frozen=True)
class Limits:
    total: int = 64  # connections at once, all clients
    per_client: int = 8  # connections at once from one address
    request_seconds: float = 10.0  # from a request's first byte to its last
    idle_seconds: float = 15.0  # a connection with no request in progress


WsgiApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


class LazyApp:
    """A WSGI app that ``build`` makes on the first request it is asked to serve.

    Concurrent first requests wait for the one build. A build that fails is logged and
    answered with waitress' plain 500 page (no library text), and tried again with the
    next request.
    """

    def __init__(self, build: Callable[[], WsgiApp], name: str) -> None:
        self._build = build
        self._name = name
        self._lock = threading.Lock()
        self._app: WsgiApp | None = None

    @property
    def built(self) -> bool:
        return self._app is not None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        app = self._app
        if app is None:
            with self._lock:
                app = self._app
                if app is None:
                    started = time.monotonic()
                    try:
                        app = self._build()
                    except Exception:
                        log.exception("web: the %s app could not be built", self._name)
                        raise
                    self._app = app
                    log.info("web: %s app built for its first request in %.2f s",
                             self._name, time.monotonic() - started)
        return app(environ, start_response)


class _GuardedChannel(HTTPChannel):
    """Remembers when the request in progress began."""

    request_began = 0.0

    def received(self, data: bytes) -> bool:
        before = self.request
        result: bool = super().received(data)
        if self.request is not None and self.request is not before:
            self.request_began = time.monotonic()
        return result


class _PeerChannel(HTTPChannel):
    """A Unix-socket connection whose address is its peer's uid (waitress gives every
    one ``localhost``)."""

    def __init__(self, server: Any, sock: socket.socket, addr: Any, adj: Any,
                 map: Any = None) -> None:
        try:
            _, uid, _ = struct.unpack("3i", sock.getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
            addr = (f"uid {uid}", None)
        except OSError:
            pass  # a peer already gone: its request, if any, fails anyway
        super().__init__(server, sock, addr, adj, map=map)


class _GuardedServer(TcpWSGIServer):
    channel_class = _GuardedChannel
    limits = Limits()

    def handle_accept(self) -> None:
        try:
            accepted = self.accept()
        except OSError:
            return
        if accepted is None:
            return
        conn, addr = accepted
        client = addr[0]
        mine = sum(1 for ch in self._channels() if ch.addr[0] == client)
        if mine >= self.limits.per_client:
            log.info("web: refused a connection from %s: it has %d open already", client, mine)
            conn.close()
            return
        try:
            self.set_socket_options(conn)
        except OSError:
            conn.close()
            return
        self.channel_class(self, conn, self.fix_addr(addr), self.adj,
                           map=getattr(self, "_map"))  # noqa: B009 (not in the stubs)

    def _channels(self) -> list[Any]:
        # types-waitress types active_channels wrongly (a dict of channels by fileno).
        channels: dict[int, Any] = getattr(self, "active_channels")  # noqa: B009
        return list(channels.values())

    def maintenance(self, now: Any) -> None:
        super().maintenance(now)  # idle connections (adj.channel_timeout)
        deadline = time.monotonic() - self.limits.request_seconds
        for channel in self._channels():
            request = channel.request
            if request is not None and not request.completed \
                    and channel.request_began < deadline:
                log.info("web: closed a connection from %s: its request took longer than "
                         "%g s", channel.addr[0], self.limits.request_seconds)
                channel.will_close = True


def _give_to_group(path: Path, group: str) -> None:
    """Give the socket ``path`` to ``group``; a warning that says what to do when not."""
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        log.warning("cannot give control socket to group %r: there is no such group; only "
                    "the daemon's user and root can use it", group)
        return
    if os.geteuid() != 0 and gid not in (os.getegid(), *os.getgroups()):
        # Without CAP_CHOWN a process can give a file only to a group it is in.
        user = pwd.getpwuid(os.geteuid()).pw_name
        log.warning("cannot give control socket to group %r: the user %s is not a member "
                    "(as root: adduser %s %s, then restart gatewayd); only %s and root can "
                    "use it", group, user, user, group, user)
        return
    try:
        os.chown(path, -1, gid)
    except OSError as exc:
        log.warning("cannot give control socket to group %r (%s); only the daemon's user "
                    "and root can use it", group, exc.strerror or exc)


class WebServer:
    """Serves one WSGI app on a TCP address or a Unix socket until :meth:`stop`."""

    def __init__(self, app: Any, *, name: str, host: str = "", port: int = 0,
                 unix_socket: Path | None = None, socket_group: str = "",
                 max_request_bytes: int = 65536, threads: int = 4,
                 limits: Limits | None = None) -> None:
        self.name = name
        self.unix_socket = unix_socket
        self._stopping = False
        limits = limits or Limits()
        options: dict[str, Any] = {
            "threads": threads,
            "max_request_body_size": max_request_bytes,
            "max_request_header_size": max(max_request_bytes, 16384),
            "connection_limit": limits.total,
            # waitress reads these as whole seconds (int()).
            "channel_timeout": max(1, round(limits.idle_seconds)),
            # How often idle and slow connections are looked for (waitress: 30 s).
            "cleanup_interval": 1,
            "ident": "gatewayd",
            "clear_untrusted_proxy_headers": True,
        }
        if unix_socket is not None:
            unix_socket.parent.mkdir(parents=True, exist_ok=True)
            unix_socket.unlink(missing_ok=True)
            # Bound under another name and renamed once its mode and group are set: a
            # client never meets the socket with the wrong ones (a group member's
            # gatewayctl at start-up was refused until the chown).
            bound = unix_socket.with_name(f".{unix_socket.name}")
            # Socket mode is the access control: owner and (optionally) one group, nobody else.
            options.update(unix_socket=str(bound),
                           unix_socket_perms="660" if socket_group else "600")
            unix: Any = create_server(app, **options)  # one socket: a UnixWSGIServer
            unix.channel_class = _PeerChannel
            self._server: Any = unix
            try:
                if socket_group:
                    _give_to_group(bound, socket_group)
                os.replace(bound, unix_socket)
            except BaseException:
                self._server.close()  # no socket left listening under a name nobody uses
                bound.unlink(missing_ok=True)
                raise
        else:
            self._server = _guarded(app, host, port, limits, options)
        # How soon waitress' loop notices stop(); 1 s (the default) slows every restart. Set
        # on the adjustments, not as an option: waitress casts the option with int(), and 0.2
        # became 0, a select() that never waits: both web threads spun a core between them.
        self._server.adj.asyncore_loop_timeout = LOOP_TIMEOUT
        self._thread = threading.Thread(target=self._run, name=f"web-{name}", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.effective_port)

    @property
    def host(self) -> str:
        return str(self._server.effective_host)

    def start(self) -> WebServer:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._server.run()
        except Exception:
            if self._stopping:  # stop() closed the socket under the loop: expected
                log.debug("web server %s stopped", self.name)
            else:  # logged for the watchdog's health check
                log.exception("web server %s died", self.name)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        server = self._server
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=int(timeout))
        with contextlib.suppress(Exception):
            server.close()
        # Open keep-alive connections keep waitress' loop going: close them too.
        for channel in list(server._map.values()):
            with contextlib.suppress(Exception):
                channel.close()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout)
        if self.unix_socket is not None:
            self.unix_socket.unlink(missing_ok=True)


def _guarded(app: Any, host: str, port: int, limits: Limits,
             options: dict[str, Any]) -> _GuardedServer:
    """waitress' TCP server for one address, with the per-client and deadline guards."""
    adj = Adjustments(host=host, port=port, **options)
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    # One address: the portal listens on one (an IPv4 address or 0.0.0.0).
    listen: list[tuple[int, int, int, Any]] = getattr(adj, "listen")  # noqa: B009 (stubs: str)
    family, kind, proto, sockaddr = listen[0]
    server = _GuardedServer(app, {}, True, None, dispatcher=dispatcher, adj=adj,
                            sockinfo=(family, kind, proto, sockaddr))
    server.limits = limits
    return server

