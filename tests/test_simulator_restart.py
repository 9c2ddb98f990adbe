"""The simulator for crash tests: a restart of the same workdir after `kill -9`.

The broker keeps its ports, accounts and CA, orphans of the killed run do not block the next
one, and the TLS listener pairs end to end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gatewayd.credentials import mqtt_username
from gatewayd.simulator.broker import Broker, sim_pki
from gatewayd.simulator.procs import Child, start_time
from tests.helpers import Gatewayd, wait_for
from tests.test_e2e_simulator import Sim, http_get
from tests.test_simulator import _connect


def pair_params(sim: Sim, **extra: str) -> dict[str, str]:
    account, mqtt = sim.info["account"], sim.info["mqtt"]
    home = next(w for w in sim.info["wifi"] if w["ssid"] == "HomeNet")
    return {"ssid": home["ssid"], "psk": home["psk"], "wsp": account["wsp"],
            "token": account["token"], "host": mqtt["host"], "brport": str(mqtt["port"]),
            **extra}


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


# --- the pieces, each on its own --------------------------------------------------------------

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


def test_damaged_saved_state_is_refused_by_name_and_left_alone(tmp_path: Path) -> None:
    broker_json = tmp_path / "broker" / "broker.json"
    broker_json.parent.mkdir()
    broker_json.write_text('{"port": "1883", "accounts": []}')
    with pytest.raises(RuntimeError, match=r"broker\.json: port: must be a port number"):
        Broker(broker_json.parent, state_file=broker_json)
    assert broker_json.read_text() == '{"port": "1883", "accounts": []}'

    # The simulator says which file, without a traceback, and exits 2.
    workdir = tmp_path / "sim"
    (workdir / "broker").mkdir(parents=True)
    (workdir / "broker" / "broker.json").write_text("[]")
    gw = Gatewayd(["--simulate", "--workdir", str(workdir), "--no-platform"])
    assert gw.proc.wait(60) == 2, gw.output()
    assert f"{workdir}/broker/broker.json: must be a JSON object" in gw.output()
    assert "Traceback" not in gw.output()
