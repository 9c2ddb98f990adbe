"""The simulated broker gets a port that stays free, and picks again when it loses one.

A CI run lost a bench to a port handed out by ``bind(0)`` and taken (by an outgoing
connection's local port) before mosquitto bound it: "mosquitto exited (1)", with the reason
only in mosquitto's own log.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewayd.simulator import broker as broker_module
from gatewayd.simulator.broker import MONITOR_USER, Broker
from gatewayd.simulator.procs import PRIVATE_PORTS_FROM, free_port, mqtt_connack

pytestmark = pytest.mark.timeout(60)


def ephemeral_low() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port held as an outgoing connection holds its local port (bound, not listening)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", free_port()))
        yield int(s.getsockname()[1])


def test_a_free_port_is_outside_the_range_outgoing_connections_take_ports_from() -> None:
    ports = {free_port() for _ in range(20)}
    assert all(PRIVATE_PORTS_FROM <= port < ephemeral_low() for port in ports), ports
    assert len(ports) > 1  # picked at random: two runs at once do not race for one port


def test_a_broker_that_loses_the_port_it_picked_picks_another(
        tmp_path: Path, taken_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    picks = iter([taken_port])  # the race, made certain: the first pick is already taken
    monkeypatch.setattr(broker_module, "free_port",
                        lambda host: next(picks, None) or free_port(host))
    broker = Broker(tmp_path / "broker").start()
    try:
        assert broker.port != taken_port
        assert mqtt_connack(broker.host, broker.port, MONITOR_USER, broker.monitor_password)
        assert "Address already in use" in broker.log_text()  # mosquitto really lost it
    finally:
        broker.stop()


def test_a_broker_that_keeps_losing_its_port_says_why_from_mosquittos_log(
        tmp_path: Path, taken_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_module, "free_port", lambda host: taken_port)
    broker = Broker(tmp_path / "broker")
    with pytest.raises(RuntimeError, match="Address already in use"):
        broker.start()
    assert broker.child is None  # nothing left running
