"""How the hub opens a connection to a broker: one deadline for the whole of it.

paho 2.2.0 opens its connection with ``socket.create_connection`` and its
``connect_timeout`` bounds each step on its own: the DNS lookup not at all (glibc's
resolver waits 5 s per try and server, twice), then each address the name has in turn, then
the TLS handshake. A dead resolver, or a name whose first address drops packets (an AAAA on
a network without IPv6), made one attempt last several ``connect_timeout`` s.
:class:`DialingClient` opens it within one deadline that the caller sets for the attempt
(:attr:`DialingClient.deadline`): the lookup runs on a thread of its own, waited for until
the deadline (:class:`Lookups`); the addresses are tried as RFC 8305 (Happy Eyeballs) says,
the next one started while the earlier ones still try, alternating families
(:func:`connect_first`); the TLS handshake gets what time is left.

paho starts its keepalive clock in ``reconnect()`` before it opens the socket, so a
connect that took ``keepalive`` seconds or more was closed by the first ``loop_misc()``
(its "nothing received for a keepalive period") before CONNACK could arrive: the clock
starts again here once the connection is open, as it would if paho set its timestamps
after ``_create_socket()``, which upstream could do.

TLS names the host without one trailing dot (``broker.example.`` is an absolute DNS name
that certificates and SNI write without it), and an IPv6 literal without its zone. An
:data:`~gatewayd.cloud.endpoint.Opener` the daemon was given (the simulator's uplink) opens
the TCP connection instead, with the time left; through a proxy (PySocks installed and
configured) paho opens it, as before.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import itertools
import os
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import paho.mqtt.client as mqtt

from gatewayd.cloud.attempts import LookupTimeout
from gatewayd.cloud.endpoint import Opener, tls_name

if TYPE_CHECKING:
    from paho.mqtt.client import SocketLike

ATTEMPT_DELAY = 0.25  # RFC 8305's "connection attempt delay": the next address starts then
# A lookup's answer that came after its attempt gave up serves the next attempt this long:
# past reconnect_max's default backoff (120 s), short of a DNS change mattering.
KEEP_ANSWER = 300.0
AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]


class DialingClient(mqtt.Client):
    """``paho.mqtt.client.Client`` opening its connection within :attr:`deadline`."""

    def __init__(self, *args: Any, opener: Opener | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._opener = opener
        self._lookups = Lookups()
        # time.monotonic() by which the next connect must be done; None: connect_timeout
        # from when it starts
        self.deadline: float | None = None
        self._until = 0.0

    def _left(self) -> float:
        return max(0.0, self._until - time.monotonic())

    def _create_socket(self) -> SocketLike:
        # paho 2.2.0's, called by reconnect() on the caller's connect thread
        self._until = (self.deadline if self.deadline is not None
                       else time.monotonic() + self._connect_timeout)
        sock = super()._create_socket()
        with self._msgtime_mutex:  # the keepalive clock starts now (see above)
            self._last_bytes_received = self._last_msg_out = mqtt.time_func()
        return sock

    def _create_socket_connection(self) -> socket.socket:
        source = (self._bind_address, self._bind_port)
        left = self._left()
        if left <= 0:
            raise TimeoutError("timed out")
        if self._opener is not None:
            return self._opener((self._host, self._port), left, source)
        if getattr(mqtt, "socks", None) is not None and self._get_proxy():
            return super()._create_socket_connection()
        addresses = self._lookups.resolve(self._host, self._port, self._until)
        return connect_first(addresses, self._until, source if any(source) else None)

    def _ssl_wrap_socket(self, tcp_sock: socket.socket) -> ssl.SSLSocket:
        # paho's, but with the name TLS knows and the time left. The context checks the
        # host name (net.py's always does; paho's fallback, ssl.match_hostname, is gone
        # from Python 3.12).
        if self._ssl_context is None:
            raise ValueError("TLS without a context")
        sock = self._ssl_context.wrap_socket(tcp_sock, server_hostname=tls_name(self._host),
                                             do_handshake_on_connect=False)
        left = self._left()
        if left <= 0:
            sock.close()
            raise TimeoutError("no time was left for the TLS handshake")
        sock.settimeout(left)
        sock.do_handshake()
        return sock

    def close_unserved(self) -> None:
        """Close what a connect nobody serves opened (on the connect thread)."""
        self._sock_close()


class Lookups:
    """``getaddrinfo`` on a thread of its own, waited for until a deadline.

    The resolver's own timeouts are longer than a connect attempt may be. A lookup that
    outlives its attempt goes on, and the next attempt for the same name waits for it
    rather than starting another: at most one thread per name. One that answered after its
    attempt gave up is the next attempt's, if it is at most :data:`KEEP_ANSWER` seconds
    old: a resolver always slower than ``connect_timeout`` must not make every attempt
    fail. An answer taken is not kept (the next attempt asks again: the broker's address
    may change), nor is a failure.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[tuple[str, int], concurrent.futures.Future[Sequence[AddrInfo]]] = {}
        self._answered: dict[tuple[str, int], float] = {}  # when a lookup ended (monotonic)

    def resolve(self, host: str, port: int, deadline: float) -> Sequence[AddrInfo]:
        with contextlib.suppress(socket.gaierror):  # an address literal: no lookup
            return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                      flags=socket.AI_NUMERICHOST)
        key = (host, port)
        with self._lock:
            pending = self._running.get(key)
            if pending is None or (pending.done() and not self._unclaimed(key, pending)):
                pending = self._running[key] = concurrent.futures.Future()
                pending.add_done_callback(lambda _: self._ended(key))
                threading.Thread(target=_lookup, args=(host, port, pending), daemon=True,
                                 name="cloud-resolve").start()
        try:
            found = pending.result(max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise LookupTimeout(host) from None
        finally:
            with self._lock:
                if pending.done() and self._running.get(key) is pending:
                    del self._running[key]  # taken (or failed): the next attempt asks again
        return found

    def _ended(self, key: tuple[str, int]) -> None:
        with self._lock:
            self._answered[key] = time.monotonic()

    def _unclaimed(self, key: tuple[str, int],
                   done: concurrent.futures.Future[Sequence[AddrInfo]]) -> bool:
        """A lookup that answered after its attempt gave up, recently enough to use."""
        return (done.exception() is None
                and time.monotonic() - self._answered.get(key, -KEEP_ANSWER) < KEEP_ANSWER)


def _lookup(host: str, port: int,
            into: concurrent.futures.Future[Sequence[AddrInfo]]) -> None:
    try:
        into.set_result(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    except BaseException as exc:  # handed to whoever waits for it
        into.set_exception(exc)


def interleave(addresses: Sequence[AddrInfo]) -> list[AddrInfo]:
    """The resolver's order (RFC 6724), families alternating from the first (RFC 8305)."""
    if not addresses:
        return []
    first = [a for a in addresses if a[0] == addresses[0][0]]
    other = [a for a in addresses if a[0] != addresses[0][0]]
    return [a for pair in itertools.zip_longest(first, other) for a in pair if a is not None]


def connect_first(addresses: Sequence[AddrInfo], deadline: float,
                  source: tuple[str, int] | None = None) -> socket.socket:
    """A TCP connection to the first of ``addresses`` that answers by ``deadline``.

    The next address starts after :data:`ATTEMPT_DELAY`, or at once when one fails, while
    the earlier ones go on. Refused by any: :class:`ConnectionRefusedError` (a host said
    nothing listens). Else, at the deadline, :class:`TimeoutError`; else the last error.
    """
    queue = interleave(addresses)
    errors: list[OSError] = []
    pending: set[socket.socket] = set()
    winner: socket.socket | None = None
    with selectors.DefaultSelector() as selector:
        try:
            next_start = 0.0
            while (queue or pending) and winner is None:
                now = time.monotonic()
                if now >= deadline:
                    break
                if queue and (not pending or now >= next_start):
                    sock = _start(queue.pop(0), source, errors)
                    if sock is not None:
                        pending.add(sock)
                        selector.register(sock, selectors.EVENT_WRITE)
                        next_start = now + ATTEMPT_DELAY
                    continue
                wait = deadline - now
                if queue:
                    wait = min(wait, next_start - now)
                for key, _ in selector.select(max(wait, 0.0)):
                    sock = cast(socket.socket, key.fileobj)
                    selector.unregister(sock)
                    pending.discard(sock)
                    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if code == 0 and winner is None:
                        winner = sock
                        continue
                    sock.close()
                    if code:
                        errors.append(OSError(code, os.strerror(code)))
                        next_start = time.monotonic()  # the next address starts now
        finally:
            for sock in pending:
                sock.close()
    if winner is not None:
        winner.settimeout(max(deadline - time.monotonic(), 0.001))
        return winner
    refused = [e for e in errors if isinstance(e, ConnectionRefusedError)]
    if refused:
        raise refused[-1]
    if queue or pending or not errors:
        raise TimeoutError("timed out")
    raise errors[-1]


def _start(address: AddrInfo, source: tuple[str, int] | None,
           errors: list[OSError]) -> socket.socket | None:
    """A socket connecting to ``address`` without blocking; None if that failed at once."""
    family, kind, proto, _, sockaddr = address
    try:
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        errors.append(exc)
        return None
    try:
        sock.setblocking(False)
        if source is not None:
            sock.bind(source)
        code = sock.connect_ex(sockaddr)
    except OSError as exc:
        sock.close()
        errors.append(exc)
        return None
    if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
        sock.close()
        errors.append(OSError(code, os.strerror(code)))
        return None
    return sock


# ---- the connect thread ------------------------------------------------------------------

async def on_own_thread(connect: Callable[[], None], close: Callable[[], None],
                        stopping: asyncio.Event) -> bool:
    """Run the blocking ``connect`` on a daemon thread of its own: a connect stuck in DNS
    or TCP must neither block the loop nor hold up the process's exit (the default executor
    would). True once it has connected (its exception raised); False if ``stopping`` came
    first: the thread then ``close``\\ s what it opened when it is done, by the attempt's
    deadline, and a stop need not wait for it."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    lock = threading.Lock()
    state = ["connecting"]  # then "connected" (by the thread) or "abandoned" (by the loop)

    def settle(exc: BaseException | None) -> None:
        if not done.done():
            done.set_result(None) if exc is None else done.set_exception(exc)

    def work() -> None:
        error: BaseException | None = None
        try:
            connect()
        except BaseException as exc:  # handed to the loop, which classifies it
            error = exc
        with lock:
            abandoned = state[0] == "abandoned"
            state[0] = "connected"
        if abandoned:
            close()
            return
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=work, name="cloud-connect", daemon=True).start()
    stopped: asyncio.Future[Any] = asyncio.ensure_future(stopping.wait())
    waiters: list[asyncio.Future[Any]] = [done, stopped]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if not done.done():
        with lock:
            if state[0] == "connecting":
                state[0] = "abandoned"
                return False
    await done  # settled now or soon: the thread has finished
    return True
