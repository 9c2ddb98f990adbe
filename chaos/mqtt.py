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


class Recorder:
    """Everything on ``topic_filter``, from now on, across broker restarts."""

    def __init__(self, world: BenchWorld, topic_filter: str) -> None:
        self.lock = threading.Lock()
        self.latest: dict[str, bytes] = {}
        self.messages: list[tuple[float, str, bytes, bool]] = []
        self.connects = 0
        self._subscribed = threading.Event()
        self._filter = topic_filter
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
        client.subscribe(self._filter, qos=1)

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

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=qos)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


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
        client.loop_stop()
        client.disconnect()
    return got
