"""Helpers for the cloud link tests: a broker per test, a monitor subscriber, a TCP proxy.

Nothing here sleeps to synchronise: waits are on conditions (a message arrived) with
timeouts, so a slow machine only makes tests slower, never wrong.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gatewayd import homie
from gatewayd.cloud import telemetry
from gatewayd.cloud.link import CloudLink
from gatewayd.config import CloudConfig
from gatewayd.credentials import CloudCredentials
from gatewayd.simulator.broker import MONITOR_USER, Broker
from gatewayd.simulator.procs import free_port
from tests.helpers import run_async

WSP = "user@example.com"
TOKEN = "s3cret-token-value"
HUB_ID = "aa-bb-cc-dd-ee-ff"
_ids = itertools.count()
T = TypeVar("T")


run = run_async


def fast_config(**overrides: Any) -> CloudConfig:
    """Timings for tests: quick heartbeats and reconnects (still bounded and jittered)."""
    values: dict[str, Any] = {"heartbeat_interval": 0.2, "reconnect_min": 0.05,
                              "reconnect_max": 0.3, "keepalive": 5, "connect_timeout": 5.0}
    values.update(overrides)
    return CloudConfig(**values)


def creds_for(broker: Broker | None, *, token: str = TOKEN, host: str | None = None,
              port: int | None = None, mqtts_port: int = 0) -> CloudCredentials:
    """The test account's credentials for ``broker`` (or an explicit host and port)."""
    host = host or (broker.host if broker else "127.0.0.1")
    port = port or (broker.port if broker else 1883)
    return CloudCredentials(wsp=WSP, token=token, host=host, port=port, mqtts_port=mqtts_port)


def make_broker(workdir: Path, **kwargs: Any) -> Broker:
    broker = Broker(workdir, **kwargs)
    broker.add_account(WSP, TOKEN)  # before start(): no reload race
    return broker.start()


# ---- devices --------------------------------------------------------------------------------

FAKE_TELEMETRY: dict[str, Callable[[], Any]] = {
    "ip": lambda: "10.0.0.2", "signal": lambda: 70, "uptime": lambda: 123,
    "memory": lambda: 40, "cpu-temperature": lambda: 48.5,
}


def make_hub(**handlers: Any) -> homie.Device:
    """The hub with all five telemetry values, an option and a settable node."""
    switch = homie.Node("switch", "Switch", properties=[
        homie.Property("state", "On", datatype="boolean", settable=True, value=False,
                       on_set=handlers.get("state")),
        homie.Property("level", "Level", datatype="integer", format="0:100", unit="%",
                       settable=True, value=10, on_set=handlers.get("level")),
        homie.Property("mode", "Mode", datatype="enum", format="auto,manual", value="auto"),
    ])
    location = homie.Property("location", "Location", settable=True, value="hall")
    return telemetry.hub_device(HUB_ID, "Test hub", "aa:bb:cc:dd:ee:ff", fw_name="test-hub",
                                fw_version="1", readers=FAKE_TELEMETRY, options=[location],
                                nodes=[switch])


def make_child(device_id: str = "virtual-lamp", on_set: Any = None) -> homie.Device:
    return homie.Device(device_id, "Lamp", mac="02:00:00:00:00:02", fw_name="virtual",
                        fw_version="1", localip="10.0.0.2", nodes=[
                            homie.Node("light", "Light", properties=[
                                homie.Property("power", "Power", datatype="boolean",
                                               settable=True, value=False, on_set=on_set),
                                homie.Property("press", "Press", datatype="string",
                                               retained=False),
                            ])])


def make_link(cfg: CloudConfig | None = None, hub: homie.Device | None = None,
              **kwargs: Any) -> CloudLink:
    return CloudLink(cfg or fast_config(), hub or make_hub(), **kwargs)


# ---- the monitor ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.payload)


