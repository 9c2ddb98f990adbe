"""`gatewayd --simulate`: the hub's cloud session lives and dies with its simulated uplink.

The broker is on loopback, yet a Wi-Fi loss or a network without internet must end the hub's
MQTT session as on a hub: the simulator gives its daemon the uplink's opener, which carries
the hub's broker connections through a relay the NetworkManager mock opens and closes
(gatewayd/simulator/uplink.py, docs/simulator.md).
"""

from __future__ import annotations

import errno
import json
import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from gatewayd.simulator.uplink import DOWN, LIMITED, MAX_PAIRS, UP, Uplink
from tests.helpers import wait_for
from tests.test_e2e_simulator import DEVICE_ID, Sim, http_get, monitor_for


def nm_control(sim: Sim, method: str, signature: str, *args: Any) -> Any:
    """One of the NetworkManager mock's control methods (docs/simulator.md), as busctl."""
    import dbus

    bus = dbus.bus.BusConnection(sim.info["system_bus"])
    try:
        mock = bus.get_object("org.freedesktop.NetworkManager", "/org/freedesktop",
                              introspect=False)
        return getattr(mock, method)(*args, dbus_interface="org.freedesktop.DBus.Mock",
                                     signature=signature, timeout=10)
    finally:
        bus.close()


def test_the_cloud_sees_the_hub_lost_without_its_uplink_and_ready_once_it_is_back(
        tmp_path: Path) -> None:
    config = tmp_path / "fast.toml"  # the broker's will comes after 1.5 x keepalive
    config.write_text("[cloud]\nkeepalive = 5\nreconnect_max = 2\n")
    sim = Sim(tmp_path / "sim", "--config", str(config))
    try:
        account, mqtt = sim.info["account"], sim.info["mqtt"]
        home = next(w for w in sim.info["wifi"] if w["ssid"] == "HomeNet")
        state = f"{account['username']}/sweet-home/{DEVICE_ID}/$state"
        with monitor_for(sim) as monitor:
            assert http_get(sim.pair_url(ssid="HomeNet", psk=home["psk"], wsp=account["wsp"],
                                         token=account["token"], host=mqtt["host"],
                                         brport=str(mqtt["port"]))) == (200, "OK")
            monitor.wait_for(state, "ready", timeout=30)

            # The home network goes away: the broker's will says the hub is lost, and the
            # hub itself finds its session dead (its keepalive) instead of keeping it.
            mark = monitor.mark()
            assert nm_control(sim, "RemoveWifiNetwork", "s", "HomeNet") == 2
            monitor.wait_for(state, "lost", mark=mark, timeout=30)
            wait_for(lambda: not sim.status()["cloud_link"]["connected"], 30,
                     "the hub to see its cloud session gone")
            mark = monitor.mark()
            nm_control(sim, "AddWifiNetwork", "s", json.dumps(
                {"ssid": "HomeNet", "psk": home["psk"], "security": "wpa2", "strength": 82}))
            monitor.wait_for(state, "ready", mark=mark, timeout=60)

            # Wi-Fi up, no internet: the same, and back once the internet is.
            mark = monitor.mark()
            nm_control(sim, "SetInternet", "b", False)
            monitor.wait_for(state, "lost", mark=mark, timeout=30)
            wait_for(lambda: not sim.status()["cloud_link"]["connected"], 30,
                     "the hub to see its cloud session gone")
            mark = monitor.mark()
            nm_control(sim, "SetInternet", "b", True)
            monitor.wait_for(state, "ready", mark=mark, timeout=60)
            assert sim.status()["cloud_link"]["connected"]
    finally:
        assert sim.proc.stop(signal.SIGINT, timeout=30) == 0, sim.proc.output()


def test_the_relay_carries_only_while_up_and_holds_a_bounded_number_of_connections(
        tmp_path: Path) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    peers: list[socket.socket] = []
    uplink = Uplink(tmp_path / "uplink.sock").start()
    announcer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def announce(level: str) -> None:
        announcer.sendto(level.encode(), str(uplink.state_socket))
        wait_for(lambda: uplink.level == level, 10, f"the uplink to be {level}")

    def connect_as_the_hub(address: tuple[str, int], timeout: float = 5.0) -> socket.socket:
        return uplink.open(address, timeout, None)  # as the hub's paho client calls it

    try:
        address = server.getsockname()
        # No routed link: no route to the broker, at once.
        with pytest.raises(OSError) as refused:
            connect_as_the_hub(address)
        assert refused.value.errno == errno.ENETUNREACH
        # A link without internet: the connect waits for it, then times out.
        announce(LIMITED)
        with pytest.raises(TimeoutError):
            connect_as_the_hub(address, timeout=0.5)

        announce(UP)
        hub = connect_as_the_hub(address)
        broker, _ = server.accept()
        peers.append(broker)
        hub.sendall(b"ping")
        assert broker.recv(16) == b"ping"
        announce(DOWN)  # the Wi-Fi goes: nothing crosses, nothing is closed
        broker.sendall(b"held back")
        announce(UP)  # back before anybody gave up: TCP delivers what waited
        hub.settimeout(10)
        assert hub.recv(16) == b"held back"

        # The oldest relayed connection is cut when MAX_PAIRS more come.
        extra = [connect_as_the_hub(address) for _ in range(MAX_PAIRS)]
        peers.extend(server.accept()[0] for _ in extra)
        wait_for(lambda: uplink.relayed == MAX_PAIRS, 10, "the relay to take them all")
        with pytest.raises((ConnectionResetError, AssertionError)):
            assert hub.recv(16) != b""
        for sock in extra + peers:  # both ends: a half-closed connection is still carried
            sock.close()
        wait_for(lambda: uplink.relayed == 0, 10, "closed connections to be let go")
    finally:
        uplink.stop()
        announcer.close()
        for sock in peers:
            sock.close()
        server.close()
