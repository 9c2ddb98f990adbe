"""The cloud link: the hub and its child devices on one MQTT connection (2Smart/Homie 3).

Everything here runs on the asyncio loop, and so does paho (:mod:`gatewayd.cloud.net`),
whose events reach us after it has finished each packet.

Publishing follows one rule: **the broker converges to the model**. The device objects hold
the latest value of every property. After every (re)connect each device's retained tree is
rendered lazily from the model and sent (a broker may have lost retained state), so values
changed while offline arrive once, latest per property. Everything that is not retained
state - non-retained values, notifications, command errors, REQ/RES requests, topic
clearings - waits in the bounded outbox, where a newer payload for the same property
replaces an older one. At most ``WINDOW`` QoS 1 publications are unacknowledged at a time,
so neither paho's queue nor ours grows with the broker's latency
(:mod:`gatewayd.cloud.publisher`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import time
from collections.abc import Callable, Hashable
from typing import Any

from gatewayd import homie
from gatewayd.cloud.attempts import CloudOutcome, CloudResult, issued_account
from gatewayd.cloud.commands import CommandRunner
from gatewayd.cloud.endpoint import Endpoint, Opener, host_port
from gatewayd.cloud.inbound import Inbound, MessageHandler, Tap
from gatewayd.cloud.net import Connection
from gatewayd.cloud.outcome import LinkStats, StartOutcome, heartbeats
from gatewayd.cloud.publisher import WINDOW, Publisher
from gatewayd.cloud.reqres import PlatformClient
from gatewayd.cloud.topics import check_relative, client_id_for
from gatewayd.config import CloudConfig
from gatewayd.credentials import CloudCredentials

log = logging.getLogger(__name__)

STOP_FLUSH = 3.0  # stop() waits this long for pending publications and the goodbye states

Listener = Callable[[CloudResult], None]


# ---- the link ----------------------------------------------------------------------------------

class CloudLink:
    """The hub's MQTT link to the cloud. All methods must be called on the asyncio loop."""

    def __init__(self, cfg: CloudConfig, hub: homie.Device, *, device_key: bytes | None = None,
                 client_id: str | None = None,
                 command_timeout: float = 10.0, max_commands: int = 64,
                 max_concurrent_commands: int = 8, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None, opener: Opener | None = None,
                 issued: bool = False) -> None:
        self._cfg = cfg
        self._opener = opener  # how its connections reach the broker (cloud/endpoint.py)
        self._issued = issued  # its accounts come from the platform: nobody typed them
        self._hub_id = hub.id
        self._client_id = client_id or client_id_for(hub.id)
        self._clock = clock
        self._rng = rng
        self._devices: dict[str, homie.Device] = {hub.id: hub}
        self._out = Publisher(cfg.offline_buffer, ack_timeout=2.0 * cfg.keepalive)
        self.sweep_turn = asyncio.Lock()  # held by a round of gatewayd.cloud.sweep: taps clash
        self._announce = True
        self._listeners: list[Listener] = []
        # A removal's clearing must outlive a restart: gatewayd.cloud.leftovers records it.
        self.on_child: Callable[[str, bool], None] = lambda device_id, removed: None
        self._conn: Connection | None = None
        self._creds: CloudCredentials | None = None
        self._root = ""
        self._gen = -1  # the connection attempt we are connected on
        self._connected = False
        self._stopping = False
        self._heartbeat: asyncio.Task[None] | None = None
        self._start: StartOutcome | None = None
        self._stats = LinkStats()
        self._commands = CommandRunner(accept=self._accept_command, reject=self._reject_command,
                                       timeout=command_timeout, max_pending=max_commands,
                                       max_concurrent=max_concurrent_commands)
        self._inbound = Inbound(self._devices, self._commands)  # filters, taps and /set
        # The one platform client (REQ/RES). Without a device key (tests) a random one: the
        # requests work the same, only a platform that knows the key could not check them.
        self.platform = PlatformClient(self, device_key or secrets.token_bytes(32), hub.id)

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self, creds: CloudCredentials, *, announce: bool = True) -> None:
        """Begin connecting; reconnects with backoff and jitter until :meth:`stop`.

        ``announce=False`` is a quiet session (an account being released): no device is
        published, no will, no heartbeat, no ``/set``; only the link's own subscriptions
        (the platform's answers) and what the caller publishes.
        """
        if self._conn is not None:
            raise RuntimeError("cloud link already started; stop() it first")
        loop = asyncio.get_running_loop()
        self._out.use_root(creds.root, announcing=announce)
        self._creds = creds
        self._root = creds.root
        self._announce = announce
        self._stopping = False
        self._start = StartOutcome(loop)
        endpoint = Endpoint(creds.host, creds.broker_port, creds.tls, self._cfg.ca_file)
        hub_state = f"{self.hub.base(self._root)}/$state"
        self._conn = Connection(
            endpoint, username=creds.username, password=creds.token,
            client_id=self._client_id, protocol=self._cfg.protocol,
            keepalive=self._cfg.keepalive, connect_timeout=self._cfg.connect_timeout,
            will=(hub_state, "lost") if announce else None,
            reconnect_min=self._cfg.reconnect_min,
            reconnect_max=self._cfg.reconnect_max, loop=loop, sink=self, rng=self._rng,
            window=WINDOW, opener=self._opener)
        log.info("cloud link: connecting to %s (%s, MQTT %s)", endpoint,
                 "TLS" if creds.tls else "plain TCP", self._cfg.protocol)
        self._conn.start()

    async def wait_result(self, timeout: float, *, first_only: bool = True,
                          closed_is_answer: bool = False) -> CloudResult:
        """This start()'s first outcome, or with ``first_only=False`` its definite one
        (:meth:`~gatewayd.cloud.outcome.StartOutcome.wait`); TIMEOUT if none came in time."""
        if self._start is None:
            raise RuntimeError("cloud link not started")
        return await self._start.wait(timeout, first_only=first_only, broker=self._broker(),
                                      closed_is_answer=closed_is_answer)

    async def stop(self, *, goodbye: bool = True) -> None:
        """Graceful end: ``$state=disconnected`` for every device (unless ``goodbye`` is
        False, or the session is quiet), then DISCONNECT (no will). If the broker has not
        acknowledged the hub's goodbye in time, no DISCONNECT: its will says ``lost``."""
        conn = self._conn
        if conn is None:
            return
        self._stopping = True
        said: asyncio.Future[bool] | None = None  # the hub's goodbye acknowledged
        if self._connected:
            self._out.stop_announcing()  # an unfinished republication is moot now
            if goodbye and self._announce:
                conn.make_room(len(self._devices))
                said = self._out.goodbye([*self.device_ids()[1:], self._hub_id])  # hub last
            self._pump()
            await self.flush(STOP_FLUSH)
        conn.stop(graceful=said is None or (said.done() and said.result()))
        if not await conn.join(STOP_FLUSH + 2):
            log.warning("cloud link: the connection did not end in time")
        self._conn = None
        self._lost("stopped")
        self._commands.cancel_all()
        if self._start is not None:
            self._start.stopped()
        log.info("cloud link: stopped")

    # ---- devices ---------------------------------------------------------------------------

    @property
    def hub(self) -> homie.Device:
        return self._devices[self._hub_id]

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def _live(self) -> bool:  # connected in a session that publishes devices (not quiet)
        return self._connected and self._announce

    @property
    def inbound_dropped(self) -> int:  # messages the hub had no room for (this session)
        return self._conn.dropped_messages if self._conn else 0

    @property
    def root(self) -> str:
        return self._root

    @property
    def credentials(self) -> CloudCredentials | None:
        """The account of the current (or last) session."""
        return self._creds

    def device_ids(self) -> list[str]:
        """The hub first, then its children."""
        return [self._hub_id, *(d for d in self._devices if d != self._hub_id)]

    def go_quiet(self) -> None:
        """From now on no device change goes out in this session (an account being
        released: nothing may re-create what is being cleared)."""
        self._announce = False
        self._out.stop_announcing()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None

    async def flush(self, timeout: float) -> bool:
        """Wait until nothing is waiting or in flight; False if that took too long."""
        return await self._out.flush(timeout)

    def clear_retained(self, topics: set[str]) -> None:
        """Delete retained topics of this account (empty payloads, ``$state`` ones first)."""
        self._out.clear_topics({t for t in topics if t.startswith(f"{self._root}/")})
        self._pump()

    def tap(self, topic_filter: str, handler: Tap | None) -> None:
        """Subscribe (``handler``) or unsubscribe (None) a temporary relative filter whose
        messages reach ``handler(topic, payload, retained)`` with absolute topics."""
        self._inbound.tap(topic_filter, handler)
        absolute = f"{self._root}/{topic_filter}"
        if handler is not None:
            self._conn_subscribe([absolute])
        elif self._conn is not None:
            self._conn.unsubscribe([absolute])

    def start_afresh(self) -> None:
        """A factory reset: the next session that publishes devices starts each from
        ``$state = init`` again, even with the same account."""
        self._out.start_afresh()

    def device(self, device_id: str) -> homie.Device:
        try:
            return self._devices[device_id]
        except KeyError:
            raise KeyError(f"unknown device {device_id!r}") from None

    def add_device(self, device: homie.Device) -> None:
        """Publish a device (idempotent: adding it again republishes it, no ``init``).

        Replacing a device with a new object of the same id clears the retained topics the
        new one no longer has.
        """
        old = self._devices.get(device.id)
        if device is not self.hub:  # a child reaches the cloud through the hub
            self.on_child(device.id, False)
            device.localip = device.localip or self.hub.localip
            device.mac = device.mac or self.hub.mac
        # Filled in first: a replacement clears only the topics its description lost.
        if old is not None and old is not device and self._root:
            stale = self._out.owned_topics(old) - device.topics(self._root)
            self._out.clear_topics(stale)
        self._devices[device.id] = device
        if self._live:
            if old is None:
                self._conn_subscribe(homie.set_filters(self._root, device.id))
            self._out.announce([device])
            self._pump()

    def remove_device(self, device_id: str) -> None:
        """Forget a child device and clear its retained topics (``$state`` first)."""
        if device_id == self._hub_id:
            raise ValueError("the hub device cannot be removed")
        device = self._devices.pop(device_id, None)
        if device is None:
            return
        self.on_child(device_id, True)  # before its clearings are queued
        self._out.forget(device)
        if self._root and self._live and self._conn is not None:
            self._conn.unsubscribe(homie.set_filters(self._root, device_id))
        self._pump()

    def set_value(self, device_id: str, node_id: str, property_id: str, value: Any) -> None:
        """Set and publish a property value (QoS 1; retained unless the property says not).

        ``node_id`` may also be ``$options``, ``$telemetry``, ``<node>/$options`` or
        ``<node>/$telemetry``. Raises KeyError for an unknown property and ValueError for a
        value its datatype/format does not allow.
        """
        device = self.device(device_id)
        path = f"{node_id}/{property_id}"
        try:
            prop = device.find(path)
        except KeyError:
            raise KeyError(f"device {device_id!r} has no property {path!r}") from None
        prop.set(value)
        if not self._root or not self._announce or (prop.retained and not self._connected):
            return  # the (re)publication after connecting carries the model's latest value
        topic = f"{device.base(self._root)}/{path}"
        payload = prop.payload or ""
        # Its device's: while the device's tree goes out, it waits for the tree's end.
        self._enqueue(homie.Message(topic, payload, retain=prop.retained), key=topic,
                      device=device_id)
        self._pump()

    def set_state(self, device_id: str, state: str) -> None:
        device = self.device(device_id)
        device.state = homie.check_state(state)
        if self._live:
            topic = f"{device.base(self._root)}/$state"
            self._enqueue(homie.Message(topic, state), key=topic, device=device_id)
            self._pump()

    def publish(self, topic: str, payload: str, *, retain: bool = False,
                done: asyncio.Future[bool] | None = None) -> None:
        """Queue a QoS 1 publication on ``<root>/<topic>`` (kept in the outbox if offline).

        A retained publication replaces one still waiting for the same topic; others queue.
        """
        absolute = self._absolute(topic)
        self._enqueue(homie.Message(absolute, payload, retain=retain),
                      key=absolute if retain else object(), done=done)
        self._pump()

    def add_subscription(self, topic_filter: str, handler: MessageHandler) -> None:
        """Subscribe to ``<root>/<topic_filter>`` now and after every reconnect.

        ``handler(topic, payload)`` runs on the loop with the topic relative to the root.
        """
        self._inbound.subscribe(topic_filter, handler)
        if self._connected:
            self._conn_subscribe([f"{self._root}/{topic_filter}"])

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(result)`` for every outcome: connects, failures, losses."""
        self._listeners.append(listener)

    def status(self) -> dict[str, Any]:
        """What ``gatewayctl status`` shows: no credentials, no user name."""
        creds = self._creds
        return {
            "broker": self._broker() if creds else None,
            "tls": creds.tls if creds else False,
            "protocol": self._cfg.protocol,
            "client_id": self._client_id,
            "root_topic": self._root or None,
            "started": self._conn is not None,
            "connected": self._connected,
            **self._stats.to_json(),  # connected_since, last_error(_at), connects
            "devices": len(self._devices),
            **self._out.status(),
            "dropped": self._out.outbox.dropped + self.inbound_dropped,
            "platform": self.platform.status(),
            "commands": self._commands.received,
            "command_errors": self._commands.rejected,
        }

    # ---- publication machinery ---------------------------------------------------------------

    def _broker(self) -> str:
        creds = self._creds
        return host_port(creds.host, creds.broker_port) if creds else "?"

    def _absolute(self, topic: str) -> str:
        if not self._root:
            raise RuntimeError("cloud link not started: no root topic yet")
        check_relative(topic, wildcards=False)
        return f"{self._root}/{topic}"

    def _enqueue(self, msg: homie.Message, *, key: Hashable, device: str | None = None,
                 done: asyncio.Future[bool] | None = None) -> None:
        self._out.enqueue(msg, key=key, device=device, done=done)

    def _pump(self) -> None:
        self._out.pump(self._conn if self._connected else None)

    def _conn_subscribe(self, filters: list[str]) -> None:
        for f in filters:
            if not f.startswith(f"{self._root}/"):
                raise ValueError(f"refusing to subscribe outside {self._root}/#: {f!r}")
        if self._conn is not None and filters:
            self._conn.subscribe(filters)

    # ---- ConnectionSink: events from the connection, on the loop ---------------------------

    def on_connected(self, gen: int, local_ip: str) -> None:
        if self._stopping or self._conn is None:
            return
        self._gen = gen
        self._connected = True
        self._stats.connected_since = self._clock()
        self._stats.connects += 1
        tls = " over TLS" if self._creds and self._creds.tls else ""
        log.info("cloud link: connected to %s%s", self._broker(), tls)
        if local_ip:
            # The address the cloud actually sees us use; every child reaches the cloud
            # through the hub, so its $localip is the hub's too.
            for device in self._devices.values():
                device.localip = local_ip
        filters = [f"{self._root}/{f}" for f in self._inbound.filters()]
        if self._announce:
            filters += [f for d in self._devices for f in homie.set_filters(self._root, d)]
            # The hub first: its will may have left "lost" behind.
            self._out.announce(self._devices.values())
            self._heartbeat = asyncio.get_running_loop().create_task(heartbeats(
                self._conn, self._beating, self._root, self._cfg.heartbeat_interval,
                self._pump))
        self._conn_subscribe(filters)
        # Listeners last: what they publish (a platform request sent again) goes out after
        # the SUBSCRIBE that lets its answer in.
        self._record(CloudResult(CloudOutcome.CONNECTED, f"connected to {self._broker()}{tls}"))
        self._pump()

    def on_connect_failed(self, gen: int, result: CloudResult) -> None:
        if self._stopping:
            return
        if self._issued:
            result = issued_account(result)
        # A hub offline for a day retries hundreds of times: say each new reason once.
        repeated = result.reason == self._stats.last_error
        log.log(logging.DEBUG if repeated else logging.WARNING, "cloud link: %s", result.reason)
        self._stats.failed(result.reason, self._clock())
        self._record(result)

    def on_connection_lost(self, gen: int, reason: str) -> None:
        if gen != self._gen or not self._connected:
            return
        self._lost(reason)
        if not self._stopping:
            self._stats.failed(reason, self._clock())
            log.warning("cloud link: %s; reconnecting", reason)
            self._notify_listeners(CloudResult(CloudOutcome.UNREACHABLE, reason))

    def _lost(self, reason: str) -> None:
        was_connected = self._connected
        self._connected = False
        self._stats.connected_since = None
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        self._out.connection_lost()
        if was_connected:
            log.debug("cloud link: connection ended (%s)", reason)

    def on_published(self, gen: int, mid: int) -> None:
        if gen != self._gen:
            return
        if self._out.acknowledged(mid):
            self._pump()

    def on_subscribed(self, mid: int, refused: list[str]) -> None:
        if refused:
            log.error("cloud link: the broker refused a subscription (%s)", ", ".join(refused))

    def on_message(self, topic: str, payload: bytes, retained: bool = False) -> None:
        self._inbound.route(self._root, topic, payload, retained)

    def _beating(self) -> list[homie.Device]:
        # A device's heartbeat follows its tree: apps hear no device before its $state.
        return [d for d in self._devices.values() if self._out.tree_out(d.id)]

    def _record(self, result: CloudResult) -> None:
        if self._start is not None:
            self._start.record(result)
        self._notify_listeners(result)

    def _notify_listeners(self, result: CloudResult) -> None:
        for listener in list(self._listeners):
            try:
                listener(result)
            except Exception:
                log.exception("cloud link: outcome listener failed")

    def _accept_command(self, device: homie.Device, path: str, value: Any) -> None:
        if self._devices.get(device.id) is not device:
            return  # removed or replaced while its owner was busy: nothing to echo
        node_id, _, property_id = path.rpartition("/")
        self.set_value(device.id, node_id, property_id, value)

    def _reject_command(self, device_id: str, path: str, code: str, message: str) -> None:
        if not self._root:
            return
        body = json.dumps({"code": code, "message": message})
        self._out.enqueue(homie.Message(homie.error_topic(self._root, device_id, path), body,
                                        retain=False), key=object(), expendable=True)
        self._pump()

