"""The platform API in the simulator: gatewayctl, a plugin from the docs, notifications,
children's attributes and re-pairing with another account (issue 16).

`gatewayd --simulate` runs as its own process with the simulated Business Platform; the
test acts as the app (the account's MQTT user), as the support engineer (gatewayctl) and as
an observer (the broker's monitor user).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gatewayd.simulator.broker import Broker
from tests.cloud_helpers import Monitor, retained_snapshot
from tests.helpers import REPO, Gatewayd, ctl, ctl_json, wait_for
from tests.test_e2e_simulator import DEVICE_ID, Sim, http_get

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

DOCS = Path(__file__).resolve().parent.parent / "docs" / "virtual-devices.md"
CONFIG = """
[[virtual]]
type = "door-reader"
id = "front-door"
name = "Front door"
open_seconds = 0.5
"""


def plugin_from_the_docs(site: Path) -> Path:
    """docs/virtual-devices.md's example plugin as an installed distribution on ``site``."""
    found = re.search(r"```python example-plugin\n(.*?)```", DOCS.read_text(), re.S)
    assert found is not None, "docs/virtual-devices.md lost its example plugin"
    (site / "door_reader").mkdir(parents=True)
    (site / "door_reader" / "__init__.py").write_text(found.group(1))
    info = site / "door_reader-1.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: door-reader\nVersion: 1.0.0\n")
    (info / "entry_points.txt").write_text(
        "[gatewayd.virtual_devices]\ndoor-reader = door_reader:DoorReader\n")
    return site


class PlatformSim:
    def __init__(self, tmp: Path) -> None:
        self.workdir = tmp / "sim"
        site = plugin_from_the_docs(tmp / "site")
        config = tmp / "gatewayd.toml"
        config.write_text(CONFIG)
        self.proc = Gatewayd(["--simulate", "--workdir", str(self.workdir), "--config",
                              str(config)],
                             # The plugin, and this checkout's gatewayd rather than the
                             # installed one (another worktree's).
                             env={"PYTHONPATH": os.pathsep.join([str(site), str(REPO)])})
        sim_json = self.workdir / "sim.json"
        wait_for(lambda: sim_json.exists() or self.proc.proc.poll() is not None, 60, "sim.json")
        assert self.proc.proc.poll() is None, self.proc.output()
        self.info: dict[str, Any] = json.loads(sim_json.read_text())
        mqtt_info = self.info["mqtt"]
        self.broker = Broker(self.workdir / "observer", host=mqtt_info["host"],
                             port=mqtt_info["port"],
                             monitor_password=mqtt_info["monitor"]["password"])

    def ctl(self, *args: str, check: bool = True) -> Any:
        return ctl("--sim", str(self.workdir), *args, check=check)

    def pair(self, account: dict[str, str]) -> None:
        mqtt_info = self.info["mqtt"]
        query = urllib.parse.urlencode({
            "ssid": "HomeNet", "psk": "supersecret", "wsp": account["wsp"],
            "token": account["token"], "host": mqtt_info["host"],
            "brport": str(mqtt_info["port"])})
        code, body = http_get(f"{self.info['portal']}/pair?{query}")
        assert code == 200, body
        wait_for(lambda: self.status()["state"] == "online", 60, "the hub online")

    def status(self) -> dict[str, Any]:
        return ctl_json("--sim", str(self.workdir), "status")  # type: ignore[no-any-return]

    def app(self, account: dict[str, str]) -> mqtt.Client:
        """The account's MQTT user, as the 2Smart app connects."""
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"app-{time.time_ns()}")
        client.username_pw_set(account["username"], account["token"])
        client.connect(self.info["mqtt"]["host"], self.info["mqtt"]["port"])
        client.loop_start()
        return client


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[PlatformSim]:
    s = PlatformSim(tmp_path)
    yield s
    assert s.proc.stop(signal.SIGINT, timeout=30) == 0, s.proc.output()


