"""The platform API end to end on a real broker with the cloud-like ACL (issue 16).

``DocPlatform`` is an independent platform written from docs/cloud.md only (paho and the
``cryptography`` AEAD, none of gatewayd's code): if the hub and the documentation disagree,
these tests fail.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from paho.mqtt.enums import CallbackAPIVersion

from gatewayd.cloud.attempts import CloudOutcome
from gatewayd.cloud.publisher import WINDOW
from gatewayd.cloud.reqres import LinkLost, RequestFailed, RequestTimeout, TooManyRequests
from gatewayd.credentials import mqtt_username
from gatewayd.simulator.broker import PLATFORM_USER, Broker
from tests.cloud_helpers import (
    TOKEN,
    WSP,
    Monitor,
    TcpProxy,
    creds_for,
    make_hub,
    make_link,
    run,
)
from tests.helpers import wait_for

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

ROOT = mqtt_username(WSP)
KEY = bytes(range(32))


class DocPlatform:
    """A platform as docs/cloud.md ("Implementing the platform side") describes one.

    ``behaviour(endpoint, data)`` returns ``(status, code, value)`` to answer, or None to
    stay silent; ``tamper`` / ``wrong_id`` spoil the answer on purpose.
    """

    def __init__(self, broker: Broker,
                 behaviour: Callable[[str, Any], tuple[int, int, Any] | None]) -> None:
        self.behaviour = behaviour
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        self.spoil: str | None = None  # "tamper" | "wrong-id"
        self._cond = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="doc-platform")
        self.client.username_pw_set(PLATFORM_USER, broker.platform_password)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.subscribe("+/req/#", qos=1)
        self.client.loop_start()
        assert subscribed.wait(5), "the platform did not get its subscription"

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def wait_requests(self, count: int, timeout: float = 5.0) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.requests) >= count, timeout), \
                f"expected {count} requests, saw {len(self.requests)}"

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        root, _, device_id, endpoint = msg.topic.split("/", 3)
        request = json.loads(msg.payload)
        with self._cond:
            self.requests.append((device_id, endpoint, request))
            self._cond.notify_all()
        answer = self.behaviour(endpoint, request["data"])
        if answer is None:
            return
        status, code, value = answer
        key = base64.b64decode(request["key"], validate=True)  # 32 bytes
        nonce = os.urandom(12)
        sealed = bytearray(nonce + AESGCM(key).encrypt(nonce, json.dumps(value).encode(),
                                                       None))
        if self.spoil == "tamper":
            sealed[12] ^= 0x01  # one bit of the ciphertext
        response = {"status": status, "code": code,
                    "id": "0" * 32 if self.spoil == "wrong-id" else request["id"],
                    "data": base64.b64encode(bytes(sealed)).decode()}
        client.publish(f"{root}/res/{device_id}/{endpoint}", json.dumps(response), qos=1)


def echo(endpoint: str, data: Any) -> tuple[int, int, Any] | None:
    if endpoint == "silent":
        return None
    if endpoint == "denied":
        return 0, 403, {"message": "not for this hub"}
    return 1, 200, {"endpoint": endpoint, "echo": data}


def test_an_independent_platform_answers_and_the_hub_decrypts(broker: Broker) -> None:
    platform = DocPlatform(broker, echo)

    async def main() -> None:
        link = make_link(device_key=KEY)
        api = link.platform
        await link.start(creds_for(broker))
        assert (await link.wait_result(5)).outcome is CloudOutcome.CONNECTED
        answers = await asyncio.gather(*(api.request("rfid/authorize", {"tag": f"t{i}"},
                                                     timeout=5) for i in range(4)))
        assert answers == [{"endpoint": "rfid/authorize", "echo": {"tag": f"t{i}"}}
                           for i in range(4)]
        with pytest.raises(RequestFailed) as refused:
            await api.request("denied", timeout=5)
        assert (refused.value.status, refused.value.code) == (0, 403)
        assert refused.value.message == "not for this hub"

        platform.spoil = "tamper"  # refused: dropped, never taken as the answer
        with pytest.raises(RequestTimeout, match="failed authentication"):
            await api.request("echo", {"n": 1}, timeout=1.0)
        platform.spoil = "wrong-id"  # ignored: it answers no request of ours
        with pytest.raises(RequestTimeout):
            await api.request("echo", {"n": 2}, timeout=1.0)
        platform.spoil = None
        with pytest.raises(RequestTimeout, match=r"no response within 0\.5 s"):
            await api.request("silent", timeout=0.5)
        assert api.pending == 0, "nothing stays pending after a timeout"
        status = api.status()
        assert status["dropped"] == {"unauthentic": 1, "unknown-id": 1}
        assert status["answered"] == 4 and status["refused"] == 1 and status["timeouts"] == 3
        await link.stop()

    try:
        run(main())
    finally:
        platform.stop()
    device_id, _, request = platform.requests[0]
    assert device_id == link_id() and set(request) == {"data", "key", "id"}


def link_id() -> str:
    return make_hub().id


def test_each_caller_has_its_own_bound(broker: Broker) -> None:
    platform = DocPlatform(broker, lambda endpoint, data: None)  # never answers

    async def main() -> None:
        link = make_link()
        api = link.platform
        await link.start(creds_for(broker))
        await link.wait_result(5)
        plugin = [asyncio.ensure_future(api.request("slow", timeout=5, caller="virtual-x"))
                  for _ in range(api.max_per_caller)]
        await asyncio.to_thread(platform.wait_requests, api.max_per_caller)
        with pytest.raises(TooManyRequests, match="virtual-x"):
            await api.request("slow", timeout=5, caller="virtual-x")
        hub = asyncio.ensure_future(api.request("slow", timeout=5))  # the hub still may
        await asyncio.to_thread(platform.wait_requests, api.max_per_caller + 1)
        for task in [*plugin, hub]:
            task.cancel()
        await asyncio.gather(*plugin, hub, return_exceptions=True)
        assert api.pending == 0
        await link.stop()

    try:
        run(main())
    finally:
        platform.stop()

def test_plugins_together_cannot_crowd_out_the_hubs_own_requests(broker: Broker) -> None:
    """Before: four plugins, each within its own bound, filled all 32 places, and the hub's
    own provisioning/refresh was refused too-many-requests."""
    platform = DocPlatform(broker, lambda endpoint, data: None)  # never answers

    async def main() -> None:
        link = make_link()
        api = link.platform
        await link.start(creds_for(broker))
        await link.wait_result(5)
        shared = api.max_pending - api.max_per_caller
        waiting = [asyncio.ensure_future(api.request("slow", timeout=30, caller=f"virtual-{n}"))
                   for n in range(shared // api.max_per_caller)
                   for _ in range(api.max_per_caller)]
        await asyncio.to_thread(platform.wait_requests, shared)
        for caller in ("virtual-late", "control"):  # each still within its own bound
            with pytest.raises(TooManyRequests) as refused:
                await api.request("slow", timeout=1, caller=caller)  # refused at once
            assert refused.value.message == (
                f"{shared} requests of plugins and gatewayctl are already waiting (the other "
                f"{api.max_per_caller} are kept for the hub's own)")
        waiting += [asyncio.ensure_future(api.request("provisioning/refresh", {}, timeout=30))
                    for _ in range(api.max_per_caller)]
        await asyncio.to_thread(platform.wait_requests, api.max_pending)
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        await link.stop()

    try:
        run(main())
    finally:
        platform.stop()
    endpoints = [endpoint for _, endpoint, _ in platform.requests]
    assert endpoints.count("provisioning/refresh") == 8 and len(endpoints) == 32


def test_a_request_survives_one_reconnect_and_fails_on_a_second(broker: Broker) -> None:
    """Sent, taken by the broker, then the link drops: it goes out again, once."""
    answer_from = {"count": 2}  # answer only the second sending of a request

    def second_time(endpoint: str, data: Any) -> tuple[int, int, Any] | None:
        seen = sum(1 for _, e, r in platform.requests if r["data"] == data)
        return (1, 200, data) if seen >= answer_from["count"] else None

    platform = DocPlatform(broker, second_time)
    proxy = TcpProxy(broker.host, broker.port)

    async def main() -> None:
        link = make_link()
        api = link.platform
        await link.start(creds_for(broker, host=proxy.host, port=proxy.port))
        await link.wait_result(5)
        once = asyncio.ensure_future(api.request("job", {"n": 1}, timeout=20))
        await asyncio.to_thread(platform.wait_requests, 1)
        assert await link.flush(5)  # the broker acknowledged the request
        proxy.cut()  # the answer to the first sending would be lost with the connection
        assert await once == {"n": 1}
        assert api.status()["resent"] == 1

        answer_from["count"] = 99  # never answered: a second drop loses it for good
        twice = asyncio.ensure_future(api.request("job", {"n": 2}, timeout=20))
        await asyncio.to_thread(platform.wait_requests, 3)
        assert await link.flush(5)
        proxy.cut()
        await asyncio.to_thread(platform.wait_requests, 4)  # the one resend
        assert await link.flush(5)
        proxy.cut()
        with pytest.raises(LinkLost, match="dropped twice"):
            await twice
        assert api.pending == 0
        await link.stop()

    try:
        run(main(), timeout=60)
    finally:
        proxy.close()
        platform.stop()


def test_a_request_that_timed_out_is_not_sent_after_a_reconnect(broker: Broker) -> None:
    """Before: a request still in the link (in flight behind a broker that stopped reading,
    or waiting in the outbox behind a full window) went out after the reconnect, and the
    platform acted on a request whose caller had been told "timeout"."""
    platform = DocPlatform(broker, echo)
    proxy = TcpProxy(broker.host, broker.port)

    async def main() -> None:
        link = make_link()
        api = link.platform
        await link.start(creds_for(broker, host=proxy.host, port=proxy.port))
        assert (await link.wait_result(5)).outcome is CloudOutcome.CONNECTED
        assert await api.request("echo", {"n": 1}, timeout=5) == {"endpoint": "echo",
                                                                  "echo": {"n": 1}}
        assert await link.flush(5)  # the window is empty
        proxy.hold.set()
        assert await asyncio.to_thread(proxy.holding.wait, 5)
        sent = asyncio.ensure_future(api.request("door/unlock", {"door": 1}, timeout=1))
        for _ in range(100):  # the task's first step sends it (the cipher is made already)
            if link.status()["in_flight"]:
                break
            await asyncio.sleep(0)
        assert link.status()["in_flight"] == 1, "the first request in flight"
        for i in range(WINDOW):  # the window fills up: the next request waits in the outbox
            link.publish(f"sweet-home/probe/{i}", "x")
        waiting = asyncio.ensure_future(api.request("door/unlock", {"door": 2}, timeout=1))
        for request in (sent, waiting):
            with pytest.raises(RequestTimeout):
                await request
        assert link.status()["buffered"] >= 1, "the second request waited in the outbox"

        reconnected = asyncio.Event()
        link.add_listener(lambda r: r.outcome is CloudOutcome.CONNECTED and reconnected.set())
        proxy.cut()
        proxy.hold.clear()
        await asyncio.wait_for(reconnected.wait(), 10)
        # A new request goes out behind whatever the link still had to send: once it is
        # answered, the platform has seen everything the hub sent.
        assert await api.request("echo", {"n": 2}, timeout=5) == {"endpoint": "echo",
                                                                  "echo": {"n": 2}}
        await link.stop()

    try:
        run(main(), timeout=60)
    finally:
        proxy.close()
        platform.stop()
    assert [(e, r["data"]) for _, e, r in platform.requests] == [("echo", {"n": 1}),
                                                                 ("echo", {"n": 2})]


def test_two_hubs_of_one_account_cannot_read_each_others_requests_or_answers(
        broker: Broker) -> None:
    platform = DocPlatform(broker, echo)
    spy_seen: list[str] = []
    spy = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="spy-hub")  # hub B's client id
    spy.username_pw_set(mqtt_username(WSP), TOKEN)
    spy.on_message = lambda c, u, m: spy_seen.append(m.topic)
    subscribed = threading.Event()
    spy.on_subscribe = lambda *args: subscribed.set()
    spy.connect(broker.host, broker.port)
    spy.subscribe(f"{ROOT}/#", qos=1)
    spy.loop_start()
    assert subscribed.wait(5)

    async def main() -> None:
        link = make_link()  # hub A
        await link.start(creds_for(broker))
        await link.wait_result(5)
        assert await link.platform.request("echo", {"secret": 1}, timeout=5) == {
            "endpoint": "echo", "echo": {"secret": 1}}
        # B forges an answer for A and publishes a request in A's name: both denied.
        spy.publish(f"{ROOT}/res/{link_id()}/forged", json.dumps({"status": 1, "id": "x"}),
                    qos=1).wait_for_publish(5)
        spy.publish(f"{ROOT}/req/{link_id()}/echo", json.dumps({"data": 1, "key": "",
                                                               "id": "y"}),
                    qos=1).wait_for_publish(5)
        # B's own requests are its to send (the ACL keys REQ/RES on the client id).
        spy.publish(f"{ROOT}/req/spy-hub/echo", json.dumps({"data": 2, "key": base64.b64encode(
            bytes(32)).decode(), "id": "z" * 32}), qos=1).wait_for_publish(5)
        await asyncio.to_thread(platform.wait_requests, 2)
        await link.stop()

    try:
        with Monitor(broker, f"{ROOT}/res/#") as outsider:
            run(main())
            # The answer to B's own request arrives, so B's subscription works...
            outsider.wait_for(f"{ROOT}/res/spy-hub/echo")
            wait_for(lambda: f"{ROOT}/res/spy-hub/echo" in spy_seen, 5, "B's own answer")
            # ...and a reader that passes the ACL still cannot read an answer: the data is
            # sealed with a key from the request, which it never saw.
            answer = outsider.wait_for(f"{ROOT}/res/{link_id()}/echo").json()
            assert "secret" not in json.dumps(answer)
    finally:
        spy.disconnect()
        spy.loop_stop()
        platform.stop()
    assert [t for t in spy_seen if "/req/" in t or f"/res/{link_id()}" in t] == []
    assert [device for device, _, _ in platform.requests] == [link_id(), "spy-hub"]
