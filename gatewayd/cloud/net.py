"""The MQTT connection's network thread: connect, classify failures, reconnect with jitter.

paho-mqtt does blocking work (DNS, TCP connect, TLS handshake) and runs its own select
loop, so it lives on one dedicated thread. That thread never touches asyncio objects or the
device model: every event is handed to the asyncio loop and handled there by a
:class:`ConnectionSink`. Events are batched: the thread appends to a list and wakes the
loop only when the list was empty, so a burst of PUBACKs costs one wake-up, not one each.

We drive paho with ``connect()`` + ``loop()`` ourselves instead of ``loop_start()`` because
paho's own reconnect loop swallows the exception of a failed attempt (so we could not say
"DNS" vs "TCP" vs "TLS") and has no jitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)

LOOP_TIMEOUT = 1.0  # paho's select() timeout; publish()/disconnect() wake it early
STABLE_AFTER = 10.0  # a connection that lasted this long resets the backoff
MAX_PENDING_MESSAGES = 512  # inbound messages waiting for the asyncio loop; more are dropped
STOP_GRACE = 3.0  # how long the thread waits for DISCONNECT to be written when stopping


class CloudOutcome(enum.StrEnum):
    CONNECTED = "connected"
    REFUSED = "refused"
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class CloudResult:
    outcome: CloudOutcome
    reason: str  # a sentence a user can act on; never contains a secret


class CaFileError(Exception):
    """The configured CA bundle cannot be loaded."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with *full jitter*: uniform(0, min(cap, base * 2**attempt)).

    A fleet of hubs that lost the same broker then spreads its reconnects over the whole
    window instead of arriving in synchronised waves.
    """
    ceiling = min(cap, base * 2.0 ** min(attempt, 60))
    return rng.uniform(0.0, ceiling)


# ---- outcome classification --------------------------------------------------------------

def classify_connect_error(exc: BaseException, host: str, port: int, tls: bool) -> CloudResult:
    """What went wrong before the broker could answer CONNECT, said for a user."""
    where = f"{host}:{port}"
    unreachable = CloudOutcome.UNREACHABLE
    if isinstance(exc, socket.gaierror):
        return CloudResult(unreachable, f"broker unreachable: DNS lookup of {host!r} failed "
                                        f"({exc.strerror or exc}): check the host name and "
                                        "the hub's Internet connection")
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = (exc.verify_message or str(exc)).rstrip(".")
        if "hostname mismatch" in detail.lower() or "not valid for" in detail.lower():
            return CloudResult(unreachable, f"TLS: certificate verify failed: hostname mismatch "
                                            f"(the broker's certificate is not valid for "
                                            f"{host!r})")
        hint = ""
        if "expired" in detail or "not yet valid" in detail:
            hint = ": check the hub's clock"
        elif "issuer" in detail or "self-signed" in detail or "self signed" in detail:
            hint = ": the certificate is not signed by a trusted CA (check cloud.ca_file)"
        return CloudResult(unreachable, f"TLS: certificate verify failed: {detail}{hint}")
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        hint = f" (is {port} a TLS port?)" if "WRONG_VERSION" in str(reason) else ""
        return CloudResult(unreachable, f"TLS handshake with {where} failed: {reason}{hint}")
    if isinstance(exc, ConnectionRefusedError):
        return CloudResult(unreachable, f"broker unreachable: TCP connection to {where} refused "
                                        "(nothing listens there: check host and port)")
    if isinstance(exc, TimeoutError):
        step = "TLS handshake with" if tls and "handshake" in str(exc) else "TCP connection to"
        return CloudResult(unreachable, f"broker unreachable: {step} {where} timed out")
    if isinstance(exc, CaFileError):
        return CloudResult(unreachable, f"TLS: cannot read the CA file {exc.path!r} "
                                        f"({exc.reason}): check cloud.ca_file")
    if isinstance(exc, ConnectionError):
        step = "TLS handshake with" if tls else "TCP connection to"
        return CloudResult(unreachable, f"broker unreachable: {step} {where} was closed "
                                        f"({exc.strerror or exc})")
    if isinstance(exc, OSError):
        text = exc.strerror or errno.errorcode.get(exc.errno or 0, "") or str(exc)
        return CloudResult(unreachable, f"broker unreachable: TCP connection to {where} failed "
                                        f"({text})")
    return CloudResult(unreachable, f"cannot connect to {where}: {exc}")


# MQTT 5 CONNACK reason codes (paho maps MQTT 3.1.1 return codes onto these).
_CREDENTIALS = {134, 135}  # bad user name or password, not authorized
_TRANSIENT = {136, 137, 151, 159}  # server unavailable, busy, quota exceeded, rate exceeded


def classify_connack(reason: ReasonCode, host: str, port: int, protocol: str) -> CloudResult:
    name = reason.getName()
    where = f"{host}:{port}"
    if reason.value in _CREDENTIALS:
        return CloudResult(CloudOutcome.REFUSED, f"broker refused the credentials "
                                                 f"({name.lower()}): check e-mail and token")
    if reason.value == 132:
        return CloudResult(CloudOutcome.REFUSED, f"broker {where} does not accept MQTT "
                                                 f"{protocol}: change cloud.protocol")
    if reason.value == 133:
        return CloudResult(CloudOutcome.REFUSED, f"broker {where} rejected the client id "
                                                 "(check hub.device_id)")
    if reason.value == 138:
        return CloudResult(CloudOutcome.REFUSED, f"broker {where} has banned this hub")
    if reason.value in _TRANSIENT:
        return CloudResult(CloudOutcome.UNREACHABLE, f"broker {where} is unavailable right now "
                                                     f"({name.lower()}); retrying")
    return CloudResult(CloudOutcome.REFUSED, f"broker {where} refused the connection "
                                             f"({name.lower()})")


# ---- the thread ----------------------------------------------------------------------------

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


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    tls: bool
    ca_file: str = ""

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class Connection:
    """One paho client and the thread that runs it, until :meth:`stop`."""

    def __init__(self, endpoint: Endpoint, *, username: str, password: str, client_id: str,
                 protocol: str, keepalive: int, connect_timeout: float,
                 will: tuple[str, str] | None, reconnect_min: float, reconnect_max: float,
                 loop: asyncio.AbstractEventLoop, sink: ConnectionSink,
                 rng: random.Random | None = None, window: int = 32) -> None:
        self.endpoint = endpoint
        self._loop = loop
        self._sink = sink
        self._rng = rng or random.SystemRandom()
        self._protocol_name = protocol
        self._keepalive = keepalive
        self._connect_timeout = connect_timeout
        self._reconnect = (reconnect_min, reconnect_max)
        self._stopping = threading.Event()
        self._pending_lock = threading.Lock()
        self._pending_messages = 0
        self._events: list[tuple[Callable[..., None], tuple[Any, ...]]] = []  # _pending_lock
        self._drain_scheduled = False  # guarded by _pending_lock
        self._dropped_messages = 0
        self._gen = 0  # written only by the network thread
        self._connack_at: float | None = None
        self._reported = False  # has this attempt's outcome been handed over?
        self._tls_ready = False

        version = MQTTProtocolVersion.MQTTv5 if protocol == "5" else MQTTProtocolVersion.MQTTv311
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                   clean_session=None if protocol == "5" else True,
                                   protocol=version, reconnect_on_failure=False)
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
        # With a write callback registered, publish()/subscribe() called from the asyncio
        # thread only queue the packet and wake select(); the socket is written by the
        # network thread alone (without it paho writes on the caller's thread).
        self._client.on_socket_register_write = _ignore_socket
        self._client.on_socket_unregister_write = _ignore_socket
        self._client.on_socket_open = tcp_no_delay
        self._thread = threading.Thread(target=self._run, name="cloud-mqtt", daemon=True)

    # ---- called from the asyncio thread ----------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask for a graceful end: DISCONNECT (so the broker drops the will), no reconnect."""
        self._stopping.set()
        self._client.disconnect()

    async def join(self, timeout: float) -> bool:
        await asyncio.to_thread(self._thread.join, timeout)
        return not self._thread.is_alive()

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> int | None:
        """Queue a publication; its mid, or None if paho did not take it."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            return None
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos == 0:
            return None
        return info.mid

    def drop(self, reason: str) -> None:
        """End this connection (a new one follows, as after any loss) because ``reason``."""
        log.warning("cloud link: %s; reconnecting", reason)
        self._client.disconnect()

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

    # ---- the network thread ----------------------------------------------------------------

    def _handoff(self, fn: Callable[..., None], *args: Any) -> None:
        # Bounded: messages by MAX_PENDING_MESSAGES, PUBACKs by the window, the rest are
        # one per connection attempt.
        with self._pending_lock:
            self._events.append((fn, args))
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: the daemon is exiting, nobody listens
            with self._pending_lock:
                self._events.clear()
                self._drain_scheduled = False

    def _drain(self) -> None:  # on the asyncio loop
        with self._pending_lock:
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

    def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            self._gen += 1
            self._connack_at = None
            self._reported = False
            try:
                self._prepare_tls()
                self._connect()
            except Exception as exc:
                result = classify_connect_error(exc, self.endpoint.host, self.endpoint.port,
                                                self.endpoint.tls)
                log.debug("connect attempt %d to %s failed: %s", self._gen, self.endpoint,
                          result.reason)
                self._report_failure(result)
            else:
                if self._serve():
                    attempt = 0
                if not self._reported and not self._stopping.is_set():
                    # e.g. a CONNACK paho rejects before calling on_connect, or a broker
                    # that closes the socket right after accepting it
                    result = CloudResult(CloudOutcome.UNREACHABLE,
                                         f"broker {self.endpoint} closed the connection "
                                         "before accepting it")
                    self._report_failure(result)
            if self._stopping.is_set():
                break
            delay = backoff_delay(attempt, *self._reconnect, self._rng)
            attempt += 1
            log.debug("reconnecting to %s in %.2f s", self.endpoint, delay)
            self._stopping.wait(delay)

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

    def _connect(self) -> None:
        if self._protocol_name == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0
            self._client.connect(self.endpoint.host, self.endpoint.port, self._keepalive,
                                 clean_start=True, properties=props)
        else:
            self._client.connect(self.endpoint.host, self.endpoint.port, self._keepalive)

    def _serve(self) -> bool:
        """Run paho's loop until the connection ends; True if it had been up a while."""
        started = time.monotonic()
        stop_seen: float | None = None
        timed_out = False
        while True:
            rc = self._client.loop(LOOP_TIMEOUT)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
            now = time.monotonic()
            if self._stopping.is_set():
                if stop_seen is None:
                    stop_seen = now
                    self._client.disconnect()
                elif now - stop_seen > STOP_GRACE:
                    break  # the broker does not read; the process is leaving anyway
            elif self._connack_at is None and not timed_out and \
                    now - started > self._connect_timeout:
                timed_out = True
                result = CloudResult(CloudOutcome.TIMEOUT,
                                     f"broker {self.endpoint} accepted the connection but did "
                                     f"not answer within {self._connect_timeout:g} s")
                self._report_failure(result)
                self._client.disconnect()
        up = self._connack_at
        return up is not None and time.monotonic() - up >= STABLE_AFTER

    # ---- paho callbacks (network thread) -----------------------------------------------------

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
        with self._pending_lock:
            if self._pending_messages >= MAX_PENDING_MESSAGES:
                self._dropped_messages += 1
                return
            self._pending_messages += 1
        self._handoff(self._deliver, message.topic, bytes(message.payload), bool(message.retain))

    def _deliver(self, topic: str, payload: bytes, retained: bool) -> None:  # on the loop
        with self._pending_lock:
            self._pending_messages -= 1
        self._sink.on_message(topic, payload, retained)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      reason_codes: list[ReasonCode], properties: Any) -> None:
        refused = [rc.getName() for rc in reason_codes if rc.is_failure]
        self._handoff(self._sink.on_subscribed, mid, refused)


def _ignore_socket(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    return None


def tcp_no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """Switch Nagle's algorithm off: MQTT packets are small and each one is due now.

    With Nagle on, a packet written while the previous one is unacknowledged waits for
    the peer's delayed ACK (up to 40 ms on Linux): a /set echo written right after the
    /set's PUBACK did, and the /set round trip took 44 ms at the median instead of 2.3 ms
    (bench/README.md).
    """
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