def test_platform_request_plugin_notifications_children_and_re_pairing(
        sim: PlatformSim) -> None:
    account, other = sim.info["accounts"]
    root, other_root = account["username"], other["username"]
    with Monitor(sim.broker, "#") as mon:
        sim.pair(account)

        # --- gatewayctl platform request, against the simulated platform ---------------
        answer = sim.ctl("platform", "request", "echo", "--data", '{"a":1}')
        assert answer.stdout == '{"a": 1}\n'
        # null is data too: the answer carries it sealed, as any other value.
        assert sim.ctl("platform", "request", "echo").stdout == "null\n"
        refused = sim.ctl("platform", "request", "no/such-thing", check=False)
        assert refused.returncode == 1 and "code 404" in refused.stderr
        bad = sim.ctl("platform", "request", "echo", "--data", "{nope", check=False)
        assert bad.returncode == 1 and "--data is not JSON" in bad.stderr
        log = ctl_json("--sim", str(sim.workdir), "platform", "log")
        echo = [e for e in log if e["endpoint"] == "echo"]
        assert echo[0]["request"] == {"a": 1} and echo[0]["status"] == 1
        assert echo[0]["device_id"] == DEVICE_ID

        # --- the RFID example plugin from the docs asks the platform ---------------------
        door = f"{root}/sweet-home/virtual-front-door"
        mon.wait_for(f"{door}/$state", "ready", timeout=30)
        app = sim.app(account)
        try:
            mark = mon.mark()
            app.publish(f"{door}/reader/scan/set", "04a1b2c3", qos=1).wait_for_publish(5)
            mon.wait_for(f"{door}/reader/result", "authorised", mark=mark, timeout=10)
            mon.wait_for(f"{door}/relay/open", "true", mark=mark, timeout=10)
            mon.wait_for(f"{door}/relay/open", "false", mark=mark, timeout=10)  # closes again
            mark = mon.mark()
            app.publish(f"{door}/reader/scan/set", "BADC0DE", qos=1).wait_for_publish(5)
            mon.wait_for(f"{door}/reader/result", "refused", mark=mark, timeout=10)
            assert mon.values(f"{door}/relay/open", mark) == []
        finally:
            app.disconnect()
            app.loop_stop()

        # --- a Zigbee join: exactly one "joined" notification; the child is complete -----
        notes = f"{root}/notifications/create"
        mark = mon.mark()
        wait_for(lambda: ctl_json("--sim", str(sim.workdir), "status")["zigbee"]["up"], 30,
                 "the Zigbee radio (bellows on the NCP emulator)")
        sim.ctl("permit-join", "60")
        joined = ctl_json("--sim", str(sim.workdir), "zigbee", "sim", "join", "kind=plug")
        ieee = joined["result"]
        child = f"{root}/sweet-home/zigbee-{ieee.replace(':', '')}"
        mon.wait_for(f"{child}/$state", "ready", mark=mark, timeout=30)
        assert mon.latest()[f"{child}/$mac"] == ieee
        assert mon.latest()[f"{child}/$localip"] == mon.latest()[
            f"{root}/sweet-home/{DEVICE_ID}/$localip"]
        assert mon.latest()[f"{child}/$fw/version"] == "1.0.0-sim"
        assert mon.latest()[f"{child}/$fw/name"] == "Virtual Plug"
        assert mon.latest()[f"{child}/$implementation"] == "gatewayd zigbee"
        about_child = [m.json() for m in mon.since(mark, notes)
                       if m.json()["senderId"] == f"zigbee-{ieee.replace(':', '')}"]
        assert len(about_child) == 1 and "joined" in about_child[0]["message"]
        assert about_child[0]["logLevel"] == "info" and about_child[0]["type"] == "text"

        # --- reset and re-pair with another account: nothing stays under the old root ----
        assert retained_snapshot(sim.broker, f"{root}/#") != {}
        said = sim.ctl("reset").stdout
        assert said.endswith("It is back in pairing mode. Its 1 Zigbee device stays paired "
                             "(gatewayctl reset --full forgets the Zigbee network).\n"), said
        wait_for(lambda: sim.status()["state"] == "unpaired", 30, "the hub unpaired")
        assert retained_snapshot(sim.broker, f"{root}/#") == {}
        released = [e for e in ctl_json("--sim", str(sim.workdir), "platform", "log")
                    if e["endpoint"] == "device/ownership"]
        assert released[-1]["request"]["event"] == "released"
        assert f"zigbee-{ieee.replace(':', '')}" in released[-1]["request"]["children"]
        sim.pair(other)
        mon.wait_for(f"{other_root}/sweet-home/{DEVICE_ID}/$state", "ready", timeout=30)
        mon.wait_for(f"{child.replace(root, other_root)}/$state", "ready", timeout=30)
        assert retained_snapshot(sim.broker, f"{root}/#") == {}


def test_a_request_platform_json_cannot_answer_is_refused_saying_why_and_logged(
        tmp_path: Path) -> None:
    sim = Sim(tmp_path / "sim")
    workdir = str(sim.workdir)
    try:
        account, broker = sim.info["account"], sim.info["mqtt"]
        assert http_get(sim.pair_url(
            ssid="HomeNet", psk="supersecret", wsp=account["wsp"], token=account["token"],
            host=broker["host"], brport=str(broker["port"])))[0] == 200
        wait_for(lambda: sim.status()["state"] == "online", 60, "the hub online")
        responses = Path(sim.info["platform"]["responses"])
        settings = json.loads(responses.read_text())
        settings["responses"]["my/ep"] = {"status": "yes"}
        responses.write_text(json.dumps(settings))
        problems = {"my/ep": f"{responses}: responses: my/ep: status: must be 0 or 1, got 'yes'"}
        refused = ctl("--sim", workdir, "platform", "request", "my/ep", "--timeout", "30",
                      check=False)
        assert (refused.returncode, refused.stderr) == (
            1, f"gatewayctl: my/ep: the platform refused the request (code 500): "
               f"{problems['my/ep']}\n")
        responses.write_text("{")
        problems["other"] = f"{responses}: not JSON (line 1, column 2)"
        refused = ctl("--sim", workdir, "platform", "request", "other", "--timeout", "30",
                      check=False)
        assert refused.returncode == 1 and problems["other"] in refused.stderr, refused.stderr
        # A canned answer may replace echo: it needs the file too.
        refused = ctl("--sim", workdir, "platform", "request", "echo", "--data", "1",
                      "--timeout", "30", check=False)
        problems["echo"] = problems["other"]
        assert refused.returncode == 1 and problems["echo"] in refused.stderr, refused.stderr

        log = {e["endpoint"]: e for e in ctl_json("--sim", workdir, "platform", "log")}
        for endpoint, problem in problems.items():
            assert (log[endpoint]["error"], log[endpoint]["status"], log[endpoint]["code"],
                    log[endpoint]["response"]) == (problem, 0, 500, {"message": problem})
        assert "Traceback" not in sim.proc.output()
    finally:
        assert sim.proc.stop(signal.SIGINT, timeout=30) == 0, sim.proc.output()
