"""The benchmarks' MQTT subscriber, run as its own process (as a cloud consumer would be).

``python -m bench.subscriber HOST PORT USER PASSWORD FILTER`` subscribes to FILTER and
then takes JSON commands on stdin, one per line, answering on stdout:

* ``{"cmd": "start", "final": {topic: raw}, "scale": 10, "keep": true}``: count live
  messages from now on (retained ones from the subscription are ignored). ``final``
  names the last value each topic will carry; when every topic has shown it (payload x
  ``scale``, rounded, equals ``raw``) it prints ``{"done": t}`` at once. ``keep`` keeps
  every ``[t, topic, payload]`` for latency figures. With ``"field": NAME`` the payload
  is a JSON object and the value is its member NAME (Zigbee2MQTT's device state), else
  the payload is the number (Homie). Answers ``{"started": true}``.
* ``{"cmd": "stop"}``: answers ``{"messages", "first", "last", "done", "records"}``.

Times are ``time.monotonic()``, the same clock as the daemon's event loop.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gatewayd.cloud.net import tcp_no_delay

MAX_RECORDS = 2_000_000  # a bound even for a mistaken "keep" on a long flood


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset({}, 1.0, False)

    def reset(self, final: dict[str, int], scale: float, keep: bool,
              field: str | None = None) -> None:
        self.final, self.scale, self.keep, self.field = dict(final), scale, keep, field
        self.messages = 0
        self.first: float | None = None
        self.last: float | None = None
        self.done: float | None = None
        self.records: list[tuple[float, str, str]] = []

    def on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        if msg.retain:
            return
        payload = msg.payload.decode(errors="replace")
        with self.lock:
            self.messages += 1
            if self.first is None:
                self.first = now
            self.last = now
            if self.keep and len(self.records) < MAX_RECORDS:
                self.records.append((now, msg.topic, payload))
            want = self.final.get(msg.topic)
            if want is not None and raw_value(payload, self.scale, self.field) == want:
                del self.final[msg.topic]
                if not self.final and self.done is None:
                    self.done = now
                    _say({"done": now})


def raw_value(payload: str, scale: float, field: str | None = None) -> int | None:
    """The raw report value a payload carries, or None."""
    try:
        value = json.loads(payload)[field] if field else payload
        return round(float(value) * scale)
    except (ValueError, TypeError, KeyError, IndexError):
        return None


_out_lock = threading.Lock()


def _say(data: dict[str, Any]) -> None:
    with _out_lock:
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()


def main(argv: list[str]) -> int:
    host, port, user, password, topic_filter = argv
    recorder = Recorder()
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{time.time_ns()}")
    client.username_pw_set(user, password)
    client.on_connect = lambda c, *_: c.subscribe(topic_filter, qos=1)
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = recorder.on_message
    client.on_socket_open = tcp_no_delay  # see bench.harness.Monitor
    client.connect(host, int(port), keepalive=60)
    client.loop_start()
    if not subscribed.wait(15):
        print("could not subscribe", file=sys.stderr)
        return 1
    _say({"subscribed": True})
    for line in sys.stdin:
        command = json.loads(line)
        with recorder.lock:
            if command["cmd"] == "start":
                recorder.reset(command.get("final", {}), command.get("scale", 1.0),
                               command.get("keep", False), command.get("field"))
                _say({"started": True})
            elif command["cmd"] == "stop":
                _say({"messages": recorder.messages, "first": recorder.first,
                      "last": recorder.last, "done": recorder.done,
                      "records": recorder.records})
    client.loop_stop()
    client.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
