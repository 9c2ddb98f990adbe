"""Whether the simulated account broker accepts a registration token yet.

The simulated platform hands a new token out only once mosquitto has applied it
(:mod:`gatewayd.simulator.provisioning`), and mosquitto reloads its files in its own time.
"""

from __future__ import annotations

import secrets
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gatewayd.simulator.broker import Broker


def accepted(broker: Broker, user: str, password: str, timeout: float) -> bool:
    """Whether the broker accepts ``user`` now: a connection attempt, repeated until it
    does (mosquitto reloads its files asynchronously after SIGHUP, and the broker sends
    it again if mosquitto lost it: :meth:`Broker.reload`)."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        client = mqtt.Client(CallbackAPIVersion.VERSION2,
                             client_id=f"sim-probe-{secrets.token_hex(4)}")
        client.username_pw_set(user, password)
        answer: list[bool] = []
        client.on_connect = lambda c, u, f, rc, p, seen=answer: seen.append(not rc.is_failure)
        try:
            client.connect(broker.host, broker.port, keepalive=5)
            while not answer and time.monotonic() < deadline:
                client.loop(0.05)
            client.disconnect()
        except OSError:
            pass
        if answer and answer[0]:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)  # mosquitto has not reloaded yet: ask again shortly
        delay = min(delay * 2, 0.1)

