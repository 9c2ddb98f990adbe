"""REQ/RES against a real broker with a test platform responder (issue 5)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gatewayd.cloud.reqres import BadRequest, CloudOffline, RequestFailed, RequestTimeout
from gatewayd.cloud.reqres_cipher import (
    NONCE_SIZE,
    TAG_SIZE,
    AesGcmV1,
    AuthenticationFailed,
    MalformedCiphertext,
)
from gatewayd.credentials import mqtt_username
from gatewayd.simulator.broker import MONITOR_USER, Broker
from tests.cloud_helpers import WSP, creds_for, make_link, run

pytestmark = pytest.mark.timeout(60)

ROOT = mqtt_username(WSP)
DEVICE_KEY = bytes(range(32))
CIPHER = AesGcmV1()


class Responder:
    """The platform's side, as docs/cloud.md tells a platform to implement it.

    The endpoint name selects the behaviour under test.
    """

    def __init__(self, broker: Broker) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-platform")
        self.client.username_pw_set(MONITOR_USER, broker.monitor_password)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(f"{ROOT}/req/+/#", qos=1)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        request = json.loads(msg.payload)
        _, _, device_id, endpoint = msg.topic.split("/", 3)
        self.requests.append((endpoint, request))
        key = base64.b64decode(request["key"])  # the key from the request

        def seal(body: Any, with_key: bytes = key) -> str:
            return CIPHER.seal(with_key, json.dumps(body).encode())

        response: dict[str, Any] = {"status": 1, "code": 200, "id": request["id"]}
        if endpoint in ("echo", "device/ownership"):
            response["data"] = seal({"echo": request["data"]})
        elif endpoint == "denied":
            response.update(status=0, code=403, data=seal({"message": "not for this hub"}))
        elif endpoint == "denied-plain":
            response.update(status=0, code=500)
        elif endpoint == "denied-forged":  # a failure with data under another key
            response.update(status=0, code=403, data=seal({"message": "go away"},
                                                          os.urandom(32)))
        elif endpoint == "silent":
            return
        elif endpoint == "tampered":
            raw = bytearray(base64.b64decode(seal({"ok": True})))
            raw[NONCE_SIZE] ^= 0x01  # one bit of the ciphertext
            response["data"] = base64.b64encode(bytes(raw)).decode()
        elif endpoint == "wrong-key":
            response["data"] = seal({"ok": True}, os.urandom(32))
        elif endpoint == "garbage":
            response["data"] = "%%% not base64 %%%"
        elif endpoint == "other-id":
            response.update(id="0" * 32, data=seal({"ok": True}))
        elif endpoint == "deep":  # first an answer nested past the parser's recursion limit
            client.publish(f"{ROOT}/res/{device_id}/{endpoint}",
                           "[" * 100_000 + "]" * 100_000, qos=1)
            response["data"] = seal({"ok": True})
        client.publish(f"{ROOT}/res/{device_id}/{endpoint}", json.dumps(response), qos=1)


@pytest.mark.slow
def test_request_outcomes(broker: Broker) -> None:
    responder = Responder(broker)

    async def main() -> None:
        link = make_link(device_key=DEVICE_KEY)
        api = link.platform
        await link.start(creds_for(broker))
        await link.wait_result(5)

        # success: the data decrypted; several requests in flight are matched by id
        results = await asyncio.gather(*(api.request("echo", {"n": i}, timeout=5)
                                         for i in range(5)))
        assert results == [{"echo": {"n": i}} for i in range(5)]
        # an endpoint of two levels, as the hub's own device/ownership
        assert await api.request("device/ownership", {"event": "released"}, timeout=5) == {
            "echo": {"event": "released"}}

        with pytest.raises(RequestFailed) as failed:
            await api.request("denied", {}, timeout=5)
        assert failed.value.code == 403 and failed.value.message == "not for this hub"
        with pytest.raises(RequestFailed) as failed:
            await api.request("denied-plain", {}, timeout=5)
        assert failed.value.code == 500 and failed.value.message == "no details"

        with pytest.raises(RequestTimeout, match=r"no response within 0\.3 s"):
            await api.request("silent", {}, timeout=0.3)
        with pytest.raises(RequestTimeout):  # a response for another request is ignored
            await api.request("other-id", {}, timeout=0.3)

        # A forged or broken answer is dropped, never taken: the request keeps waiting for
        # a genuine one and, when none comes, its timeout says what was dropped.
        for endpoint, dropped in (
                ("tampered", "an answer failed authentication and was dropped"),
                ("wrong-key", "an answer failed authentication and was dropped"),
                ("garbage", "an answer was malformed (data is not standard base64) and was "
                            "dropped"),
                ("denied-forged", "an answer failed authentication and was dropped")):
            with pytest.raises(RequestTimeout) as timed_out:
                await api.request(endpoint, {}, timeout=1.0)
            assert timed_out.value.message == f"no response within 1 s ({dropped})"
        dropped = api.status()["dropped"]
        assert dropped["unauthentic"] == 3 and dropped["malformed"] == 1
        assert api.pending == 0, "nothing stays pending after a timeout"
        await link.stop()

    try:
        run(main())
    finally:
        responder.stop()

    # the request on the wire: exactly the documented fields, a per-request key
    endpoint, request = responder.requests[0]
    assert endpoint == "echo" and set(request) == {"data", "key", "id"}
    assert re.fullmatch(r"[0-9a-f]{32}", request["id"])
    key = base64.b64decode(request["key"], validate=True)
    assert key == CIPHER.request_key(DEVICE_KEY, request["id"]) and key != DEVICE_KEY
    assert len({r["key"] for _, r in responder.requests}) == len(responder.requests)


def test_a_response_nested_too_deep_is_dropped_as_malformed(
        broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    # Found by the chaos suite's MQTT campaign: json.loads raised RecursionError, which the
    # handler did not catch; the link logged a traceback and nothing counted the drop.
    responder = Responder(broker)

    async def main() -> None:
        link = make_link(device_key=DEVICE_KEY)
        await link.start(creds_for(broker))
        await link.wait_result(5)
        # the genuine answer comes right after the deep one: the request still gets it
        assert await link.platform.request("deep", {}, timeout=5) == {"ok": True}
        assert link.platform.status()["dropped"]["malformed"] == 1
        await link.stop()

    try:
        run(main())
    finally:
        responder.stop()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "the response nests deeper than 32 levels" in caplog.text


def test_request_while_offline_fails_at_once() -> None:
    async def main() -> None:
        api = make_link(device_key=DEVICE_KEY).platform
        with pytest.raises(CloudOffline):
            await api.request("echo", {})
        with pytest.raises(BadRequest, match=r"endpoint: .* is not one or two levels"):
            await api.request("a/b/c", {})
        with pytest.raises(BadRequest, match=r"endpoint: .* is not one or two levels"):
            await api.request("echo\n", {})
        with pytest.raises(BadRequest, match="timeout: a number of seconds"):
            await api.request("echo", {}, timeout=0)

    run(main())


def test_cipher_format() -> None:
    key = CIPHER.request_key(DEVICE_KEY, "abc")
    assert len(key) == 32 and key != CIPHER.request_key(DEVICE_KEY, "abd")
    assert CIPHER.decode_key(CIPHER.encode_key(key)) == key
    data = CIPHER.seal(key, b'{"a": 1}', nonce=bytes(12))
    raw = base64.b64decode(data)
    assert raw[:NONCE_SIZE] == bytes(12) and len(raw) == NONCE_SIZE + 8 + TAG_SIZE
    assert CIPHER.open(key, data) == b'{"a": 1}'
    with pytest.raises(AuthenticationFailed):
        CIPHER.open(CIPHER.request_key(DEVICE_KEY, "other"), data)
    with pytest.raises(MalformedCiphertext):
        CIPHER.open(key, base64.b64encode(bytes(20)).decode())
    with pytest.raises(MalformedCiphertext):
        CIPHER.open(key, data.replace("=", "") + "!")
    with pytest.raises(ValueError):
        CIPHER.request_key(b"short", "abc")


def test_documented_example_decrypts() -> None:
    """The worked example in docs/cloud.md, so the documentation cannot drift."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "cloud.md").read_text()
    found = re.search(r"```json example-vector\n(.*?)```", doc, re.S)
    assert found is not None, "docs/cloud.md lost its example vector"
    example = json.loads(found.group(1))
    device_key = bytes.fromhex(example["device_key_hex"])
    key = CIPHER.request_key(device_key, example["request"]["id"])
    assert CIPHER.encode_key(key) == example["request"]["key"]
    plaintext = CIPHER.open(key, example["response"]["data"])
    assert json.loads(plaintext) == example["plaintext"]