class Monitor:
    """A superuser subscriber that records every message it sees.

    It resubscribes after a reconnect, so it survives a broker restart.
    """

    def __init__(self, broker: Broker, topic: str = "#") -> None:
        self.broker = broker
        self.topic = topic
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"test-monitor-{next(_ids)}")
        self.client.username_pw_set(MONITOR_USER, broker.monitor_password)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message

    def __enter__(self) -> Monitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 5.0) -> Monitor:
        self.client.connect(self.broker.host, self.broker.port, keepalive=5)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            raise AssertionError("monitor did not get its subscription in time")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain),
                                          time.monotonic()))
            self._cond.notify_all()

    def publish(self, topic: str, payload: str | bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    # ---- reading -----------------------------------------------------------------------

    def mark(self) -> int:
        with self._cond:
            return len(self.messages)

    def since(self, mark: int = 0, topic: str | None = None) -> list[Received]:
        with self._cond:
            found = self.messages[mark:]
        return [m for m in found if topic is None or m.topic == topic]

    def values(self, topic: str, mark: int = 0) -> list[str]:
        return [m.text for m in self.since(mark, topic)]

    def latest(self) -> dict[str, str]:
        """Last payload per topic; empty payloads (deletions) remove the topic."""
        state: dict[str, str] = {}
        for m in self.since():
            if m.payload:
                state[m.topic] = m.text
            else:
                state.pop(m.topic, None)
        return state

    def _until(self, found: Callable[[list[Received]], T | None], mark: int,
               timeout: float, failure: Callable[[list[Received]], str]) -> T:
        """Wait until ``found`` gives something for the messages since ``mark``; past
        ``timeout``, fail with ``failure`` of them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                since = self.messages[mark:]
                result = found(since)
                if result is not None:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(failure(since))
                self._cond.wait(left)

    def wait_for(self, topic: str, value: str | None = None, *, mark: int = 0,
                 timeout: float = 5.0,
                 predicate: Callable[[Received], bool] | None = None) -> Received:
        """The first message since ``mark`` on ``topic`` (with ``value``, if given)."""
        def match(m: Received) -> bool:
            return (m.topic == topic and (value is None or m.text == value)
                    and (predicate is None or predicate(m)))

        def failure(since: list[Received]) -> str:
            seen = [x.text for x in since if x.topic == topic]
            return f"timed out after {timeout}s waiting for {topic} = {value!r}; saw {seen[-10:]}"

        return self._until(lambda since: next(filter(match, since), None), mark, timeout,
                           failure)

    def wait_first(self, wanted: dict[str, str | None], *, mark: int = 0,
                   timeout: float = 5.0) -> Received:
        """The first message since ``mark`` on any topic of ``wanted`` (with its value,
        where one is given): for a command whose outcome is an echo or an error."""
        def match(m: Received) -> bool:
            return m.topic in wanted and wanted[m.topic] in (None, m.text)

        def failure(since: list[Received]) -> str:
            seen = [(x.topic, x.text) for x in since if x.topic in wanted]
            return f"timed out after {timeout}s waiting for any of {wanted}; saw {seen[-10:]}"

        return self._until(lambda since: next(filter(match, since), None), mark, timeout,
                           failure)

    def wait_count(self, topic: str, count: int, *, mark: int = 0,
                   timeout: float = 5.0) -> list[Received]:
        def found(since: list[Received]) -> list[Received] | None:
            on_topic = [m for m in since if m.topic == topic]
            return on_topic if len(on_topic) >= count else None

        def failure(since: list[Received]) -> str:
            got = sum(1 for m in since if m.topic == topic)
            return f"timed out waiting for {count} messages on {topic}; got {got}"

        return self._until(found, mark, timeout, failure)

    async def await_for(self, topic: str, value: str | None = None, **kw: Any) -> Received:
        """wait_for() without blocking the event loop the hub runs on."""
        return await asyncio.to_thread(self.wait_for, topic, value, **kw)

    async def await_first(self, wanted: dict[str, str | None], **kw: Any) -> Received:
        return await asyncio.to_thread(self.wait_first, wanted, **kw)

    async def await_count(self, topic: str, count: int, **kw: Any) -> list[Received]:
        return await asyncio.to_thread(self.wait_count, topic, count, **kw)


def retained_snapshot(broker: Broker, topic: str, timeout: float = 5.0) -> dict[str, Received]:
    """The retained messages under ``topic``, as a fresh subscriber receives them.

    A marker published after subscribing tells when the retained burst is complete (the
    broker delivers in order).
    """
    with Monitor(broker, "#") as mon:
        marker = f"{topic.rstrip('#').rstrip('/')}/test-marker-{next(_ids)}"
        mon.publish(marker, "end")
        mon.wait_for(marker, "end", timeout=timeout)
        return {m.topic: m for m in mon.since() if m.retain and m.payload
                and mqtt.topic_matches_sub(topic, m.topic)}


def seed_retained(broker: Broker, topics: list[str], payload: str = "x") -> None:
    """Leave ``topics`` retained on ``broker``, as older sessions of a hub would have."""
    with Monitor(broker, f"seed-{next(_ids)}/none") as mon:
        sent = [mon.client.publish(t, payload, qos=1, retain=True) for t in topics]
        for info in sent:
            info.wait_for_publish(10)


# ---- a TCP proxy whose connections the test can cut --------------------------------------

class TcpProxy:
    """Forwards a local port to the broker; :meth:`cut` drops live connections abruptly.

    Cutting looks to the broker exactly like a hub that vanished (power loss, process
    killed): the TCP connection ends without an MQTT DISCONNECT, so the broker publishes
    the hub's last will. The proxy keeps listening, so the hub can reconnect. While
    ``paused`` is set, new connections are closed at once, as if the broker were down;
    while ``drop_pubacks`` (``drop_publishes``) is set, the broker's PUBACKs (PUBLISHes)
    never reach the hub, as a broker whose outgoing queue to the hub is full drops them
    (mosquitto since its fix for CVE-2023-28366, keeping a dropped QoS 1 PUBLISH in flight).
    While ``hold`` is set the proxy stops reading from the hub, as a broker that stops
    reading does, until the hub's socket is full; ``holding`` is set once a connection has
    stopped reading (before that, a read already under way may still forward what the hub
    sends next; clear it with ``hold`` to wait for a later hold). ``from_hub`` counts the
    hub's packets by MQTT packet type (12 is PINGREQ).
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.host = "127.0.0.1"
        self.port = free_port(self.host)
        self._server = socket.create_server((self.host, self.port))
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._closed = False
        self.accepted = 0
        self.paused = threading.Event()
        self.drop_pubacks = threading.Event()
        self.pubacks_dropped = 0
        self.drop_publishes = threading.Event()
        self.publishes_dropped = 0
        self.hold = threading.Event()
        self.holding = threading.Event()
        self.from_hub: collections.Counter[int] = collections.Counter()
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.paused.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
                self.accepted += 1
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        from_broker = bytearray()  # cut into whole MQTT packets, to drop PUBACKs
        from_hub = bytearray()  # cut into whole packets, to count them by type
        try:
            while True:
                held = self.hold.is_set()
                sources = [b] if held else [a, b]
                if held:
                    self.holding.set()
                readable, _, _ = select.select(sources, [], [], 0.05)
                for src in readable:
                    data = src.recv(65536)
                    if not data:
                        return
                    if src is a:
                        b.sendall(data)
                        from_hub += data
                        for packet in _whole_packets(from_hub):
                            self.from_hub[packet[0] >> 4] += 1
                        continue
                    from_broker += data
                    for packet in _whole_packets(from_broker):
                        if packet[0] >> 4 == 4 and self.drop_pubacks.is_set():
                            self.pubacks_dropped += 1
                        elif packet[0] >> 4 == 3 and self.drop_publishes.is_set():
                            self.publishes_dropped += 1
                        else:
                            a.sendall(packet)
        except (OSError, ValueError):
            return
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.close()

    def cut(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self._server.close()
        self.cut()


def _whole_packets(buffer: bytearray) -> list[bytes]:
    """Take the complete MQTT packets off the front of ``buffer``."""
    packets = []
    while len(buffer) >= 2:
        length, multiplier, i = 0, 1, 1
        while True:
            if i >= len(buffer):
                return packets
            byte = buffer[i]
            length += (byte & 127) * multiplier
            multiplier *= 128
            i += 1
            if not byte & 128:
                break
        if len(buffer) < i + length:
            return packets
        packets.append(bytes(buffer[:i + length]))
        del buffer[:i + length]
    return packets
