"""PUBACKs on MQTT 3.1.1 read without paho's MQTT 5 decoding (gatewayd/cloud/acks.py):
the same acknowledgements, the same refusal of a malformed one; MQTT 5 connections and
another paho take paho's own path."""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt import _packet
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket

from gatewayd.cloud import acks
from gatewayd.simulator.broker import Broker
from gatewayd.simulator.pki import make_test_pki
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



# ---- reading the socket once for what the broker sent --------------------------------------


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each read paho's client made from its socket."""
    seen: list[int] = []
    paho_recv = mqtt.Client._sock_recv

    def recv(self: mqtt.Client, bufsize: int) -> bytes:
        seen.append(bufsize)
        return paho_recv(self, bufsize)

    monkeypatch.setattr(mqtt.Client, "_sock_recv", recv)
    return seen


def test_pubacks_from_a_broker_take_fewer_reads_than_paho_makes(broker: Broker,
                                                               reads: list[int]) -> None:
    # paho: a read for the first byte, one for the length, one for the packet id, for
    # every PUBACK. Ours: one for whatever has come, and one that finds nothing more.
    publish_and_ack(broker, "3.1.1", count=50)
    assert len(reads) <= 2 * 50 + 10, len(reads)


Socket = tuple[acks.AckingClient, socket.socket, list[Any]]  # client, broker's end, delivered


@pytest.fixture
def on_a_socket() -> Iterator[Socket]:
    """Our client reading one end of a socket pair (the test writes the broker's bytes
    to the other); what it delivers, in order: acknowledged ids and messages."""
    client = acks.AckingClient(CallbackAPIVersion.VERSION2,
                               protocol=MQTTProtocolVersion.MQTTv311)
    got: list[Any] = []
    client.on_publish = lambda c, u, mid, reason, props: got.append(mid)
    client.on_message = lambda c, u, msg: got.append((msg.topic, msg.payload))
    ours, broker_end = socket.socketpair()
    ours.setblocking(False)
    client._sock = ours
    yield client, broker_end, got
    client._sock_close()
    broker_end.close()


def puback(mid: int) -> bytes:
    return bytes([PUBACK, 2, mid >> 8, mid & 0xFF])


def publish(topic: str, payload: bytes) -> bytes:
    """A QoS 0 PUBLISH as paho encodes it (a remaining length under 16 384)."""
    body = len(topic).to_bytes(2, "big") + topic.encode() + payload
    n = len(body)
    length = bytes([n]) if n < 128 else bytes([n & 0x7F | 0x80, n >> 7])
    return bytes([0x30]) + length + body


def test_packets_cut_anywhere_are_all_delivered_in_order(on_a_socket: Socket,
                                                         reads: list[int]) -> None:
    client, broker_end, got = on_a_socket
    for cut in (1, 5, 17, 18):  # in a length, a PUBACK, the PUBLISH, after it
        mids = [client.publish("t", b"x", qos=1).mid for _ in range(5)]  # in flight
        stream = b"".join(puback(m) for m in mids[:4]) + publish("a/b", b"hello") + \
            puback(mids[4])
        broker_end.sendall(stream[:cut])
        client.read_all()
        broker_end.sendall(stream[cut:])
        client.read_all()
        assert got == [*mids[:4], ("a/b", b"hello"), mids[4]] and client.unread() == 0
        got.clear()
    # four times: what had come, then nothing (paho: 3 reads a PUBACK, 3 the PUBLISH)
    assert len(reads) <= 4 * 4, reads


def test_what_paho_leaves_unread_is_read_on(on_a_socket: Socket, reads: list[int]) -> None:
    """Nothing in flight: paho's loop_read reads one packet; the others came in the
    same read and the socket will not signal them again."""
    client, broker_end, got = on_a_socket
    broker_end.sendall(publish("a", b"1") + publish("b", b"2") + publish("c", b"3"))
    client.loop_read()
    assert got == [("a", b"1")] and client.unread() == 2 * len(publish("b", b"2"))
    client.read_all()
    assert got == [("a", b"1"), ("b", b"2"), ("c", b"3")] and client.unread() == 0


def test_a_closed_connection_drops_what_it_left_unread(on_a_socket: Socket) -> None:
    client, broker_end, got = on_a_socket
    broker_end.sendall(publish("a", b"1") + publish("b", b"2"))
    client.loop_read()
    assert client.unread() > 0
    client._sock_close()
    assert client.unread() == 0 and got == [("a", b"1")]