def test_the_documented_platform_side_reads_endpoints_of_two_levels() -> None:
    """docs/cloud.md's recipe once subscribed to ``req/+/+`` and split the topic into four
    parts: a platform built from it never saw ``device/ownership`` or
    ``provisioning/refresh``."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "cloud.md").read_text()
    section = doc.split("### Implementing the platform side", 1)[1]
    found = re.search(r"Subscribe to `(<root>/[^`]+)`", section)
    assert found is not None, "docs/cloud.md lost the platform's subscription"
    split = re.search(r"^\s*(root, _, device_id, endpoint = topic\.split\(.*?\))", section,
                      re.M)
    assert split is not None, "docs/cloud.md lost the recipe's topic split"
    topic = f"{ROOT}/req/aa-bb-cc-dd-ee-ff/device/ownership"
    assert mqtt.topic_matches_sub(found.group(1).replace("<root>", ROOT), topic)
    parts: dict[str, Any] = {"topic": topic}
    exec(split.group(1), {}, parts)  # the documented line itself
    assert (parts["root"], parts["device_id"], parts["endpoint"]) == (
        ROOT, "aa-bb-cc-dd-ee-ff", "device/ownership")


def test_cipher_refusals_say_what_is_wrong() -> None:
    key = CIPHER.request_key(DEVICE_KEY, "abc")
    refusals = [
        (lambda: CIPHER.request_key(bytes(31), "abc"), ValueError,
         "the device key must be 32 bytes"),
        (lambda: CIPHER.decode_key("not base64!"), MalformedCiphertext,
         "data is not standard base64"),
        (lambda: CIPHER.decode_key(base64.b64encode(bytes(31)).decode()), MalformedCiphertext,
         "the key must be 32 bytes"),
        (lambda: CIPHER.open(key, "é"), MalformedCiphertext, "data is not standard base64"),
        (lambda: CIPHER.open(key, base64.b64encode(bytes(27)).decode()), MalformedCiphertext,
         "data is too short for nonce and tag"),
        (lambda: CIPHER.open(key, base64.b64encode(bytes(28)).decode()), AuthenticationFailed,
         "the response failed authentication"),
        (lambda: CIPHER.seal(key, b"x", nonce=bytes(11)), ValueError,
         "the nonce must be 12 bytes"),
    ]
    for call, error, message in refusals:
        with pytest.raises(error) as caught:
            call()
        assert str(caught.value) == message
    # The shortest response: an empty plaintext is nonce and tag only.
    assert CIPHER.open(key, CIPHER.seal(key, b"")) == b""
    assert CIPHER.decode_key(base64.b64encode(bytes(32)).decode()) == bytes(32)
    # A fresh nonce per response, standard base64 with padding.
    one, two = CIPHER.seal(key, b"x"), CIPHER.seal(key, b"x")
    assert one != two and len(base64.b64decode(one, validate=True)) == 12 + 1 + 16
    assert CIPHER.encode_key(bytes(32)) == "A" * 43 + "="
