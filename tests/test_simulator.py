"""`gatewayd --simulate`: the hardware-free world an app developer runs on a laptop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from gatewayd.credentials import mqtt_username
from tests.helpers import Gatewayd, ctl_json, wait_for


def _children_of(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc), zombies excluded."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            continue
        parents[int(entry)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _connect(host: str, port: int, user: str, password: str) -> mqtt.ReasonCode:
    done = threading.Event()
    result: list[mqtt.ReasonCode] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.username_pw_set(user, password)

    def on_connect(c: mqtt.Client, userdata: object, flags: object, rc: mqtt.ReasonCode,
                   props: object = None) -> None:
        result.append(rc)
        done.set()

    client.on_connect = on_connect
    client.connect(host, port)
    client.loop_start()
    try:
        assert done.wait(10), "no CONNACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0]


def test_simulate_world_sim_json_broker_and_clean_sigint(tmp_path: Path) -> None:
    # A space and the characters that separate a D-Bus address's parts: the bus address
    # must escape them (a short parent, so the socket path stays within D-Bus's limit).
    parent = tempfile.TemporaryDirectory(prefix="gatewayd sim +,=;:@~")
    workdir = Path(parent.name) / "sim"
    gw = Gatewayd(["--simulate", "--workdir", str(workdir)])
    try:
        sim_json = workdir / "sim.json"
        wait_for(lambda: sim_json.exists() or gw.proc.poll() is not None, 60, "sim.json")
        assert gw.proc.poll() is None, gw.output()
        info = json.loads(sim_json.read_text())
        for key in ("portal", "mqtt", "system_bus", "control_socket", "state_dir", "account",
                    "wifi"):
            assert key in info
        assert info["portal"].startswith("http://127.0.0.1:")
        assert info["system_bus"].startswith("unix:path=")
        assert {"ssid", "psk"} <= set(info["wifi"][0])
        account = info["account"]
        host, port = info["mqtt"]["host"], info["mqtt"]["port"]
        user = mqtt_username(account["wsp"])
        assert _connect(host, port, user, account["token"]).is_failure is False
        assert _connect(host, port, user, "wrong-token").is_failure is True

        status = ctl_json("--sim", str(workdir), "status")
        assert status["state"] == "unpaired"
        assert status["device_id"] == "dc-a6-32-12-34-56"
        assert status["uptime"] >= 0
        assert account["token"] not in json.dumps(status)

        started = _children_of(gw.proc.pid)
        names = {Path(f"/proc/{p}/comm").read_text().strip() for p in started if _alive(p)}
        assert "mosquitto" in names and "dbus-daemon" in names, names
    finally:
        code = gw.stop(signal.SIGINT, timeout=30)
    assert code == 0, gw.output()
    wait_for(lambda: not any(_alive(p) for p in started), 10, "simulator children to exit")
    parent.cleanup()


def test_a_workdir_too_long_for_the_bus_socket_is_refused_by_name(tmp_path: Path) -> None:
    workdir = tmp_path / ("w" * 100)
    gw = Gatewayd(["--simulate", "--workdir", str(workdir)])
    assert gw.proc.wait(60) == 2, gw.output()
    assert (f"{workdir}/bus/system_bus_socket: the private D-Bus socket's path is "
            in gw.output()), gw.output()
    assert "choose a shorter --workdir" in gw.output()
    assert "Traceback" not in gw.output()
    assert not workdir.exists()  # refused before anything was made there


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the directory away")
def test_a_workdir_of_another_user_is_refused(tmp_path: Path) -> None:
    """Another user could make /tmp/gatewayd-sim first and plant pid files in it, which the
    simulator trusts when it reaps what a killed run left (it killed the process named)."""
    workdir = tmp_path / "planted"
    workdir.mkdir()
    os.chown(workdir, 65534, 65534)
    (workdir / "logs").mkdir()
    gw = Gatewayd(["--simulate", "--workdir", str(workdir)])
    assert gw.proc.wait(60) == 2, gw.output()
    assert f"{workdir} belongs to another user or anyone may write to it" in gw.output()
    assert "Traceback" not in gw.output()
    assert sorted(p.name for p in workdir.iterdir()) == ["logs"]  # nothing was touched


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start another user's process")
def test_a_pid_file_naming_another_users_process_does_not_stop_it(tmp_path: Path) -> None:
    """Reaping a killed run's leftovers trusts the pid file's pid and start time, both of
    which anyone can read in /proc: the process must also be this user's."""
    from gatewayd.simulator.procs import reap_orphan, start_time, wait_until

    def switched() -> bool:
        status = Path(f"/proc/{victim.pid}/status").read_text()
        return "Uid:\t65534" in status

    victim = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        wait_until(switched, 30, "setpriv to switch users")
        started = start_time(victim.pid)
        assert started is not None
        pidfile = tmp_path / "mosquitto.pid"
        pidfile.write_text(json.dumps({"pid": victim.pid, "start": started,
                                       "parent": victim.pid, "parent_start": 0}))
        reap_orphan(pidfile, timeout=5)
        assert victim.poll() is None and not pidfile.exists()
    finally:
        victim.kill()
        victim.wait()


