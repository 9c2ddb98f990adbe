"""A plugin that ignores its cancellation does not keep gatewayd from exiting.

``asyncio.run()`` waited, at its close, for every task it cancelled: a device whose
``stop()`` or ``on_set()`` swallowed ``CancelledError`` kept a stopped gatewayd running
until systemd's SIGKILL (the unit "failed"), and ``--simulate`` never tore its world down.
The plugin is ``test-stubborn`` from the test-only distribution (tests/plugin_dist), which
ignores every cancellation of the methods its ``ignores`` option lists.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gatewayd.simulator.broker import Broker
from tests.cloud_helpers import Monitor
from tests.helpers import (
    REPO,
    Gatewayd,
    ctl_json,
    ethernet_config,
    reachable_tmp,
    wait_for,
    write_config,
)
from tests.test_config_secrets import owners
from tests.test_e2e_simulator import http_get
from tests.test_simulator import _alive, _children_of
from tests.test_virtual_devices import PLUGIN_DIST

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

# The test plugins, and this checkout's gatewayd rather than the installed one.
ENV = {"PYTHONPATH": os.pathsep.join([str(PLUGIN_DIST), str(REPO)])}


def stubborn(ignores: str) -> str:
    return f'[[virtual]]\ntype = "test-stubborn"\nid = "s1"\nignores = ["{ignores}"]\n'


def test_a_plugin_whose_stop_ignores_cancellation_does_not_keep_gatewayd_running(
        tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "g.toml", ethernet_config(tmp_path, stubborn("stop")))
    gw = Gatewayd(["--config", str(cfg)], env=ENV)
    try:
        wait_for(lambda: "1 of 1 running without faults" in gw.output()
                 or gw.proc.poll() is not None, 30, "the virtual device started")
        assert gw.proc.poll() is None, gw.output()
    finally:
        # Within systemd's stop timeout (20 s), with gatewayd's own exit code: the host
        # gives stop() 5 s, then leaves it running and the process exits without it.
        code = gw.stop(signal.SIGTERM, timeout=20)
    log = gw.output()
    assert code == 0, log
    assert "virtual-s1: stop did not finish within 5 s" in log
    assert ("tasks still running after their cancellation: 1 (virtual-s1 stop); gatewayd "
            "exits without them") in log
    assert "Task was destroyed but it is pending" not in log
    assert "Traceback" not in log


def test_a_plugin_whose_on_set_ignores_cancellation_does_not_keep_the_simulator_up(
        tmp_path: Path) -> None:
    """The simulator's world (mosquitto, dbus-daemon, the mocks) is torn down too."""
    workdir = tmp_path / "sim"
    cfg = write_config(tmp_path / "g.toml", stubborn("on_set"))
    gw = Gatewayd(["--simulate", "--workdir", str(workdir), "--config", str(cfg)], env=ENV)
    started: set[int] = set()
    try:
        sim_json = workdir / "sim.json"
        wait_for(lambda: sim_json.exists() or gw.proc.poll() is not None, 60, "sim.json")
        assert gw.proc.poll() is None, gw.output()
        info = json.loads(sim_json.read_text())
        started = _children_of(gw.proc.pid)
        names = {Path(f"/proc/{p}/comm").read_text().strip() for p in started if _alive(p)}
        assert {"mosquitto", "dbus-daemon"} <= names, names
        account, broker = info["account"], info["mqtt"]
        code, body = http_get(f"{info['portal']}/pair?" + urllib.parse.urlencode({
            "ssid": "HomeNet", "psk": "supersecret", "wsp": account["wsp"],
            "token": account["token"], "host": broker["host"],
            "brport": str(broker["port"])}))
        assert code == 200, body
        wait_for(lambda: ctl_json("--sim", str(workdir), "status")["state"] == "online", 60,
                 "the hub online")
        root = f"{account['username']}/sweet-home/virtual-s1"
        observer = Broker(workdir / "observer", host=broker["host"], port=broker["port"],
                          monitor_password=broker["monitor"]["password"])
        with Monitor(observer, f"{root}/#") as mon:
            mon.wait_for(f"{root}/$state", "ready", timeout=30)
        app = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"app-{time.time_ns()}")
        app.username_pw_set(account["username"], account["token"])
        app.connect(broker["host"], broker["port"])
        app.loop_start()
        try:
            app.publish(f"{root}/thing/level/set", "5", qos=1).wait_for_publish(5)
            wait_for(lambda: "on_set: ignoring every cancellation" in gw.output(), 30,
                     "the plugin's on_set running")
        finally:
            app.disconnect()
            app.loop_stop()
    finally:
        code = gw.stop(signal.SIGTERM, timeout=30)
    log = gw.output()
    assert code == 0, log
    assert "(virtual-s1 on_set); gatewayd exits without them" in log
    assert "simulated world stopped" in log
    wait_for(lambda: not any(_alive(p) for p in started), 10, "the world's processes to exit")


def test_a_plugins_secret_option_is_masked_in_the_log_and_warned_of_in_a_readable_file(
        tmp_path: Path) -> None:
    """Before: the hub masked its own secrets in the log (a cloud token, the admin
    password), but not a plugin's option marked ``spec(secret=True)``: a plugin logging
    its api key put it in the journal; and --check-config's warning of a file others may
    read named the hub's secrets only."""
    key = "sk-live-0123456789abcdef"
    echo = f'[[virtual]]\ntype = "test-echo"\nid = "e1"\napi_key = "{key}"\n'
    with reachable_tmp() as tmp:  # pytest's tmp_path is private: nothing in it is exposed
        readable = write_config(tmp / "g.toml", ethernet_config(tmp_path, echo))
        readable.chmod(0o644)
        owner = owners(readable)
        checked = subprocess.run([sys.executable, "-m", "gatewayd", "--config", str(readable),
                                  "--check-config"], capture_output=True, text=True,
                                 timeout=60, env={**os.environ, **ENV}, cwd=REPO)
    assert checked.returncode == 0, checked.stderr
    warned = [line for line in checked.stderr.splitlines() if "can read these secrets" in line]
    assert warned == [f"gatewayd: warning: {readable}: virtual[0].api_key: every user can "
                      f"read these secrets (-rw-r--r-- {owner}); as root: chown "
                      f"root:gatewayd {readable} && chmod 0640 {readable}"], checked.stderr
    assert key not in checked.stderr
    cfg = write_config(tmp_path / "g.toml", ethernet_config(tmp_path, echo))
    gw = Gatewayd(["--config", str(cfg)], env=ENV)
    try:
        wait_for(lambda: "echo: calling the service" in gw.output()
                 or gw.proc.poll() is not None, 30, "the plugin's start")
    finally:
        gw.stop(signal.SIGTERM, timeout=20)
    log = gw.output()
    assert "echo: calling the service with api key ***" in log, log
    assert key not in log
