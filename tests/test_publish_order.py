"""The order an app subscriber sees a device in, against a real mosquitto (docs/interfaces.md
§8.2): nothing a device still has deleted on the way.

The app here subscribes with QoS 0, as the review's did: the broker then hands it every
message in the order the hub sent them.
"""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as mqtt
import pytest

from gatewayd.credentials import mqtt_username
from gatewayd.simulator.broker import Broker
from tests.cloud_helpers import (
    HUB_ID,
    WSP,
    Monitor,
    Received,
    creds_for,
    make_child,
    make_link,
    run,
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]

ROOT = mqtt_username(WSP)


def base(device_id: str = HUB_ID) -> str:
    return f"{ROOT}/sweet-home/{device_id}"


class AppView(Monitor):
    """A subscriber to everything, with QoS 0."""

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        client.subscribe(self.topic, qos=0)


def seen(messages: list[Received], device_id: str) -> list[tuple[str, str]]:
    """What the app saw of one device, in order: (topic below the device, payload),
    heartbeats left out."""
    prefix = f"{base(device_id)}/"
    return [(m.topic[len(prefix):], m.text) for m in messages
            if m.topic.startswith(prefix) and not m.topic.endswith("/$heartbeat")]


def test_a_replaced_child_keeps_the_localip_it_gets_from_the_hub(broker: Broker) -> None:
    """A Zigbee join, rejoin or re-interview replaces the child's description with one
    that has no address of its own: its ``$localip`` was deleted, then published again."""
    async def main() -> list[Received]:
        link = make_link()
        link.add_device(make_child())
        with AppView(broker) as app:
            await link.start(creds_for(broker))
            await app.await_for(f"{base('virtual-lamp')}/$state", "ready")
            mark = app.mark()
            again = make_child()
            again.localip = again.mac = ""  # the hub fills them in
            link.add_device(again)
            await app.await_for(f"{base('virtual-lamp')}/$state", "ready", mark=mark)
            await link.stop()
            return app.since(mark)

    view = seen(run(main()), "virtual-lamp")
    assert [p for t, p in view if t == "$localip"] == ["127.0.0.1"]
    assert [p for t, p in view if t == "$mac"] == ["aa:bb:cc:dd:ee:ff"]
    assert not [t for t, p in view if p == ""], view