def test_services_are_ready_when_they_answer_not_when_their_socket_exists(
        tmp_path: Path) -> None:
    """The fixtures' readiness checks: a D-Bus Ping and an MQTT CONNACK."""
    import socket

    from gatewayd.simulator.broker import MONITOR_USER, Broker
    from gatewayd.simulator.dbus_daemon import PrivateBus
    from gatewayd.simulator.procs import dbus_ping, free_port, mqtt_connack

    # A socket file that nobody listens on refuses connections: not ready.
    dead = tmp_path / "dead.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(dead))
        assert not dbus_ping(f"unix:path={dead}")
    bus = PrivateBus(tmp_path / "bus").start()
    try:
        assert dbus_ping(bus.address)
        assert not dbus_ping(bus.address, "org.freedesktop.NetworkManager")  # nobody owns it
    finally:
        bus.stop()
    assert not dbus_ping(bus.address)

    port = free_port()
    with socket.socket() as listener:  # listening, but no broker behind it
        listener.bind(("127.0.0.1", port))
        listener.listen()
        assert not mqtt_connack("127.0.0.1", port, MONITOR_USER, "x", timeout=0.5)
    broker = Broker(tmp_path / "broker").start()
    try:
        assert mqtt_connack(broker.host, broker.port, MONITOR_USER, broker.monitor_password)
        assert not mqtt_connack(broker.host, broker.port, MONITOR_USER, "wrong-password")
    finally:
        broker.stop()


def test_a_world_whose_bus_never_answers_leaves_no_process_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gatewayd.simulator.dbus_daemon import PrivateBus
    from gatewayd.simulator.world import SimWorld

    # A dbus-daemon that starts but never listens: the bus's start times out half-way.
    fake = tmp_path / "bin" / "dbus-daemon"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\necho $$ > {tmp_path}/fake.pid\nexec sleep 300\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(PrivateBus, "START_TIMEOUT", 1.0)  # what follows the timeout counts
    world = SimWorld(tmp_path / "sim", with_nm=False, with_bluez=False, with_platform=False)
    with pytest.raises(TimeoutError, match="the private D-Bus daemon to answer a Ping"):
        world.start()
    fake_pid = int((tmp_path / "fake.pid").read_text())
    assert not _alive(fake_pid)
    assert not (tmp_path / "sim" / "bus" / "dbus-daemon.pid").exists()


