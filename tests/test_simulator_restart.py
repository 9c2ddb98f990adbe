"""The simulator for crash tests: a restart of the same workdir after `kill -9`.

The broker keeps its ports, accounts and CA, the simulated NetworkManager keeps the profiles
the hub saved (and loses the in-memory ones, as a reboot does), orphans of the killed run do
not block the next one, and the TLS listener pairs end to end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dbus
import pytest

from gatewayd.credentials import mqtt_username
from gatewayd.simulator.broker import Broker
from gatewayd.simulator.dbus_daemon import PrivateBus
from gatewayd.simulator.nm_mock import CONN_IFACE, SETTINGS_IFACE, SETTINGS_PATH, NetworkManagerMock
from gatewayd.simulator.pki import sim_pki
from gatewayd.simulator.procs import Child, start_time
from tests.helpers import Gatewayd, ctl, wait_for
from tests.test_e2e_simulator import Sim, http_get
from tests.test_simulator import _connect

ACTIVATED = 100


def nm_profiles(bus_address: str) -> dict[str, dict[str, Any]]:
    """id -> {uuid, unsaved, psk} of every profile the (simulated) NetworkManager holds."""
    bus = dbus.bus.BusConnection(bus_address)
    try:
        settings = bus.get_object("org.freedesktop.NetworkManager", SETTINGS_PATH)
        found = {}
        for path in settings.ListConnections(dbus_interface=SETTINGS_IFACE):
            conn = bus.get_object("org.freedesktop.NetworkManager", path)
            values = conn.GetSettings(dbus_interface=CONN_IFACE)
            psk = None
            if "802-11-wireless-security" in values:
                secrets = conn.GetSecrets("802-11-wireless-security", dbus_interface=CONN_IFACE)
                psk = secrets["802-11-wireless-security"].get("psk")
            unsaved = conn.Get(CONN_IFACE, "Unsaved", dbus_interface=dbus.PROPERTIES_IFACE)
            found[str(values["connection"]["id"])] = {
                "uuid": str(values["connection"]["uuid"]), "unsaved": bool(unsaved),
                "psk": None if psk is None else str(psk), "settings": values}
        return found
    finally:
        bus.close()


def restart(sim: Sim) -> Sim:
    """`kill -9` the simulator, then start it again on the same workdir."""
    sim.proc.proc.send_signal(signal.SIGKILL)
    sim.proc.proc.wait(10)
    (sim.workdir / "sim.json").unlink()  # left behind; the new run writes it when ready
    return Sim(sim.workdir)


def pair_params(sim: Sim, **extra: str) -> dict[str, str]:
    account, mqtt = sim.info["account"], sim.info["mqtt"]
    home = next(w for w in sim.info["wifi"] if w["ssid"] == "HomeNet")
    return {"ssid": home["ssid"], "psk": home["psk"], "wsp": account["wsp"],
            "token": account["token"], "host": mqtt["host"], "brport": str(mqtt["port"]),
            **extra}


def test_a_hub_killed_with_kill_9_is_online_again_after_a_restart_of_its_workdir(
        tmp_path: Path) -> None:
    sim = Sim(tmp_path / "sim")
    try:
        assert http_get(sim.pair_url(**pair_params(sim))) == (200, "OK")
        wait_for(lambda: sim.status()["state"] == "online", 30, "online")
        saved = nm_profiles(sim.info["system_bus"])["gatewayd-client-HomeNet"]
        assert not saved["unsaved"]
        ca = Path(sim.info["mqtt"]["tls"]["ca"]).read_bytes()

        sim = restart(sim)
        # Nobody pairs it again: its stored credentials name the same broker, which still
        # knows the account, and NetworkManager still has the Wi-Fi profile.
        wait_for(lambda: sim.status()["state"] == "online", 30, "online after the restart")
        status = sim.status()
        assert status["paired"] and status["wifi"]["ssid"] == "HomeNet"
        assert sim.info["mqtt"]["port"] == status["cloud"]["port"]
        assert Path(sim.info["mqtt"]["tls"]["ca"]).read_bytes() == ca
        # The very profile the hub saved before the crash (a new one would have a new uuid).
        profiles = nm_profiles(sim.info["system_bus"])
        assert profiles["gatewayd-client-HomeNet"]["uuid"] == saved["uuid"]
        assert profiles["gatewayd-client-HomeNet"]["psk"] == "supersecret"
    finally:
        assert sim.proc.stop(signal.SIGINT, timeout=30) == 0, sim.proc.output()


def test_pairing_over_the_simulated_brokers_tls_listener(tmp_path: Path) -> None:
    sim = Sim(tmp_path / "sim")
    try:
        tls = sim.info["mqtt"]["tls"]
        assert tls["port"] != sim.info["mqtt"]["port"]
        assert Path(tls["ca"]) == sim.workdir / "broker" / "pki" / "ca.pem"
        assert b"BEGIN CERTIFICATE" in Path(tls["ca"]).read_bytes()
        params = pair_params(sim, mqtts_port=str(tls["port"]))
        assert http_get(sim.pair_url(**params)) == (200, "OK")
        wait_for(lambda: sim.status()["state"] == "online", 30, "online over TLS")
        status = sim.status()
        assert status["cloud"]["tls"] is True, status["cloud"]
        link = status["cloud_link"]
        assert link["tls"] is True and link["connected"] is True, link
    finally:
        assert sim.proc.stop(signal.SIGINT, timeout=30) == 0, sim.proc.output()


def test_a_second_simulator_on_a_busy_workdir_is_refused_and_changes_nothing(
        tmp_path: Path) -> None:
    sim = Sim(tmp_path / "sim")
    try:
        sim_json = sim.workdir / "sim.json"
        written = sim_json.read_text()
        second = Gatewayd(["--simulate", "--workdir", str(sim.workdir)])
        assert second.proc.wait(60) == 2, second.output()
        assert sim_json.read_text() == written
        assert (f"{sim.workdir.resolve()} is in use by another simulator "
                f"(pid {sim.proc.proc.pid}); stop it or use another --workdir"
                in second.output()), second.output()
        assert "Traceback" not in second.output()
        # The running world is still reachable the way sim.json tells.
        assert ctl("--sim", str(sim.workdir), "platform", "log").returncode == 0
        assert sim.status()["device_id"] == "dc-a6-32-12-34-56"
    finally:
        assert sim.proc.stop(signal.SIGINT, timeout=30) == 0, sim.proc.output()


# --- the pieces, each on its own --------------------------------------------------------------

@pytest.fixture
def bus(tmp_path: Path) -> Iterator[PrivateBus]:
    private = PrivateBus(tmp_path / "bus").start()
    yield private
    private.stop()


def test_the_nm_mock_keeps_saved_profiles_across_a_crash_and_forgets_in_memory_ones(
        bus: PrivateBus, tmp_path: Path) -> None:
    workdir, profiles_file = tmp_path / "nm", tmp_path / "nm" / "profiles.json"
    client_uuid = str(uuid.uuid4())
    client = {
        "connection": {"id": "gatewayd-client-HomeNet", "uuid": client_uuid,
                       "type": "802-11-wireless", "autoconnect": True},
        "802-11-wireless": {"ssid": dbus.ByteArray(b"HomeNet"), "mode": "infrastructure"},
        "802-11-wireless-security": {"key-mgmt": "wpa-psk", "psk": "supersecret"},
    }
    # Saved, with nested typed values, then changed in memory only: the disk keeps the old.
    office = {
        "connection": {"id": "Office", "uuid": str(uuid.uuid4()), "type": "802-11-wireless",
                       "autoconnect": False, "autoconnect-priority": dbus.Int32(-5)},
        "802-11-wireless": {"ssid": dbus.ByteArray(b"Office"), "mode": "infrastructure"},
        "802-11-wireless-security": {"key-mgmt": "wpa-psk", "psk": "correct horse battery"},
        "ipv4": {"method": "manual", "address-data": dbus.Array(
            [dbus.Dictionary({"address": "192.168.1.60", "prefix": dbus.UInt32(24)},
                             signature="sv")], signature="a{sv}")},
    }
    hotspot = {
        "connection": {"id": "gatewayd-hotspot", "uuid": str(uuid.uuid4()),
                       "type": "802-11-wireless", "autoconnect": False},
        "802-11-wireless": {"ssid": dbus.ByteArray(b"Gateway-1234"), "mode": "ap"},
        "ipv4": {"method": "shared"},
    }
    nm = NetworkManagerMock(bus, workdir, profiles_file=profiles_file).start()
    try:
        settings = nm.connection.get_object("org.freedesktop.NetworkManager", SETTINGS_PATH)
        settings.AddConnection(client, dbus_interface=SETTINGS_IFACE)
        office_path = settings.AddConnection(office, dbus_interface=SETTINGS_IFACE)
        settings.AddConnectionUnsaved(hotspot, dbus_interface=SETTINGS_IFACE)
        changed = dict(office, **{"802-11-wireless-security": {"key-mgmt": "wpa-psk",
                                                               "psk": "not saved to disk"}})
        nm.connection.get_object("org.freedesktop.NetworkManager", office_path).UpdateUnsaved(
            changed, dbus_interface=CONN_IFACE)
        nm.wait_for_device_state(ACTIVATED)
        assert set(nm_profiles(bus.address)) == {"gatewayd-client-HomeNet", "Office",
                                                 "gatewayd-hotspot", "lo"}
        assert profiles_file.stat().st_mode & 0o777 == 0o600
        assert nm.child is not None
        nm.child.proc.kill()  # a crash: whatever is on disk was written when it changed
        nm.child.proc.wait(10)
    finally:
        nm.stop()

    nm = NetworkManagerMock(bus, workdir, profiles_file=profiles_file).start()
    try:
        after = nm_profiles(bus.address)
        # The hotspot is gone; "lo" is NetworkManager's own, generated at every start.
        assert set(after) == {"gatewayd-client-HomeNet", "Office", "lo"}
        assert after["gatewayd-client-HomeNet"]["uuid"] == client_uuid
        assert after["gatewayd-client-HomeNet"]["psk"] == "supersecret"
        assert not after["gatewayd-client-HomeNet"]["unsaved"]
        assert after["Office"]["psk"] == "correct horse battery"
        restored = after["Office"]["settings"]
        assert bytes(restored["802-11-wireless"]["ssid"]) == b"Office"
        assert int(restored["connection"]["autoconnect-priority"]) == -5
        assert [(str(a["address"]), int(a["prefix"])) for a in
                restored["ipv4"]["address-data"]] == [("192.168.1.60", 24)]
        # NetworkManager starting with a saved profile in range: autoconnect brings it up.
        nm.wait_for_device_state(ACTIVATED)
        assert [a["id"] for a in nm.active_connections()
                if a["type"] == "802-11-wireless"] == ["gatewayd-client-HomeNet"]
    finally:
        nm.stop()


def test_the_broker_keeps_its_ports_and_accounts_added_while_it_ran(tmp_path: Path) -> None:
    workdir = tmp_path / "broker"
    broker = Broker(workdir, tls=sim_pki(workdir / "pki"), state_file=workdir / "broker.json")
    broker.add_account("first@example.com", "token-1")
    broker.start()
    try:
        broker.add_account("late@example.com", "token-2")  # as a cloud adds users live
        port, tls_port = broker.port, broker.tls.port if broker.tls else 0
        assert (workdir / "broker.json").stat().st_mode & 0o777 == 0o600
    finally:
        broker.kill()
    again = Broker(workdir, tls=sim_pki(workdir / "pki"), state_file=workdir / "broker.json")
    again.start()
    try:
        assert (again.port, again.tls.port if again.tls else 0) == (port, tls_port)
        assert [a.wsp for a in again.accounts] == ["first@example.com", "late@example.com"]
        late = mqtt_username("late@example.com")
        assert _connect(again.host, again.port, late, "token-2").is_failure is False
        assert _connect(again.host, again.port, late, "token-1").is_failure is True
    finally:
        again.stop()


STUBBORN = """
import os, signal, sys, time
from pathlib import Path
from gatewayd.simulator.procs import Child
# A child that ignores the SIGTERM its parent's death sends: only the next run can reap it.
child = Child("stubborn", [sys.executable, "-c",
                           "import signal, sys, time; signal.signal(signal.SIGTERM, "
                           "signal.SIG_IGN); print('up', flush=True); time.sleep(120)"],
              Path(sys.argv[1]) / "stubborn.log")
