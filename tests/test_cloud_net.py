"""The MQTT connection (gatewayd.cloud.net.Connection) against a real mosquitto: paho is
driven by the asyncio loop, so reading, writing and keepalive all happen there, and a broker
that stops reading holds publications back without losing one."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from gatewayd.cloud.attempts import CloudResult
from gatewayd.cloud.endpoint import Endpoint, Opener
from gatewayd.cloud.net import Connection
from gatewayd.credentials import mqtt_username
from gatewayd.simulator.broker import Broker
from tests.cloud_helpers import TOKEN, WSP, Monitor, TcpProxy, run
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(60)

ROOT = mqtt_username(WSP)


class Sink:
    """What the connection hands to the link, and on which thread it arrived."""

    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.lost = asyncio.Event()
        self.acked: set[int] = set()
        self.acks_changed = asyncio.Event()
        self.threads: set[int] = set()
        self.failures: list[CloudResult] = []

    def _seen(self) -> None:
        self.threads.add(threading.get_ident())

    def on_connected(self, gen: int, local_ip: str) -> None:
        self._seen()
        self.connected.set()

    def on_connect_failed(self, gen: int, result: CloudResult) -> None:
        self._seen()
        self.failures.append(result)

    def on_connection_lost(self, gen: int, reason: str) -> None:
        self._seen()
        self.lost.set()

    def on_published(self, gen: int, mid: int) -> None:
        self._seen()
        self.acked.add(mid)
        self.acks_changed.set()

    def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        self._seen()

    def on_subscribed(self, mid: int, refused: list[str]) -> None:
        self._seen()

    async def wait_acked(self, mids: set[int], timeout: float) -> None:
        async def until() -> None:
            while not mids <= self.acked:
                self.acks_changed.clear()
                await self.acks_changed.wait()
        await asyncio.wait_for(until(), timeout)


@pytest.fixture
def proxy(broker: Broker) -> Iterator[TcpProxy]:
    p = TcpProxy(broker.host, broker.port)
    yield p
    p.close()


@contextlib.asynccontextmanager
async def connected(host: str, port: int, *, keepalive: int = 30, window: int = 32,
                    protocol: str = "3.1.1", will: tuple[str, str] | None = None,
                    opener: Opener | None = None) -> AsyncIterator[tuple[Connection, Sink]]:
    """A started connection, once the broker accepted it; stopped (and asserted to end)
    afterwards."""
    sink = Sink()
    conn = Connection(Endpoint(host, port, False), username=ROOT, password=TOKEN,
                      client_id="net-test", protocol=protocol, keepalive=keepalive,
                      connect_timeout=5.0, will=will, reconnect_min=0.05, reconnect_max=0.3,
                      loop=asyncio.get_running_loop(), sink=sink, window=window,
                      opener=opener)
    conn.start()
    try:
        await asyncio.wait_for(sink.connected.wait(), 10)
        yield conn, sink
    except BaseException:
        conn.stop()
        await conn.join(5)
        raise
    conn.stop()
    assert await conn.join(5)


def cloud_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("cloud")]


def test_paho_runs_on_the_loop_and_no_thread_outlives_the_connect(broker: Broker) -> None:
    async def main() -> None:
        async with connected(broker.host, broker.port) as (conn, sink):
            # the connect thread ends with the connect; nothing else runs paho
            await asyncio.to_thread(wait_for, lambda: not cloud_threads(), 5,
                                    "the connect thread to end")
            with Monitor(broker, f"{ROOT}/sweet-home/probe/#") as mon:
                mids = {conn.publish(f"{ROOT}/sweet-home/probe/{i}", str(i).encode(), 1,
                                     False) for i in range(50)}
                assert None not in mids
                await sink.wait_acked({m for m in mids if m is not None}, 10)
                got = await mon.await_count(f"{ROOT}/sweet-home/probe/49", 1, timeout=10)
                assert got[0].text == "49"
                assert len(mon.since()) == 50
            assert cloud_threads() == []
            assert sink.threads == {threading.get_ident()}

    run(main())


def test_a_broker_that_stops_reading_gets_every_publication_when_it_reads_again(
        proxy: TcpProxy) -> None:
    async def main() -> None:
        async with connected(proxy.host, proxy.port, window=64) as (conn, sink):
            proxy.hold.set()
            big = bytes(512 * 1024)
            mids = {conn.publish(f"{ROOT}/sweet-home/probe/{i}", big, 1, False)
                    for i in range(64)}
            assert None not in mids
            # 32 MB is more than the sockets between hub and proxy take: the hub has to
            # wait for the broker to read, on the loop
            await asyncio.to_thread(wait_for, lambda: conn._writer, 10,
                                    "the hub's socket to fill up")
            proxy.hold.clear()
            await sink.wait_acked({m for m in mids if m is not None}, 30)
            assert proxy.from_hub[3] == 64  # PUBLISH
            assert not sink.lost.is_set()

    run(main())


def test_an_idle_connection_pings_and_a_silent_broker_is_noticed(proxy: TcpProxy) -> None:
    async def main() -> None:
        async with connected(proxy.host, proxy.port, keepalive=1) as (_, sink):
            # idle: PINGREQs keep the broker from closing the connection (1.5 x keepalive)
            await asyncio.to_thread(wait_for, lambda: proxy.from_hub[12] >= 3, 10,
                                    "three PINGREQs")
            assert not sink.lost.is_set()
            # a broker that no longer answers: no PINGRESP, and the hub notices
            proxy.hold.set()
            await asyncio.wait_for(sink.lost.wait(), 10)
            proxy.hold.clear()
            # and connects again
            sink.connected.clear()
            await asyncio.wait_for(sink.connected.wait(), 10)

    run(main())


def test_a_connection_given_up_leaves_its_will_when_no_new_one_can_be_made(
        broker: Broker, proxy: TcpProxy) -> None:
    # Before: giving a connection up (a PUBACK that never came) sent DISCONNECT, so the
    # broker dropped the will; with the broker out of reach afterwards, the app showed the
    # hub "ready" while it was offline.
    state = f"{ROOT}/sweet-home/hub/$state"

    async def main() -> None:
        with Monitor(broker) as mon:
            async with connected(proxy.host, proxy.port, will=(state, "lost")) as (conn, sink):
                mid = conn.publish(state, b"ready", 1, True)
                assert mid is not None
                await sink.wait_acked({mid}, 5)
                proxy.paused.set()  # no new connection gets through
                conn.drop("a test gives the connection up")
                await mon.await_for(state, "lost")
                assert sink.lost.is_set()

    run(main())


def test_a_read_that_fails_ends_the_connection_and_a_new_one_follows(broker: Broker) -> None:
    async def main() -> int:
        async with connected(broker.host, broker.port) as (conn, sink):
            client = conn._client
            real = client.loop_read
            calls = 0

            def fails_once(max_packets: int = 1) -> Any:
                nonlocal calls
                calls += 1
                if calls == 1:
                    raise RuntimeError("a bug in a callback")
                return real(max_packets)

            client.loop_read = fails_once  # type: ignore[method-assign]
            sink.connected.clear()
            mid = conn.publish(f"{ROOT}/sweet-home/probe/0", b"0", 1, False)  # its PUBACK
            await asyncio.wait_for(sink.connected.wait(), 10)  # a new connection
            assert mid is not None
        return calls

    assert run(main()) >= 2


def test_an_opener_opens_the_connection_and_without_one_the_hub_does(
        broker: Broker) -> None:
    """`gatewayd --simulate` gives its daemon an opener (the simulated uplink's) for the
    hub's broker connections, which gets what is left of the attempt's connect_timeout;
    `gatewayd` gives none, and the hub opens them itself (gatewayd/cloud/dial.py). Before,
    the simulator replaced socket.create_connection for its whole process instead."""
    real = socket.create_connection
    by_opener: list[tuple[tuple[str, int], float | None]] = []

    def opener(address: tuple[str, int], timeout: float | None,
               source: tuple[str, int] | None) -> socket.socket:
        by_opener.append((address, timeout))
        return real(address, timeout, source)

    async def connect_once(opener: Opener | None) -> None:
        async with connected(broker.host, broker.port, opener=opener) as (conn, sink):
            mid = conn.publish(f"{ROOT}/sweet-home/probe/0", b"0", 1, False)
            assert mid is not None
            await sink.wait_acked({mid}, 10)  # the broker's PUBACK, over what was opened

    run(connect_once(opener))
    [(address, timeout)] = by_opener
    assert address == (broker.host, broker.port)
    assert timeout is not None and 0 < timeout <= 5.0  # the attempt's connect_timeout
    run(connect_once(None))
    assert len(by_opener) == 1