def test_another_paho_reads_the_socket_its_own_way(on_a_socket: Socket, reads: list[int],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(acks, "WRITTEN_FOR", False)  # read at each _sock_recv
    client, broker_end, got = on_a_socket
    broker_end.sendall(publish("a", b"1"))
    client.read_all()
    assert got == [("a", b"1")] and reads[:3] == [1, 1, 4]  # byte, length, the rest


# ---- writing the socket once for what is queued -------------------------------------------


class Counting:
    """A socket that counts its sends (paho's client writes through ``send``)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.sends = sock, 0

    def send(self, data: bytes) -> int:
        self.sends += 1
        return self.sock.send(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def queued(client: mqtt.Client) -> bytes:
    return b"".join(bytes(p["packet"][p["pos"]:]) for p in client._out_packet)


def received(broker_end: socket.socket, size: int) -> bytes:
    """``size`` bytes from the client, or what came before it closed."""
    data = b""
    while len(data) < size:
        chunk = broker_end.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture
def queuing(on_a_socket: Socket) -> Iterator[tuple[acks.AckingClient, socket.socket,
                                                   list[Any], Counting]]:
    """The client as the hub drives it: publications queue, a write is asked for."""
    client, broker_end, got = on_a_socket
    client.on_socket_register_write = lambda *_: None
    client.max_inflight_messages_set(0)  # every QoS 1 publication queued at once
    broker_end.settimeout(5)  # a test that waits for bytes never sent fails, not hangs
    counting = Counting(client._sock)
    client._sock = counting  # type: ignore[assignment]
    yield client, broker_end, got, counting
    client._sock = counting.sock


def test_queued_publications_go_out_in_one_write_in_order(queuing: Any) -> None:
    client, broker_end, got, counting = queuing
    mids = [client.publish(f"t/{i}", b"v" * i, qos=1).mid for i in range(100)]
    qos0 = [client.publish("q0", b"x", qos=0).mid for _ in range(3)]
    stream = queued(client)
    assert counting.sends == 0 and len(client._out_packet) == 103
    assert len(stream) < acks.WRITE_SIZE
    client.loop_write()
    assert counting.sends == 1 and not client._out_packet
    assert received(broker_end, len(stream)) == stream
    assert got == qos0  # QoS 0 is published once written; QoS 1 waits for its PUBACK
    broker_end.sendall(b"".join(puback(m) for m in mids))
    client.read_all()
    assert got == [*qos0, *mids]


def test_a_write_the_socket_takes_in_part_is_finished_by_later_writes(queuing: Any) -> None:
    client, broker_end, got, counting = queuing
    counting.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    for i in range(3000):
        client.publish(f"t/{i}", b"%06d" % i + b"x" * 100, qos=0)
    stream = queued(client)
    assert len(stream) > 2 * acks.WRITE_SIZE  # more than one write gathers
    data = b""
    while client._out_packet:  # the test is the broker: it reads as the client writes
        client.loop_write()
        with contextlib.suppress(BlockingIOError):
            broker_end.setblocking(False)
            data += broker_end.recv(1 << 20)
    broker_end.setblocking(True)
    data += received(broker_end, len(stream) - len(data))
    assert data == stream and len(got) == 3000
    assert counting.sends < 3000 // 10  # paho: a send for each


def test_another_paho_writes_each_packet_its_own_way(queuing: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(acks, "WRITTEN_FOR", False)
    client, broker_end, _, counting = queuing
    for i in range(5):
        client.publish(f"t/{i}", b"1", qos=1)
    stream = queued(client)
    client.loop_write()
    assert counting.sends == 5 and received(broker_end, len(stream)) == stream


def test_a_write_that_would_block_is_retried_with_the_same_bytes_first(queuing: Any) -> None:
    """As a TLS socket needs it: after a write that would block, the next one starts with
    every byte of the refused one (OpenSSL refuses a shorter retry)."""
    client, broker_end, got, counting = queuing
    attempts: list[bytes] = []
    real_send = counting.send

    def send(data: bytes) -> int:
        attempts.append(bytes(data))
        if len(attempts) == 1:
            raise BlockingIOError  # the kernel's buffer is full, this time
        return real_send(data)

    counting.send = send  # type: ignore[method-assign]
    for i in range(3):
        client.publish(f"t/{i}", b"1", qos=0)
    first = queued(client)
    client.loop_write()  # paho's loop_write reports "again" as success
    assert got == [] and queued(client) == first  # nothing written, nothing lost
    client.publish("t/3", b"1", qos=0)  # more queued meanwhile
    stream = queued(client)
    client.loop_write()
    assert attempts[0] == first and attempts[1].startswith(first)
    assert received(broker_end, len(stream)) == stream and len(got) == 4


def test_a_callback_that_raises_mid_write_ends_the_connection_not_the_stream(
        queuing: Any) -> None:
    """Bytes already on the wire that paho has not accounted for would be sent again on
    the next write: the connection is closed instead (paho's reconnect starts clean)."""
    client, broker_end, _, counting = queuing

    def on_publish(*_: Any) -> None:
        raise RuntimeError("a callback's bug")

    client.on_publish = on_publish
    for i in range(3):
        client.publish(f"t/{i}", b"1", qos=0)
    stream = queued(client)
    with pytest.raises(RuntimeError, match="a callback's bug"):
        client.loop_write()
    assert counting.sends == 1 and client._sock is None  # closed after one write
    assert received(broker_end, len(stream)) == stream and broker_end.recv(1) == b""


def test_a_short_write_waits_for_the_socket_instead_of_trying_again(queuing: Any) -> None:
    """After a write the socket took only part of, paho is told "would block" and the next
    write gathers afresh: one send each time, none that the full socket refuses."""
    client, broker_end, _, counting = queuing
    counting.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    broker_end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    for i in range(3000):
        client.publish(f"t/{i}", b"%06d" % i + b"x" * 100, qos=0)
    sends_per_write = []
    for _ in range(20):
        before = counting.sends
        client.loop_write()
        sends_per_write.append(counting.sends - before)
        assert client.want_write()  # far from done: every write was short
        broker_end.recv(1 << 20)  # the broker reads; the next write has room
    assert sends_per_write == [1] * 20  # paho's own loop tries again after each: 2


@pytest.mark.parametrize("fill", ["all at once", "one at a time"])
def test_a_tls_connection_that_fills_up_gets_every_byte_in_order(tmp_path: Path,
                                                                 fill: str) -> None:
    """The gathered write over TLS while the broker does not read: a write blocks
    (OpenSSL then needs at least the same bytes again), more is queued, the broker reads,
    and everything arrives, decrypted, in order, on the one connection. Filled all at
    once, the blocked writes are 64 KB gatherings; one at a time, the write that blocks
    is a single packet's and the retry gathers more after it."""
    pki = make_test_pki(tmp_path / "pki", ["localhost"])
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki.certfile, pki.keyfile)
    client_ctx = ssl.create_default_context(cafile=str(pki.cafile))
    out: list[ssl.SSLSocket] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        raw = socket.create_connection(listener.getsockname())
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        accepted, _ = listener.accept()
        accepted.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        handshake = threading.Thread(target=lambda: out.append(
            server_ctx.wrap_socket(accepted, server_side=True)))
        handshake.start()
        ours = client_ctx.wrap_socket(raw, server_hostname="localhost")
        handshake.join(10)
        broker_end = out[0]
    ours.setblocking(False)
    client = acks.AckingClient(CallbackAPIVersion.VERSION2,
                               protocol=MQTTProtocolVersion.MQTTv311)
    client.on_socket_register_write = lambda *_: None
    client._sock = ours
    payload = [b"%06d" % i + b"x" * 100 for i in range(3000)]
    packets = [publish(f"t/{i}", payload[i]) for i in range(3000)]
    sent = 0
    if fill == "all at once":
        for sent in range(2000):
            client.publish(f"t/{sent}", payload[sent], qos=0)
        sent += 1
        assert queued(client) == b"".join(packets[:sent])  # paho's encoding, as the test's
        stuck = 0
        while stuck < 3:  # the broker reads nothing: write until nothing more goes out
            before = len(queued(client))
            assert client.loop_write() == mqtt.MQTT_ERR_SUCCESS
            stuck = stuck + 1 if len(queued(client)) == before else 0
    else:
        while not client._out_packet:  # until a single packet's write blocks
            assert sent < 2900, "the socket took it all: the test needs a smaller buffer"
            client.publish(f"t/{sent}", payload[sent], qos=0)
            sent += 1
            assert client.loop_write() == mqtt.MQTT_ERR_SUCCESS
        assert len(client._out_packet) == 1
    assert client._out_packet, "the socket took it all: the test needs a smaller buffer"
    for i in range(sent, sent + 100):  # more queued while blocked: the next write is longer
        client.publish(f"t/{i}", payload[i], qos=0)
    expected = b"".join(packets[:sent + 100])
    got: list[bytes] = []
    broker_end.settimeout(30)
    reader = threading.Thread(target=lambda: got.append(received(broker_end, len(expected))))
    reader.start()
    while client._out_packet:
        _, writable, _ = select.select([], [ours], [], 10)
        assert writable, "the connection stopped taking bytes"
        assert client.loop_write() == mqtt.MQTT_ERR_SUCCESS and client._sock is ours
    reader.join(30)
    assert got == [expected]
    client._sock_close()
    broker_end.close()

