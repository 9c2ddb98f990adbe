"""The hub's uplink in the simulated world: its cloud connections live and die with it.

On a hub the cloud broker is on the internet, behind the Wi-Fi (or the cable) that
NetworkManager manages. In the simulator it is on loopback, where no Wi-Fi loss could touch
the hub's MQTT session: the hub would say "offline" and still run the cloud's commands. So
``gatewayd --simulate`` carries the hub's broker connections through a relay of its own,
which the simulated NetworkManager opens and closes (it announces ``up``, ``limited`` or
``down`` over a datagram socket: :mod:`gatewayd.simulator.nm.uplink`):

* ``up`` (NetworkManager CONNECTED_GLOBAL): bytes flow both ways.
* ``down`` (no routed link: the Wi-Fi network gone, the cable pulled) and ``limited`` (a
  link without internet, ``SetInternet false``): the relay stops carrying bytes, in both
  directions and without closing anything, as a Wi-Fi loss does to a TCP session: nobody is
  told. The broker ends the hub's session after 1.5 x its keepalive and publishes its will
  (``$state`` ``lost``); the hub finds out by its own keepalive (no PINGRESP) and starts
  reconnecting. If the uplink comes back first, the bytes held back flow on (TCP
  retransmits them), and a side that gave up meanwhile is seen closed by the other.
* A new connection while ``down`` fails at once with ``ENETUNREACH`` (no route, as on a hub
  without a default route); while ``limited`` it waits, as a SYN nobody answers does, until
  the uplink is back or the connect timeout (``cloud.connect_timeout``) has passed.

Which connections are the hub's: those its cloud link and its provisioning channel open.
The simulator gives the daemon :meth:`Uplink.open` as its ``cloud_opener``
(:data:`gatewayd.cloud.endpoint.Opener`), which the daemon passes to both, and their paho
client opens its TCP connections with it instead of dialling itself (the broker's
addresses, Happy Eyeballs: :mod:`gatewayd.cloud.dial`), given the attempt's time left; nothing
else in the process is touched, and ``gatewayd`` gives its daemon no opener. Everything
else (the app's and the platform's clients, the monitor) reaches the broker directly, as
servers in a data centre do. The hub's end of each relayed connection is a loopback TCP
socket, so ``$localip`` is what it was. Bounded: at most :data:`MAX_PAIRS` relayed
connections (the oldest is cut beyond that), each holding at most :data:`CHUNK` bytes per
direction.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# What the NetworkManager mock announces (gatewayd.simulator.nm.uplink, which runs in the
# mock's process only).
UP, LIMITED, DOWN = "up", "limited", "down"
MAX_PAIRS = 32
CHUNK = 64 * 1024
LONGEST_WAIT = 600.0  # a connect without a timeout of its own waits for the uplink this long


def _abort(sock: socket.socket) -> None:
    """Close with a reset, as a peer's TCP answers for a connection it no longer has."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _loopback_pair() -> tuple[socket.socket, socket.socket]:
    """Two connected loopback TCP sockets (Linux has no AF_INET socketpair)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(5)
        near = socket.create_connection(listener.getsockname(), timeout=5)
        try:
            far, peer = listener.accept()
            if peer != near.getsockname():  # someone else's connection: not ours to relay
                far.close()
                raise OSError(errno.ECONNABORTED, "relay pair hijacked")
        except BaseException:
            near.close()
            raise
    return near, far


@dataclass
class _Flow:
    src: socket.socket
    dst: socket.socket
    buf: bytes = b""
    eof: bool = False
    shut: bool = False


class _Pair:
    def __init__(self, hub: socket.socket, broker: socket.socket) -> None:
        hub.setblocking(False)
        broker.setblocking(False)
        self.socks = (hub, broker)
        self.flows = (_Flow(hub, broker), _Flow(broker, hub))

    @property
    def done(self) -> bool:
        return all(f.shut for f in self.flows)


class Uplink:
    """The relay; :meth:`start` it, then give the daemon :meth:`open` (its cloud opener)."""

    def __init__(self, state_socket: Path) -> None:
        self.state_socket = state_socket
        self._level = DOWN
        self._stopped = False
        self._cond = threading.Condition()
        self._new: collections.deque[_Pair] = collections.deque()
        self._pairs: list[_Pair] = []
        self._sel = selectors.DefaultSelector()
        self._state: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread: threading.Thread | None = None

    @property
    def level(self) -> str:
        with self._cond:
            return self._level

    @property
    def relayed(self) -> int:
        """How many connections the relay holds (at most MAX_PAIRS)."""
        return len(self._pairs)

    def start(self) -> Uplink:
        self.state_socket.parent.mkdir(parents=True, exist_ok=True)
        self.state_socket.unlink(missing_ok=True)  # a killed run's
        self._state = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._state.bind(str(self.state_socket))
        self._state.setblocking(False)
        self._wake_r.setblocking(False)
        self._sel.register(self._state, selectors.EVENT_READ)
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, name="sim-uplink", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._wake()
        if self._thread is not None:
            self._thread.join(5)
            if self._thread.is_alive():  # still at its pairs: they end with the process
                log.warning("uplink relay did not stop within 5 s")
                return
            self._thread = None
        for pair in self._pairs + list(self._new):
            for sock in pair.socks:
                sock.close()
        self._pairs.clear()
        self._new.clear()
        if self._state is not None:
            self._state.close()
            self._state = None
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()
        self.state_socket.unlink(missing_ok=True)

    def stopped(self) -> bool:
        return self._stopped

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    # ---- the hub's side: on its connect thread ----------------------------------------------

    def open(self, address: tuple[str, int], timeout: float | None,
             source_address: tuple[str, int] | None) -> socket.socket:
        """The hub's cloud opener (:data:`gatewayd.cloud.endpoint.Opener`): a connection
        to ``address`` through the relay, as ``socket.create_connection`` would open it
        directly, or the error a hub without this uplink would get."""
        wait = timeout if timeout is not None else LONGEST_WAIT
        deadline = time.monotonic() + wait
        with self._cond:
            while self._level == LIMITED and not self._stopped:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("timed out")
                self._cond.wait(left)
            if self._level != UP or self._stopped:
                raise OSError(errno.ENETUNREACH, os.strerror(errno.ENETUNREACH))
        broker = socket.create_connection(address, timeout, source_address)
        try:
            hub, relay = _loopback_pair()
        except BaseException:
            broker.close()
            raise
        with self._cond:
            if self.stopped():  # meanwhile: stop() has closed what it knew of
                for sock in (hub, relay, broker):
                    sock.close()
                raise OSError(errno.ENETUNREACH, os.strerror(errno.ENETUNREACH))
            self._new.append(_Pair(relay, broker))
        self._wake()
        hub.settimeout(timeout)  # as socket.create_connection leaves its socket
        return hub

    # ---- the relay: its own thread ----------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopped:
                self._arm()
                for key, mask in self._sel.select():
                    if key.fileobj is self._state:
                        self._read_state()
                    elif key.fileobj is self._wake_r:
                        self._take_new()
                    else:
                        self._serve(key.data, key.fileobj, mask)  # type: ignore[arg-type]
                self._settle()
        except Exception:  # the relay must not die silently: the hub would keep its session
            log.exception("simulated uplink: the relay failed")

    def _read_state(self) -> None:
        assert self._state is not None
        while True:
            try:
                data = self._state.recv(64)
            except BlockingIOError:
                return
            level = data.decode(errors="replace")
            if level not in (UP, LIMITED, DOWN):
                continue
            with self._cond:
                if level != self._level:
                    log.info("simulated uplink: %s", level)
                self._level = level
                self._cond.notify_all()

    def _take_new(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(256):
                pass
        with self._cond:
            new, self._new = list(self._new), collections.deque()
        for pair in new:
            if len(self._pairs) >= MAX_PAIRS:
                self._drop(self._pairs[0], abort=True)
            self._pairs.append(pair)

    def _serve(self, pair: _Pair, sock: socket.socket, mask: int) -> None:
        try:
            for flow in pair.flows:
                if mask & selectors.EVENT_READ and flow.src is sock and not flow.buf \
                        and not flow.eof:
                    data = sock.recv(CHUNK)
                    if data:
                        flow.buf = data
                    else:
                        flow.eof = True
                if mask & selectors.EVENT_WRITE and flow.dst is sock and flow.buf:
                    flow.buf = flow.buf[sock.send(flow.buf):]
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # a reset: the other side learns it the same way
            self._drop(pair, abort=True)

    def _settle(self) -> None:
        for pair in list(self._pairs):
            for flow in pair.flows:
                if flow.eof and not flow.buf and not flow.shut:
                    with contextlib.suppress(OSError):
                        flow.dst.shutdown(socket.SHUT_WR)
                    flow.shut = True
            if pair.done:
                self._drop(pair, abort=False)

    def _drop(self, pair: _Pair, *, abort: bool) -> None:
        if pair in self._pairs:
            self._pairs.remove(pair)
        for sock in pair.socks:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(sock)
            _abort(sock) if abort else sock.close()

    def _arm(self) -> None:
        """Watch what can move now: nothing at all while the uplink is not up."""
        up = self.level == UP
        for pair in self._pairs:
            for sock in pair.socks:
                events = 0
                if up:
                    for flow in pair.flows:
                        if flow.src is sock and not flow.buf and not flow.eof:
                            events |= selectors.EVENT_READ
                        if flow.dst is sock and flow.buf:
                            events |= selectors.EVENT_WRITE
                try:
                    current = self._sel.get_key(sock).events
                except KeyError:
                    current = 0
                if events == current:
                    continue
                if not events:
                    self._sel.unregister(sock)
                elif not current:
                    self._sel.register(sock, events, pair)
                else:
                    self._sel.modify(sock, events, pair)