def test_the_simulator_without_its_extra_says_what_to_install(tmp_path: Path) -> None:
    # An install without the `sim` extra: dbus-python, python-dbusmock and BlueZoo cannot be
    # imported.
    hide = tmp_path / "site"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\n"
        "class Absent:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] in ('dbus', 'dbusmock', 'bluezoo'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Absent())\n")
    path = os.pathsep.join(p for p in (str(hide), os.environ.get("PYTHONPATH")) if p)
    workdir = tmp_path / "sim"
    gw = Gatewayd(["--simulate", "--workdir", str(workdir)], env={"PYTHONPATH": path})
    assert gw.proc.wait(60) == 2, gw.output()
    assert ("the simulator needs the development install (scripts/setup.sh): "
            "dbus-python, python-dbusmock, BlueZoo not installed" in gw.output()), gw.output()
    assert "Traceback" not in gw.output()
    assert not workdir.exists()  # refused before anything started


# A dbus-daemon that signals the simulator while it waits for the bus (after the first
# readiness check, so at a known point of its start), then, when stopped, signals it again.
_SIGNALLING_DBUS_DAEMON = """\
import os, signal, socket, sys
conf = next(a for a in sys.argv if a.startswith("--config-file=")).partition("=")[2]
listener = socket.socket(socket.AF_UNIX)
listener.bind(os.path.join(os.path.dirname(conf), "system_bus_socket"))
listener.listen()
listener.accept()[0].close()  # the simulator's first Ping: it is starting its world now
listener.close()  # later Pings are refused at once
signal.signal(signal.SIGTERM, lambda *_: (os.kill(os.getppid(), signal.SIGINT), sys.exit(0)))
os.kill(os.getppid(), signal.SIGTERM)
while True:
    signal.pause()
"""


def test_sigterm_while_the_world_starts_stops_it_cleanly_despite_a_second_signal(
        tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "dbus-daemon"
    fake.parent.mkdir()
    fake.write_text(f"#!{sys.executable}\n{_SIGNALLING_DBUS_DAEMON}")
    fake.chmod(0o755)
    workdir = tmp_path / "sim"
    gw = Gatewayd(["--simulate", "--workdir", str(workdir)],
                  env={"PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"})
    assert gw.proc.wait(60) == 0, gw.output()
    assert "simulated world stopped" in gw.output()
    assert "Traceback" not in gw.output()
    # Every child was stopped (a stopped one's pid file goes), none left to the next run.
    assert not list(workdir.rglob("*.pid")), list(workdir.rglob("*.pid"))


def test_sigint_while_the_daemon_is_built_stops_the_simulator_without_a_traceback(
        tmp_path: Path) -> None:
    """Before: a Ctrl-C after the world had started but before the daemon had its own
    handlers was raised inside the daemon's task (here: while it imports its Zigbee
    bridge), and asyncio logged "Task exception was never retrieved" with a traceback."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os, signal, sys\n"
        "class CtrlC:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'gatewayd.bridge':\n"
        "            sys.meta_path.remove(self)\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "sys.meta_path.insert(0, CtrlC())\n")
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    workdir = tmp_path / "sim"
    gw = Gatewayd(["--simulate", "--workdir", str(workdir)], env={"PYTHONPATH": path})
    assert gw.proc.wait(60) == 0, gw.output()
    assert "simulated world stopped" in gw.output()
    assert "Traceback" not in gw.output() and "never retrieved" not in gw.output()
    assert not list(workdir.rglob("*.pid")), list(workdir.rglob("*.pid"))


def test_a_workdir_that_is_a_file_is_refused_in_words(tmp_path: Path) -> None:
    """0.1.4 said `[Errno 17] File exists: '…'`, Python's words, for a regular file."""
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    for workdir, reason in ((afile, "not a directory"), (afile / "sub", "not a directory")):
        gw = Gatewayd(["--simulate", "--workdir", str(workdir)])
        assert gw.proc.wait(60) == 2, gw.output()
        assert f"--workdir {workdir}: {reason}" in gw.output(), gw.output()
        assert "Errno" not in gw.output() and "Traceback" not in gw.output()
    assert afile.read_text() == "mine\n"
