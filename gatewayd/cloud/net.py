"""The MQTT connection: connect, classify failures, reconnect with jitter.

paho-mqtt runs on the asyncio loop through its external-loop interface (``loop_read``,
``loop_write``, ``loop_misc`` and the socket callbacks). Only the blocking connect (DNS, TCP,
TLS handshake) runs on a short-lived thread of its own, within the attempt's one deadline
(``connect_timeout`` from its start to CONNACK; :mod:`~gatewayd.cloud.dial`). paho's own
network thread cost each publication a wake-up byte, a select() wake-up of that thread, a
hand-over of the PUBACK back to the loop and the GIL going back and forth between them:
130 µs of CPU for a publication at 1000/s (bench/README.md, "The publication path").
Every event goes to a :class:`ConnectionSink` after paho has finished the packet, in order,
a burst of PUBACKs in one batch; paho's client reads a PUBACK as
:mod:`~gatewayd.cloud.acks` says.

We drive paho with ``connect()`` ourselves instead of ``loop_start()`` because paho's own
reconnect loop swallows the exception of a failed attempt (so we could not say "DNS" vs
"TCP" vs "TLS") and has no jitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gatewayd.cloud.acks import AckingClient, tcp_no_delay
from gatewayd.cloud.attempts import (
    CaFileError,
    CloudOutcome,
    CloudResult,
    classify_connack,
    classify_connect_error,
    closed_before_connack,
)
from gatewayd.cloud.dial import on_own_thread
from gatewayd.cloud.endpoint import Endpoint, Opener
from gatewayd.runtime.backoff import backoff_delay

log = logging.getLogger(__name__)

LOOP_TIMEOUT = 1.0  # how often keepalive, the connect timeout and a stop are looked at
STABLE_AFTER = 10.0  # a connection that lasted this long resets the backoff
MAX_PENDING_MESSAGES = 512  # inbound messages waiting for the asyncio loop; more are dropped
STOP_GRACE = 3.0  # how long a stop waits for DISCONNECT to be written
# what paho's read says when the broker ended the connection (else the hub gave up on it)
_BROKER_ENDED = (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_CONN_LOST,
                 MQTTErrorCode.MQTT_ERR_NO_CONN)


# ---- the connection --------------------------------------------------------------------------

class ConnectionSink(Protocol):
    """Receives the connection's events, always on the asyncio loop thread.

    ``gen`` numbers connection attempts; an event from an older attempt can be recognised
    and ignored.
    """

    def on_connected(self, gen: int, local_ip: str) -> None: ...
    def on_connect_failed(self, gen: int, result: CloudResult) -> None: ...
    def on_connection_lost(self, gen: int, reason: str) -> None: ...
    def on_published(self, gen: int, mid: int) -> None: ...
    def on_message(self, topic: str, payload: bytes, retained: bool) -> None: ...
    def on_subscribed(self, mid: int, refused: list[str]) -> None: ...


class Connection:
    """One paho client, driven by the asyncio loop, until :meth:`stop`.

    Only the blocking connect (DNS, TCP, TLS handshake, queueing CONNECT) runs on a
    short-lived thread; reading, writing, keepalive and every paho callback run on the loop.
    ``connect_timeout`` bounds each attempt as a whole, from the DNS lookup to CONNACK.
    ``opener`` opens its TCP connections instead of paho (:mod:`gatewayd.cloud.endpoint`).
    """

    def __init__(self, endpoint: Endpoint, *, username: str, password: str, client_id: str,
                 protocol: str, keepalive: int, connect_timeout: float,
                 will: tuple[str, str] | None, reconnect_min: float, reconnect_max: float,
                 loop: asyncio.AbstractEventLoop, sink: ConnectionSink,
                 rng: random.Random | None = None, window: int = 32,
                 opener: Opener | None = None) -> None:
        self.endpoint = endpoint
        self._loop = loop
        self._sink = sink
        self._rng = rng or random.SystemRandom()
        self._protocol_name = protocol
        self._keepalive = keepalive
        self._connect_timeout = connect_timeout
        self._reconnect = (reconnect_min, reconnect_max)
        self._stopping = asyncio.Event()
        self._pending_messages = 0
        self._events: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self._drain_scheduled = False
        self._dropped_messages = 0
        self._gen = 0
        self._connack_at: float | None = None
        self._deadline = 0.0  # time.monotonic() by which this attempt must have its CONNACK
        self._gave_up = ""  # why the hub ended this attempt's connection before CONNACK
        self._reported = False  # has this attempt's outcome been handed over?
        self._tls_ready = False
        self._task: asyncio.Task[None] | None = None
        self._loop_thread = threading.get_ident()
        self._watched: Any = None  # the socket the loop reads, once connected
        self._writer = False  # is the loop waiting for the socket to take more?
        self._flush_scheduled = False
        self._closed: asyncio.Future[None] | None = None
        self._graceful = True  # how a stop ends the connection
        self._window = window
        version = MQTTProtocolVersion.MQTTv5 if protocol == "5" else MQTTProtocolVersion.MQTTv311
        self._client = AckingClient(CallbackAPIVersion.VERSION2, client_id=client_id,
                                    clean_session=None if protocol == "5" else True,
                                    protocol=version, reconnect_on_failure=False,
                                    opener=opener)
        self._client.username_pw_set(username, password)
        self._client.connect_timeout = connect_timeout
        # Our own window keeps paho's queues small; these are a safety net.
        self._client.max_inflight_messages_set(window)
        self._client.max_queued_messages_set(window * 2)
        if will is not None:
            self._client.will_set(will[0], will[1], qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        # paho's external-loop interface: it tells us when it has bytes to write and when
        # its socket closes; we tell it when the socket is readable or writable.
        self._client.on_socket_open = tcp_no_delay
        self._client.on_socket_close = self._on_socket_close
        self._client.on_socket_register_write = self._on_register_write
        self._client.on_socket_unregister_write = self._on_unregister_write

    # ---- the asyncio side ----------------------------------------------------------------

    def start(self) -> None:
        self._loop_thread = threading.get_ident()
        self._task = self._loop.create_task(self._run(), name="cloud-mqtt")

    def stop(self, *, graceful: bool = True) -> None:
        """End for good: with DISCONNECT (so the broker drops the will) if ``graceful``,
        else by closing the socket (so the broker publishes the will)."""
        self._graceful = graceful
        self._stopping.set()
        self._leave()

    def _leave(self) -> None:
        if self._graceful:
            self._client.disconnect()
        elif self._watched is not None:  # else the socket is the connect thread's for now
            self._client.close_abruptly()

    async def join(self, timeout: float) -> bool:
        task = self._task
        if task is None:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), timeout)
        return task.done()

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> int | None:
        """Queue a publication; its mid, or None if paho did not take it."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            return None
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos == 0:
            return None
        return info.mid

    def drop(self, reason: str) -> None:
        """End this connection (a new one follows, as after any loss) because ``reason``.

        No DISCONNECT: if the new one cannot be made, the broker's will says the hub is
        gone (``lost``); the reconnect republishes ``$state``."""
        log.warning("cloud link: %s; reconnecting", reason)
        self._client.close_abruptly()

    def make_room(self, extra: int) -> None:
        """Let ``extra`` publications past the window at once (a stop's goodbyes)."""
        self._client.widen(self._window + extra, self._window * 2 + extra)

    def subscribe(self, filters: list[str], qos: int = 0) -> None:
        # QoS 0: with a clean session QoS 1 adds no durability, only broker state that a
        # full outgoing queue corrupts (mosquitto drops the PUBLISH but keeps it in flight,
        # and 20 such ghosts stop every later QoS 1 message to the hub for good).
        for i in range(0, len(filters), 64):  # keep SUBSCRIBE packets a sane size
            self._client.subscribe([(f, qos) for f in filters[i:i + 64]])

    def unsubscribe(self, filters: list[str]) -> None:
        if filters:
            self._client.unsubscribe(filters)

    @property
    def dropped_messages(self) -> int:
        return self._dropped_messages

    # ---- events for the sink ---------------------------------------------------------------

    def _handoff(self, fn: Callable[..., None], *args: Any) -> None:
        # paho calls us in the middle of reading a packet; the sink runs after it, in order,
        # a burst of PUBACKs in one batch. Bounded: messages by MAX_PENDING_MESSAGES,
        # PUBACKs by the window, the rest are one per connection attempt.
        self._events.append((fn, args))
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        events, self._events = self._events, []
        self._drain_scheduled = False
        for fn, args in events:
            try:
                fn(*args)
            except Exception:  # one failing handler must not lose the rest of the batch
                log.exception("cloud link: handling %s failed", getattr(fn, "__name__", fn))

    def _report_failure(self, result: CloudResult) -> None:
        self._reported = True
        self._handoff(self._sink.on_connect_failed, self._gen, result)

    # ---- connection attempts ---------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            self._gen += 1
            self._connack_at = None
            self._gave_up = ""
            self._reported = False
            self._deadline = self._client.deadline = time.monotonic() + self._connect_timeout
            try:
                self._prepare_tls()
                if not await on_own_thread(self._connect, self._client.close_unserved,
                                           self._stopping):
                    break  # stopped while connecting: the thread closes what it opens
            except Exception as exc:
                result = classify_connect_error(exc, self.endpoint.host, self.endpoint.port,
                                                self.endpoint.tls)
                log.debug("connect attempt %d to %s failed: %s", self._gen, self.endpoint,
                          result.reason)
                self._report_failure(result)
            else:
                try:
                    stable = await self._serve()
                except Exception:  # a bug here must not end the hub's link for good
                    log.exception("cloud link: serving the connection to %s failed",
                                  self.endpoint)
                    stable = False
                if stable:
                    attempt = 0
                if not self._reported and not self._stopping.is_set():
                    # e.g. a CONNACK paho rejects before calling on_connect, or a broker
                    # that closes the socket right after accepting it
                    self._report_failure(closed_before_connack(
                        self.endpoint.host, self.endpoint.port, self.endpoint.tls,
                        self._gave_up))
            if self._stopping.is_set():
                break
            delay = backoff_delay(attempt, *self._reconnect, self._rng)
            attempt += 1
            log.debug("reconnecting to %s in %.2f s", self.endpoint, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    def _prepare_tls(self) -> None:
        if not self.endpoint.tls or self._tls_ready:
            return
        # The system store unless a CA file is configured; host name always verified.
        try:
            context = ssl.create_default_context(cafile=self.endpoint.ca_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise CaFileError(self.endpoint.ca_file, getattr(exc, "strerror", None)
                              or getattr(exc, "reason", None) or str(exc)) from exc
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._client.tls_set_context(context)
        self._tls_ready = True

    def _connect(self) -> None:  # on the connect thread
        if self._protocol_name == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0
            self._client.connect(self.endpoint.host, self.endpoint.port, self._keepalive,
                                 clean_start=True, properties=props)
        else:
            self._client.connect(self.endpoint.host, self.endpoint.port, self._keepalive)

    async def _serve(self) -> bool:
        """Serve the connection until it ends; True if it had been up a while."""
        stop_seen: float | None = None
        timed_out = False
        sock = self._client.socket()
        if sock is None:
            return False
        closed = self._closed = self._loop.create_future()
        self._watched = sock
        self._loop.add_reader(sock, self._readable)
        self._schedule_flush()  # CONNECT, queued on the connect thread
        try:
            while not closed.done():
                now = time.monotonic()
                if self._stopping.is_set():
                    if stop_seen is None:
                        stop_seen = now
                        self._leave()
                    elif now - stop_seen > STOP_GRACE:
                        break  # the broker does not read; the process is leaving anyway
                elif self._connack_at is None and not timed_out and now > self._deadline:
                    timed_out = True
                    result = CloudResult(CloudOutcome.TIMEOUT,
                                         f"broker {self.endpoint} accepted the connection but "
                                         f"did not answer within the attempt's "
                                         f"{self._connect_timeout:g} s")
                    self._report_failure(result)
                    self._client.disconnect()
                if self._connack_at is not None:
                    # PINGREQ when due, and the end of a connection whose PINGRESP never
                    # came. Not before CONNACK: until then paho could only close the socket
                    # if CONNACK takes a keepalive period, and the deadline above is the
                    # attempt's bound.
                    self._client.loop_misc()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(closed), LOOP_TIMEOUT)
        finally:
            self._unwatch()
        up = self._connack_at
        return up is not None and time.monotonic() - up >= STABLE_AFTER

    # ---- the socket, on the loop -------------------------------------------------------------

    def _readable(self) -> None:
        try:
            rc = self._client.read_all()
        except Exception:  # a reader that raises again at every byte would spin the loop
            log.exception("cloud link: reading from %s failed; reconnecting", self.endpoint)
            self._gave_up = "reading its answer failed (the hub's log says why)"
            self._abort()
            return
        if rc not in _BROKER_ENDED and self._client.socket() is None:
            # paho closed it: what came was not MQTT it could read (not a CONNACK)
            self._gave_up = f"its answer was not MQTT (is {self.endpoint.port} an MQTT port?)"

    def _abort(self) -> None:
        """End this connection from our side: the next attempt closes paho's socket."""
        self._unwatch()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def _schedule_flush(self) -> None:
        # Everything published in one pass of the loop goes out in one flush.
        if not self._flush_scheduled and self._watched is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._watched is None:
            return
        self._client.loop_write()
        if self._client.want_write() and self._watched is not None and not self._writer:
            # the socket's buffer is full: write the rest when the broker has read
            self._writer = True
            self._loop.add_writer(self._watched, self._writable)

    def _writable(self) -> None:
        self._client.loop_write()

    def _unwatch(self) -> None:
        sock, self._watched = self._watched, None
        if sock is None:
            return
        self._loop.remove_reader(sock)
        if self._writer:
            self._writer = False
            self._loop.remove_writer(sock)

    # ---- paho callbacks (on the loop; the socket ones also on the connect thread) ------------

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            self._schedule_flush()
        # else: CONNECT, queued while connecting; _serve flushes it

    def _on_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if self._writer and threading.get_ident() == self._loop_thread:
            self._writer = False
            if self._watched is not None:
                self._loop.remove_writer(self._watched)

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if threading.get_ident() != self._loop_thread:
            return  # the connect thread closing what an earlier attempt left
        self._abort()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any,
                    reason: ReasonCode, properties: Any) -> None:
        gen = self._gen
        if reason.is_failure:
            result = classify_connack(reason, self.endpoint.host, self.endpoint.port,
                                      self._protocol_name)
            self._report_failure(result)
            return
        # paho would now resend QoS 1 messages left over from the previous connection.
        # The link re-queues its own copies and republishes retained state in order, so a
        # stale retry must not race fresher values.
        client.drop_out_messages()
        self._connack_at = time.monotonic()
        local_ip = ""
        # paho's SocketLike protocol omits getsockname(); TCP and TLS sockets have it.
        getsockname = getattr(client.socket(), "getsockname", None)
        if getsockname is not None:
            try:
                local_ip = str(getsockname()[0])
            except OSError:
                pass
        self._reported = True
        self._handoff(self._sink.on_connected, gen, local_ip)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any,
                       reason: ReasonCode, properties: Any) -> None:
        if self._connack_at is None:
            return  # never connected in this attempt: the failure was already reported
        if getattr(flags, "is_disconnect_packet_from_server", False):
            text = f"the broker closed the session ({reason.getName().lower()})"
        elif self._stopping.is_set():
            text = "disconnected on request"
        else:
            text = "connection to the broker lost"
        self._handoff(self._sink.on_connection_lost, self._gen, text)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int,
                    reason: ReasonCode, properties: Any) -> None:
        self._handoff(self._sink.on_published, self._gen, mid)

    def _on_message(self, client: mqtt.Client, userdata: Any,
                    message: mqtt.MQTTMessage) -> None:
        # Bounded: a flood of /set commands must not grow the loop's callback queue
        # without limit; excess messages are dropped and counted.
        if self._pending_messages >= MAX_PENDING_MESSAGES:
            self._dropped_messages += 1
            return
        self._pending_messages += 1
        self._handoff(self._deliver, message.topic, bytes(message.payload), bool(message.retain))

    def _deliver(self, topic: str, payload: bytes, retained: bool) -> None:
        self._pending_messages -= 1
        self._sink.on_message(topic, payload, retained)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      reason_codes: list[ReasonCode], properties: Any) -> None:
        refused = [rc.getName() for rc in reason_codes if rc.is_failure]
        self._handoff(self._sink.on_subscribed, mid, refused)
