"""The campaigns' MQTT client: the simulated cloud's superuser, as a cloud consumer sees it.

:class:`Recorder` subscribes to a filter, keeps the latest payload of every topic (live or
retained: after a broker restart the hub's republication may reach it either way) and every
message in order, and comes back by itself when the broker does. :func:`retained` reads
what the broker holds right now.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.harness import BenchWorld
from bench.zigbee import SCALE
from chaos.tally import Tally
from gatewayd.cloud.net import tcp_no_delay
from gatewayd.simulator.broker import MONITOR_USER
from gatewayd.simulator.procs import wait_until

MAX_MESSAGES = 200_000  # kept in order; beyond this only the latest values are kept


def _client(world: BenchWorld, name: str) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2,
                         client_id=f"chaos-{name}-{os.getpid()}-{time.monotonic_ns()}")
    client.username_pw_set(MONITOR_USER, world.broker.monitor_password)
    client.on_socket_open = tcp_no_delay
    client.reconnect_delay_set(1, 2)
    client.max_queued_messages_set(0)  # the flood queues as much as it likes: it is bounded
    return client


def _close(client: mqtt.Client) -> None:
    """Disconnect, then stop the network thread. paho's loop_stop waits until every QoS 1
    message it sent is acknowledged, which a flood over a dying broker may never be."""
    client.disconnect()
    stopper = threading.Thread(target=client.loop_stop, daemon=True, name="mqtt-stop")
    stopper.start()
    stopper.join(10)


class Publisher:
    """Publishes as the cloud's superuser; subscribes to nothing (a flood's own messages
    would come back to it)."""

    def __init__(self, world: BenchWorld) -> None:
        self._connected = threading.Event()
        self.client = _client(world, "publisher")
        self.client.on_connect = lambda *_: self._connected.set()
        self.client.connect(world.broker.host, world.broker.port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(15):
            _close(self.client)
            raise RuntimeError("the chaos MQTT publisher could not connect")

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=qos)

    def close(self) -> None:
        _close(self.client)


class Recorder:
    """Everything on ``filters``, from now on, across broker restarts."""

    def __init__(self, world: BenchWorld, *filters: str) -> None:
        self.lock = threading.Lock()
        self.latest: dict[str, bytes] = {}
        self.messages: list[tuple[float, str, bytes, bool]] = []
        self.connects = 0
        self._subscribed = threading.Event()
        self._filters = filters
        self.client = _client(world, "recorder")
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(world.broker.host, world.broker.port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(15):
            self.close()
            raise RuntimeError("the chaos MQTT client could not subscribe")

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        self.connects += 1
        client.subscribe([(f, 1) for f in self._filters])

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            payload = bytes(msg.payload)
            self.latest[msg.topic] = payload
            if len(self.messages) < MAX_MESSAGES:
                self.messages.append((time.monotonic(), msg.topic, payload, msg.retain))

    def since(self, start: int) -> list[tuple[float, str, bytes, bool]]:
        with self.lock:
            return self.messages[start:]

    def count(self) -> int:
        with self.lock:
            return len(self.messages)

    def wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        return wait_until(predicate, timeout, what, interval=0.02)

    def close(self) -> None:
        _close(self.client)


def retained(world: BenchWorld, topics: list[str], marker: str) -> dict[str, bytes]:
    """What the broker retains on ``topics`` now. ``marker`` is a topic nobody else uses:
    published after the subscriptions, it arrives after every retained message, so its
    arrival says they are all in. (Exact topics, not a filter: mosquitto queues at most
    1000 QoS 1 messages for a client and drops the rest, the marker with them.)"""
    got: dict[str, bytes] = {}
    done = threading.Event()
    token = f"chaos-marker-{time.monotonic_ns()}".encode()
    client = _client(world, "retained")

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == marker and msg.payload == token:
            done.set()
        elif msg.retain and msg.payload:
            got[msg.topic] = bytes(msg.payload)

    client.on_connect = lambda c, *_: c.subscribe([(t, 1) for t in [*topics, marker]])
    client.on_subscribe = lambda c, *_: c.publish(marker, token, qos=1)
    client.on_message = on_message
    client.connect(world.broker.host, world.broker.port, keepalive=10)
    client.loop_start()
    try:
        if not done.wait(20):
            raise TimeoutError(f"the retained messages of {len(topics)} topics did not arrive")
    finally:
        _close(client)
    return got


def audit_latest(world: BenchWorld, recorder: Recorder, finals: dict[str, int],
                 tally: Tally) -> None:
    """Count as ``lost`` each plug whose last value (``finals``: topic -> raw value of the
    report stream) is not what the subscriber saw last and what the broker retains."""
    want = {topic: str(raw / SCALE).encode() for topic, raw in finals.items()}

    def all_seen() -> bool:
        with recorder.lock:
            return all(recorder.latest.get(t) == v for t, v in want.items())
    try:
        recorder.wait(all_seen, 30, "every plug's last value at the subscriber")
    except TimeoutError:
        with recorder.lock:
            for topic, value in want.items():
                got = recorder.latest.get(topic)
                if got != value:
                    tally.problem("lost", f"{topic}: the subscriber's last value is {got!r}, "
                                          f"the plug's last report {value!r}")
    held = retained(world, list(want), f"{world.root}/chaos/marker")
    for topic, value in want.items():
        if held.get(topic) != value:
            tally.problem("lost", f"{topic}: the broker retains {held.get(topic)!r}, the plug's "
                                  f"last report was {value!r}")
