"""How the cloud link opens its connection (gatewayd/cloud/dial.py) and says what became of
it (gatewayd/cloud/attempts.py), against a real mosquitto: a slow network, a dead
resolver, dead addresses, TLS names, the wrong kind of port.

A slow network here is a wait inside a fake network (an opener, a proxy, a resolver):
the fault, not a synchronisation; the tests wait on the link's outcomes, with timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gatewayd.cloud import dial
from gatewayd.cloud.attempts import CloudOutcome, CloudResult
from gatewayd.cloud.dial import DialingClient
from gatewayd.credentials import mqtt_username
from gatewayd.simulator.broker import Broker
from gatewayd.simulator.pki import make_test_pki
from tests.cloud_helpers import TOKEN, WSP, creds_for, fast_config, make_broker, make_link, run
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(60)

SLOW = 1.5  # seconds a slow network takes here: longer than the keepalive of 1 s


def pause(seconds: float) -> None:
    """A network that takes ``seconds`` (on the fake network's thread)."""
    threading.Event().wait(seconds)


# ---- paho's keepalive clock --------------------------------------------------------------

def test_a_connect_slower_than_keepalive_connects(broker: Broker) -> None:
    """DNS + TCP + TLS that took keepalive seconds or more never connected: paho starts
    its keepalive clock before it opens the socket, and the first loop_misc closed the
    connection before CONNACK, which the hub then blamed on the broker ("closed the
    connection before accepting it"), every attempt."""
    def slow_opener(address: tuple[str, int], timeout: float | None,
                    source: tuple[str, int] | None) -> socket.socket:
        pause(SLOW)
        return socket.create_connection(address, timeout, source)

    async def main() -> None:
        link = make_link(fast_config(keepalive=1, connect_timeout=10), opener=slow_opener)
        await link.start(creds_for(broker))
        result = await link.wait_result(10)
        status = link.status()
        await link.stop()
        assert result.outcome is CloudOutcome.CONNECTED, result.reason
        assert status["connected"] is True and status["last_error"] is None

    run(main())


def test_paho_s_keepalive_clock_starts_when_the_connection_is_open(broker: Broker) -> None:
    """paho starts it in reconnect(), before opening the socket: an external loop's first
    loop_misc() after a connect that took a keepalive period closed the connection ("no
    bytes received"), before CONNACK could come. Upstream could set the clock after
    _create_socket() as DialingClient does."""
    def slow_opener(address: tuple[str, int], timeout: float | None,
                    source: tuple[str, int] | None) -> socket.socket:
        pause(SLOW)
        return socket.create_connection(address, timeout, source)

    accepted = threading.Event()
    client = DialingClient(CallbackAPIVersion.VERSION2, client_id="dial-test",
                           opener=slow_opener)
    client.username_pw_set(mqtt_username(WSP), TOKEN)
    client.on_connect = lambda *args: accepted.set()
    client.connect(broker.host, broker.port, keepalive=1)
    client.loop_misc()  # as an external loop does, every second
    assert client.socket() is not None
    try:
        client.loop_start()  # reads the CONNACK
        assert accepted.wait(10)
    finally:
        client.disconnect()
        client.loop_stop()


class SlowAnswers:
    """A proxy to the broker that holds the broker's first answer (CONNACK) for SLOW s."""

    def __init__(self, port: int) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._target = port
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                hub, _ = self._server.accept()
                broker = socket.create_connection(("127.0.0.1", self._target), 5)
                self._socks += [hub, broker]
                threading.Thread(target=self._pump, args=(hub, broker, 0.0), daemon=True).start()
                threading.Thread(target=self._pump, args=(broker, hub, SLOW), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, hold: float) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                pause(hold)
                hold = 0.0
                dst.sendall(data)

    def close(self) -> None:
        for sock in [self._server, *self._socks]:
            sock.close()


def test_a_connack_later_than_keepalive_is_still_awaited(broker: Broker) -> None:
    """Until CONNACK, connect_timeout bounds the attempt, not paho's keepalive: paho
    closed a connection whose CONNACK took a keepalive period, and the hub said the
    broker had closed it."""
    proxy = SlowAnswers(broker.port)

    async def main() -> None:
        link = make_link(fast_config(keepalive=1, connect_timeout=10))
        await link.start(creds_for(broker, port=proxy.port))
        result = await link.wait_result(10)
        connected = link.status()["connected"]
        await link.stop()
        assert result.outcome is CloudOutcome.CONNECTED, result.reason
        assert connected is True

    try:
        run(main())
    finally:
        proxy.close()


def test_a_connection_the_hub_gives_up_is_said_to_be_the_hubs(tmp_path: Path) -> None:
    """An HTTP server on the broker's port: paho cannot read its answer and closes the
    connection. The hub said the broker had closed it."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    held: list[socket.socket] = []

    def http() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                held.append(conn)  # answered, and left open
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 100\r\n\r\n"
                             + b"x" * 100)

    threading.Thread(target=http, daemon=True).start()

    async def main() -> CloudResult:
        link = make_link()
        await link.start(creds_for(None, port=port))
        result = await link.wait_result(10)
        await link.stop()
        return result

    try:
        result = run(main())
    finally:
        server.close()
        for conn in held:
            conn.close()
    assert result.outcome is CloudOutcome.UNREACHABLE
    assert result.reason == (f"the hub closed the connection to broker 127.0.0.1:{port} "
                             f"before it was accepted: its answer was not MQTT (is {port} an "
                             "MQTT port?)")


# ---- one deadline for the lookup and every address ---------------------------------------

@contextlib.contextmanager
def dead_ports(count: int) -> Iterator[list[int]]:
    """Ports on 127.0.0.1 that never answer a SYN, as a dead address: a listener whose
    accept queue (of one) is full."""
    socks: list[socket.socket] = []
    ports = []
    try:
        for _ in range(count):
            listener = socket.socket()
            socks.append(listener)
            listener.bind(("127.0.0.1", 0))
            listener.listen(0)
            socks.append(socket.create_connection(listener.getsockname(), 5))
            ports.append(listener.getsockname()[1])
        yield ports
    finally:
        for sock in socks:
            sock.close()


def fake_names(monkeypatch: pytest.MonkeyPatch, names: dict[str, list[int]],
               silent: str = "", released: threading.Event | None = None) -> None:
    """The resolver gives each of ``names`` these ports on 127.0.0.1, in this order, and
    never answers for ``silent`` (until ``released``)."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        flags = kwargs.get("flags", args[3] if len(args) > 3 else 0)
        if flags & socket.AI_NUMERICHOST or host not in (*names, silent):
            return real(host, port, *args, **kwargs)
        if host == silent:
            assert released is not None
            released.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", p))
                for p in names[host]]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_dead_addresses_before_a_live_one_share_one_connect_timeout(
        broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name whose first addresses drop packets (an AAAA on a network without IPv6):
    each got the whole connect_timeout in turn, and the attempt took 2 x 5 s to reach the
    one that answers. Now the next address starts while the first still tries."""
    with dead_ports(2) as dead:
        fake_names(monkeypatch, {"several.test": [*dead, broker.port]})

        async def main() -> None:
            link = make_link(fast_config(connect_timeout=5))
            await link.start(creds_for(broker, host="several.test"))
            result = await link.wait_result(5)  # within the one connect_timeout
            connected = link.status()["connected"]
            await link.stop()
            assert result.outcome is CloudOutcome.CONNECTED, result.reason
            assert connected is True

        run(main())


def test_a_dead_resolver_ends_the_attempt_at_connect_timeout(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A resolver that does not answer held the attempt for glibc's retries (and here
    for good): no outcome, and stop() waited 5 s for the connect and warned. Now the lookup
    has the attempt's connect_timeout, later attempts wait for the same lookup rather than
    start another, and a stop does not wait for it."""
    released = threading.Event()
    fake_names(monkeypatch, {}, silent="silent.test", released=released)
    reason = ("broker unreachable: DNS lookup of 'silent.test' timed out (no answer from the "
              "hub's DNS server in time): check the hub's Internet connection and DNS server")

    async def main() -> None:
        link = make_link(fast_config(connect_timeout=1))
        failures: list[CloudResult] = []
        twice = asyncio.Event()

        def listen(result: CloudResult) -> None:
            failures.append(result)
            if len(failures) >= 2:
                twice.set()

        link.add_listener(listen)
        await link.start(creds_for(None, host="silent.test"))
        result = await link.wait_result(10)
        assert (result.outcome, result.reason) == (CloudOutcome.UNREACHABLE, reason)
        assert link.status()["last_error"] == reason
        await asyncio.wait_for(twice.wait(), 10)
        assert [f.reason for f in failures[:2]] == [reason, reason]
        lookups = [t for t in threading.enumerate() if t.name == "cloud-resolve"]
        assert len(lookups) == 1  # the second attempt waited for the first one's lookup
        with caplog.at_level(logging.WARNING, "gatewayd.cloud"):
            await link.stop()
        assert "did not end in time" not in caplog.text

    try:
        run(main())
    finally:
        released.set()


def test_a_stop_does_not_wait_for_a_connect_under_way(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """stop() waited for the connect thread (5 s, then "the connection did not end in
    time"); now it leaves it, and the thread closes what it opens when it is done."""
    released, asked = threading.Event(), threading.Event()
    fake_names(monkeypatch, {}, silent="silent.test", released=released)
    looking_up = socket.getaddrinfo

    def lookup(*args: Any, **kwargs: Any) -> Any:
        if args[0] == "silent.test" and not kwargs.get("flags", 0) & socket.AI_NUMERICHOST:
            asked.set()
        return looking_up(*args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)

    async def main() -> None:
        link = make_link(fast_config(connect_timeout=30))
        await link.start(creds_for(None, host="silent.test"))
        assert await asyncio.to_thread(asked.wait, 10)
        with caplog.at_level(logging.WARNING, "gatewayd.cloud"):
            await link.stop()
        assert "did not end in time" not in caplog.text
        assert link.status()["started"] is False

    try:
        run(main())
    finally:
        released.set()


# ---- TLS names and the wrong kind of port -------------------------------------------------

@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[Broker]:
    pki = make_test_pki(tmp_path / "pki", ["broker.test", "127.0.0.1"])
    b = make_broker(tmp_path / "tls-broker", tls=pki)
    yield b
    b.stop()


def attempt(broker: Broker, **creds: Any) -> tuple[CloudResult, dict[str, Any]]:
    async def main() -> tuple[CloudResult, dict[str, Any]]:
        assert broker.tls is not None
        link = make_link(fast_config(ca_file=str(broker.tls.cafile)))
        await link.start(creds_for(broker, **creds))
        result = await link.wait_result(10)
        status = link.status()
        await link.stop()
        return result, status

    return run(main())


def test_a_host_with_a_trailing_dot_is_named_without_it_in_tls(
        tls_broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    """`broker.test.` (an absolute name, which pairing accepts) went to TLS as SNI and the
    certificate check with its dot: "hostname mismatch" for a certificate of broker.test."""
    assert tls_broker.tls is not None
    fake_names(monkeypatch, {"broker.test.": [tls_broker.tls.port]})
    result, status = attempt(tls_broker, host="broker.test.", mqtts_port=tls_broker.tls.port)
    assert result.outcome is CloudOutcome.CONNECTED, result.reason
    assert result.reason == f"connected to broker.test.:{tls_broker.tls.port} over TLS"
    assert status["connected"] is True


def test_tls_to_a_plain_port_and_plain_to_a_tls_port_say_so(tls_broker: Broker) -> None:
    assert tls_broker.tls is not None
    plain, tls = tls_broker.port, tls_broker.tls.port
    result, _ = attempt(tls_broker, host="127.0.0.1", mqtts_port=plain)
    assert result.outcome is CloudOutcome.UNREACHABLE
    assert result.reason == (f"broker unreachable: TLS handshake with 127.0.0.1:{plain} was "
                             f"closed (Connection reset by peer): is {plain} a plain MQTT port "
                             "rather than a TLS one?")
    result, status = attempt(tls_broker, host="127.0.0.1", port=tls)
    assert result.reason == (f"broker 127.0.0.1:{tls} closed the connection before accepting "
                             f"it (is {tls} a TLS port? then it is the mqtts_port)")
    assert status["last_error"] == result.reason


def test_an_ipv6_broker_is_written_in_brackets() -> None:
    """`::1:9` read as a port of 9 on some address; `[::1]:9` is the usual way."""
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    port = probe.getsockname()[1]  # bound, not listening: refused

    async def main() -> tuple[CloudResult, dict[str, Any]]:
        link = make_link()
        await link.start(creds_for(None, host="::1", port=port))
        result = await link.wait_result(10)
        status = link.status()
        await link.stop()
        return result, status

    try:
        result, status = run(main())
    finally:
        probe.close()
    assert status["broker"] == f"[::1]:{port}"
    assert result.reason == (f"broker unreachable: TCP connection to [::1]:{port} refused "
                             "(nothing listens there: check host and port)")


def test_a_broker_with_only_old_tls_says_so(tmp_path: Path) -> None:
    """A TLS 1.1 broker: OpenSSL's own words ("TLSV1_ALERT_PROTOCOL_VERSION") before."""
    pki = make_test_pki(tmp_path / "pki", ["127.0.0.1"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        with warnings.catch_warnings():  # deprecated: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("ALL:@SECLEVEL=0")
        context.load_cert_chain(pki.certfile, pki.keyfile)
    except (ssl.SSLError, ValueError) as exc:
        pytest.skip(f"this OpenSSL cannot serve TLS 1.1: {exc}")
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                with contextlib.suppress(OSError, ssl.SSLError):
                    context.wrap_socket(conn, server_side=True).close()
                conn.close()

    threading.Thread(target=serve, daemon=True).start()

    async def main() -> CloudResult:
        link = make_link(fast_config(ca_file=str(pki.cafile)))
        await link.start(creds_for(None, port=1883, mqtts_port=port))
        result = await link.wait_result(10)
        await link.stop()
        return result

    try:
        result = run(main())
    finally:
        server.close()
    assert result.outcome is CloudOutcome.UNREACHABLE
    assert result.reason == (f"TLS handshake with 127.0.0.1:{port} failed: the broker offers "
                             "only TLS older than 1.2, which the hub does not accept")


def test_an_answer_that_came_after_its_attempt_gave_up_serves_the_next_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A resolver always slower than connect_timeout: each attempt's lookup answered after
    its attempt had given up, and the next attempt (after its backoff) threw it away and
    asked again, so the hub never connected (a reviewer's reproduction: a 1.5 s resolver,
    1 s attempts). The late answer is the next attempt's now; once taken, a name is asked
    again."""
    asked: list[str] = []
    answer = threading.Event()

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("flags", 0) & socket.AI_NUMERICHOST:
            raise socket.gaierror(socket.EAI_NONAME, "not an address literal")
        asked.append(host)
        answer.wait(30)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    lookups = dial.Lookups()
    with pytest.raises(dial.LookupTimeout):
        lookups.resolve("slow.test", 1883, time.monotonic() + 0.05)
    answer.set()  # the resolver answers, after the attempt gave up
    wait_for(lambda: not [t for t in threading.enumerate() if t.name == "cloud-resolve"],
             10, "the lookup's answer")
    found = lookups.resolve("slow.test", 1883, time.monotonic() + 0.05)
    assert [a[4] for a in found] == [("127.0.0.1", 1883)]
    assert asked == ["slow.test"]  # the late answer was used, not a second lookup
    lookups.resolve("slow.test", 1883, time.monotonic() + 5)
    assert asked == ["slow.test", "slow.test"]  # taken once: the next attempt asks again
