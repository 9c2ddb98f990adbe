"""PUBACKs on MQTT 3.1.1 read without paho's MQTT 5 decoding (gatewayd/cloud/acks.py):
the same acknowledgements, the same refusal of a malformed one; MQTT 5 connections and
another paho take paho's own path."""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt import _packet
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket

from gatewayd.cloud import acks
from gatewayd.simulator.broker import Broker
from tests.cloud_helpers import run
from tests.test_cloud_net import ROOT, connected

pytestmark = pytest.mark.timeout(60)
PUBACK = 0x40


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The PUBACKs paho decoded itself."""
    seen: list[bytes] = []
    paho_decode = _packet.decode_puback

    def decode(header: int, packet: bytes, protocol: Any) -> Any:
        seen.append(bytes(packet))
        return paho_decode(header, packet, protocol)

    monkeypatch.setattr(_packet, "decode_puback", decode)
    return seen


def publish_and_ack(broker: Broker, protocol: str, count: int = 50) -> None:
    async def main() -> None:
        async with connected(broker.host, broker.port, protocol=protocol) as (conn, sink):
            mids = [conn.publish(f"{ROOT}/sweet-home/probe/{i}", b"1", 1, False)
                    for i in range(count)]
            assert None not in mids
            await sink.wait_acked({m for m in mids if m is not None}, 10)

    run(main())


def test_a_311_connection_reads_its_pubacks_itself(broker: Broker,
                                                   decoded: list[bytes]) -> None:
    publish_and_ack(broker, "3.1.1")
    assert decoded == []


def test_an_mqtt5_connection_keeps_pahos_decoding(broker: Broker,
                                                    decoded: list[bytes]) -> None:
    publish_and_ack(broker, "5")
    assert len(decoded) >= 50  # reason codes and properties mean something there


def test_another_paho_keeps_its_own_decoding(broker: Broker, decoded: list[bytes],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(acks, "WRITTEN_FOR", False)
    publish_and_ack(broker, "3.1.1")
    assert len(decoded) >= 50


def acked_by(client: mqtt.Client, packet: bytes) -> list[tuple[int, int, bool, str]]:
    """What ``on_publish`` got for ``packet``, a PUBACK's body, with messages 1-3 in
    flight (published before any connection: paho keeps them)."""
    got: list[tuple[int, int, bool, str]] = []
    client.on_publish = lambda c, u, mid, reason, props: got.append(
        (mid, reason.value, reason.is_failure, str(props)))
    for _ in range(3):
        client.publish("t", b"x", qos=1)
    client._in_packet = {**client._in_packet, "command": PUBACK, "packet": packet}
    client._handle_pubackcomp("PUBACK")
    return got


@pytest.mark.parametrize("packet", [b"\x00\x01", b"\x00\x03", b"\x00\x09", b"\xff\xff"])
def test_the_same_acknowledgement_as_paho_gives(packet: bytes) -> None:
    ours = acks.AckingClient(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv311)
    pahos = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv311)
    assert acked_by(ours, packet) == acked_by(pahos, packet)
    assert ours._lean_acks and not hasattr(pahos, "_lean_acks")


@pytest.mark.parametrize("packet", [b"", b"\x00", b"\x00\x01\x00"])
def test_a_puback_of_the_wrong_length_is_refused_as_paho_refuses_it(packet: bytes) -> None:
    for cls in (acks.AckingClient, mqtt.Client):
        client = cls(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv311)
        with pytest.raises(MalformedPacket, match="wrong size of packet"):
            acked_by(client, packet)