print(child.pid, flush=True)
time.sleep(120)
"""


def test_a_child_left_behind_by_a_killed_run_is_reaped_before_its_successor_starts(
        tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))
    parent = subprocess.Popen([sys.executable, "-c", STUBBORN, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True, env=env)
    assert parent.stdout is not None
    orphan = int(parent.stdout.readline())
    wait_for(lambda: (tmp_path / "stubborn.log").read_text().strip() == "up", 10, "the child")
    argv = [sys.executable, "-c", "import time; time.sleep(120)"]
    with pytest.raises(RuntimeError, match="another simulator"):
        Child("stubborn", argv, tmp_path / "stubborn.log")  # its simulator still runs
    assert start_time(orphan) is not None

    try:
        parent.kill()
        parent.wait(10)
        assert start_time(orphan) is not None  # survived its parent's death signal
        successor = Child("stubborn", argv, tmp_path / "stubborn.log")
        try:
            assert start_time(orphan) is None
            record = json.loads((tmp_path / "stubborn.pid").read_text())
            assert record["pid"] == successor.pid and record["parent"] == os.getpid()
        finally:
            successor.stop()
        assert not (tmp_path / "stubborn.pid").exists()
    finally:
        if start_time(orphan) is not None:
            os.kill(orphan, signal.SIGKILL)


def test_damaged_saved_state_is_refused_by_name_and_left_alone(bus: PrivateBus,
                                                                tmp_path: Path) -> None:
    broker_json = tmp_path / "broker" / "broker.json"
    broker_json.parent.mkdir()
    broker_json.write_text('{"port": "1883", "accounts": []}')
    with pytest.raises(RuntimeError, match=r"broker\.json: port: must be a port number"):
        Broker(broker_json.parent, state_file=broker_json)
    assert broker_json.read_text() == '{"port": "1883", "accounts": []}'

    profiles = tmp_path / "nm" / "profiles.json"
    profiles.parent.mkdir()
    profiles.write_text('{"profiles": [')
    with pytest.raises(RuntimeError) as refused:
        NetworkManagerMock(bus, profiles.parent, profiles_file=profiles).start()
    # The mock's reason alone, not the tail of its log.
    assert str(refused.value) == (f"{profiles}: unreadable saved profiles (not JSON at line 1, "
                                  "column 15); delete the file to start without them")
    assert profiles.read_text() == '{"profiles": ['

    # The simulator says which file, without a traceback, and exits 2.
    workdir = tmp_path / "sim"
    (workdir / "broker").mkdir(parents=True)
    (workdir / "broker" / "broker.json").write_text("[]")
    gw = Gatewayd(["--simulate", "--workdir", str(workdir), "--no-platform"])
    assert gw.proc.wait(60) == 2, gw.output()
    assert f"{workdir}/broker/broker.json: must be a JSON object" in gw.output()
    assert "Traceback" not in gw.output()

    workdir = tmp_path / "sim-nm"
    (workdir / "nm").mkdir(parents=True)
    (workdir / "nm" / "profiles.json").write_text('{"profiles": {}}')
    gw = Gatewayd(["--simulate", "--workdir", str(workdir), "--no-platform"])
    assert gw.proc.wait(60) == 2, gw.output()
    assert (f"the simulated world did not start: {workdir}/nm/profiles.json: expected "
            '{"profiles": [...]}; delete the file to start without them\n' in gw.output()), \
        gw.output()
    assert "Traceback" not in gw.output() and "emit /org/freedesktop" not in gw.output()
    assert (workdir / "nm" / "profiles.json").read_text() == '{"profiles": {}}'


@pytest.mark.parametrize(("content", "problem"), [
    ('{"devices": [], "operations": [], "enrolled": []}', "enrolled: must be an object"),
    ('{"devices": ["x"], "operations": [], "enrolled": {}}', "devices[0]: must be an object"),
    ('{"devices": [{"device_id": "d", "mode": "token", "account": "a", "issued": "2"}], '
     '"operations": [], "enrolled": {}}', "devices[0].issued: must be a whole number"),
    ('{"devices": [', "not JSON at line 1, column 14"),
    (None, "unreadable (Is a directory)"),
])
def test_a_damaged_provisioning_registry_is_refused_by_name_and_left_alone(
        tmp_path: Path, content: str | None, problem: str) -> None:
    registry = tmp_path / "sim" / "provisioning" / "registry.json"
    if content is None:
        registry.mkdir(parents=True)  # unreadable even for root
    else:
        registry.parent.mkdir(parents=True)
        registry.write_text(content)
    gw = Gatewayd(["--simulate", "--workdir", str(tmp_path / "sim")])
    assert gw.proc.wait(60) == 2, gw.output()
    assert (f"the simulated world did not start: {registry}: {problem}; delete it to start "
            "afresh\n" in gw.output()), gw.output()
    assert "Traceback" not in gw.output()
    assert registry.is_dir() if content is None else registry.read_text() == content
