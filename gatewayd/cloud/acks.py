"""paho's client, reading an MQTT 3.1.1 PUBACK without building what 3.1.1 does not have,
and writing what is queued in one system call.

Every value the hub publishes is QoS 1, so every one comes back as a PUBACK. paho 2.2.0
decodes each into a packet with a new ``ReasonCode`` and a new, empty ``Properties`` (MQTT
5 fields; a 3.1.1 PUBACK is a packet id and nothing else), through a wrapper that
converts exceptions: 11 µs a PUBACK on the development machine, about a tenth of a Zigbee
report's CPU in the hub (bench/README.md, "paho's PUBACK"). :class:`AckingClient` reads
the id itself and hands ``on_publish`` one shared success code and one shared empty
``Properties``, which the link never reads (nor may any ``on_publish`` change them). A
PUBACK of the wrong length is refused as paho refuses it; paho's own log line is kept.
MQTT 5 connections, PUBCOMP, and any paho but the one this was written for
(:data:`PAHO_VERSION`, the pin in pyproject.toml) take paho's own path. Upstream could
make the same change: no ``Properties`` on a 3.1.1 connection.

It also reads the socket once for whatever the broker has sent. paho asks for a packet's
first byte, then each byte of its length, then the rest, a ``recv`` each: three system
calls for every PUBACK, the only packet most of a hub's reads carry. ``_sock_recv``
receives up to :data:`READ_SIZE` bytes and hands paho what it asks for from them (4 KB:
Python allocates the whole size for each read and then shrinks it, and 64 KB reads left
glibc's heap 0.2 MB larger in a probe of 200 000 reads).
:meth:`AckingClient.read_all` reads on until paho has read every byte received (ours and
those TLS decrypted): the socket no longer signals them. A closed socket drops them.

And it writes the socket once for what is queued. paho's ``_packet_write`` sends each
packet with a ``send`` of its own: a coalescing pass of the Zigbee bridge (a value for each
of 200 plugs) or the retained tree republished after a reconnect was hundreds of system
calls, each waking the broker. Here paho's own ``_packet_write`` still goes through the
queue packet by packet, but the first ``_sock_send`` of a pass sends that packet's bytes
with those of the packets queued after it (up to :data:`WRITE_SIZE`), and the following
ones are answered from what that one write took, until it is used up and the next write
gathers again. Partial writes, QoS 0's ``on_publish``, a DISCONNECT and the errors go
through paho's code as before. A write that would block leaves the packet where it is;
the next one starts with the same bytes and is at least as long, as a TLS connection
requires; after a short write paho is told "would block" rather than trying a send the
full socket would refuse. Upstream could do the same with one ``send`` of the joined
queue.

It opens its connections as :class:`~gatewayd.cloud.dial.DialingClient` does.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any, Literal

import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gatewayd.cloud.dial import DialingClient

PAHO_VERSION = "2.2.0"
# paho's own attribute: importlib.metadata.version() searches the installed distributions
# (4 ms at every start, on the daemon's import path).
WRITTEN_FOR = paho.mqtt.__version__ == PAHO_VERSION

READ_SIZE = 4096  # the least a read asks for (32 PUBACKs are 128 B; paho asks for a large packet)
WRITE_SIZE = 65536  # the most one write gathers from the queue
_DISCONNECT = 0xE0  # a packet type; nothing queued after it is sent with it
_DISCONNECT_BYTE = bytes([_DISCONNECT])  # a whole DISCONNECT packet's first byte

_SUCCESS = ReasonCode(PacketTypes.PUBACK)
_NO_PROPERTIES = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]


class AckingClient(DialingClient):
    """``paho.mqtt.client.Client`` with the 3.1.1 PUBACK read directly (see above)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lean_acks = WRITTEN_FOR and self._protocol != MQTTProtocolVersion.MQTTv5
        self._received = b""  # from the socket, paho has read up to _read_at
        self._read_at = 0
        self._sent_ahead = 0  # bytes one send took for packets paho has yet to account for
        self._gathering = False  # inside our _packet_write: paho's sends are gathered
        self._short = False  # the last gathered write took less than it was given

    def read_all(self) -> MQTTErrorCode:
        """``loop_read`` until every byte received is read: paho reads at most one packet
        per message in flight, and what is left is no longer signalled by the socket."""
        rc = self.loop_read()
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self.unread() > 0:
            rc = self.loop_read()
        return rc

    def unread(self) -> int:
        """Bytes received and not yet read by paho: ours and those TLS decrypted."""
        pending = getattr(self._sock, "pending", None)
        return len(self._received) - self._read_at + (pending() if pending else 0)

    def _sock_recv(self, bufsize: int) -> bytes:
        if not WRITTEN_FOR:
            return super()._sock_recv(bufsize)
        start = self._read_at
        if start == len(self._received):
            data = super()._sock_recv(max(bufsize, READ_SIZE))
            if len(data) <= bufsize:
                return data
            self._received, start = data, 0
        end = min(start + bufsize, len(self._received))
        chunk = self._received[start:end]
        if end == len(self._received):
            self._received, end = b"", 0
        self._read_at = end
        return chunk

    def _packet_write(self) -> MQTTErrorCode:
        if not WRITTEN_FOR or self._sock is None:
            return super()._packet_write()
        self._gathering = True
        try:
            return super()._packet_write()
        except BaseException:
            if self._sent_ahead:
                # Bytes on the wire that paho has not accounted for (a callback raised
                # in its loop): the stream cannot be resumed, the next connection starts
                # clean.
                self._sock_close()
            raise
        finally:
            self._gathering = self._short = False
            self._sent_ahead = 0

    def _sock_send(self, buf: bytes | bytearray) -> int:
        """paho's send of one packet's bytes ``buf``: answered from the last gathered
        write, or by a new one that starts with ``buf``."""
        if not self._gathering:
            return super()._sock_send(buf)
        if not self._sent_ahead:
            if self._short:
                # The last write took less than it was given: the socket is full. paho
                # keeps the packet where it is and the next write gathers again.
                self._call_socket_register_write()
                raise BlockingIOError
            data = self._gather(buf)
            # A write that would block raises here, and paho keeps the packet: the next
            # write starts with the same bytes and is at least as long, as TLS requires
            # (OpenSSL's "bad write retry" otherwise).
            sent = super()._sock_send(data)
            self._short = sent < len(data)
            self._sent_ahead = sent
        taken = min(self._sent_ahead, len(buf))
        self._sent_ahead -= taken
        return taken

    def _gather(self, buf: bytes | bytearray) -> bytes | bytearray:
        """``buf`` and the queued packets after it, up to :data:`WRITE_SIZE`, stopping
        after a DISCONNECT (what follows one is for the next connection)."""
        if buf[:1] == _DISCONNECT_BYTE:
            return buf
        chunks, size = [buf], len(buf)
        try:
            for packet in self._out_packet:
                if size >= WRITE_SIZE:
                    break
                chunk = packet["packet"][packet["pos"]:]
                chunks.append(chunk)
                size += len(chunk)
                if packet["command"] & 0xF0 == _DISCONNECT:
                    break
        except RuntimeError:  # another thread queued meanwhile (not in the daemon)
            self._call_socket_register_write()
            raise BlockingIOError from None  # gathered again by the next write
        return b"".join(chunks) if len(chunks) > 1 else buf

    def widen(self, inflight: int, queued: int) -> None:
        """Raise the limits on messages in flight and queued, on a live connection too,
        which paho's setters refuse (untested, they say, from none to a limit); a higher
        limit only lets more go out at once."""
        self._max_inflight_messages = max(self._max_inflight_messages, inflight)
        self._max_queued_messages = max(self._max_queued_messages, queued)

    def close_abruptly(self) -> None:
        """End the connection without DISCONNECT, as a vanished hub does: the broker
        publishes the will. ``on_disconnect`` follows, as after a keepalive timeout."""
        if self._sock is None:
            return
        self._sock_close()
        self._do_on_disconnect(packet_from_broker=False, v1_rc=MQTTErrorCode.MQTT_ERR_CONN_LOST)

    def _sock_close(self) -> None:
        self._received, self._read_at = b"", 0  # the rest of a connection that is gone
        super()._sock_close()

    def _handle_pubackcomp(self, cmd: Literal["PUBACK", "PUBCOMP"]) -> MQTTErrorCode:
        if cmd != "PUBACK" or not self._lean_acks:
            return super()._handle_pubackcomp(cmd)
        packet = self._in_packet["packet"]
        if len(packet) != 2:
            raise MalformedPacket("wrong size of packet")  # paho's words
        mid = packet[0] << 8 | packet[1]
        self._easy_log(mqtt.MQTT_LOG_DEBUG, "Received %s (Mid: %d)", cmd, mid)
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, _SUCCESS, _NO_PROPERTIES)
        return MQTTErrorCode.MQTT_ERR_SUCCESS


def tcp_no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """Switch Nagle's algorithm off: MQTT packets are small and each one is due now.

    With Nagle on, a packet written while the previous one is unacknowledged waits for
    the peer's delayed ACK (up to 40 ms on Linux): a /set echo written right after the
    /set's PUBACK did, and the /set round trip took 44 ms at the median instead of 2.3 ms
    (bench/README.md).
    """
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
