"""`gatewayd --simulate --mac`: two simulated hubs are two hubs, not one identity twice.

0.1.4 gave every simulated hub dc:a6:32:12:34:56, so two of them paired to one account took
turns on the broker ("Client dc-a6-32-12-34-56 already connected, closing old connection")
and showed the same hotspot SSID and BLE name.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest

from gatewayd.simulator.run import HARDWARE_FILE, hub_mac
from tests.helpers import BIN
from tests.test_e2e_simulator import DEVICE_ID, Sim, http_get, monitor_for


def gatewayd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "gatewayd"), *args], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize(("mac", "says"), [
    ("zz:a6:32:00:00:02", "is not a MAC address: give six hex pairs, e.g. dc:a6:32:00:00:02"),
    ("dc:a6:32:00:02", "is not a MAC address"),
    ("01:00:5e:00:00:01", "is not a network card's address (all zero, or a multicast one"),
    ("00:00:00:00:00:00", "is not a network card's address"),
])
def test_a_bad_mac_is_a_usage_error_naming_it(tmp_path: Path, mac: str, says: str) -> None:
    result = gatewayd("--simulate", "--workdir", str(tmp_path / "sim"), "--mac", mac)
    assert result.returncode == 2, result.stderr
    assert f"argument --mac: '{mac}' {says}" in result.stderr and "usage:" in result.stderr
    assert not (tmp_path / "sim").exists()  # refused before anything started


def test_mac_without_simulate_is_a_usage_error() -> None:
    result = gatewayd("--mac", "dc:a6:32:00:00:02")
    assert result.returncode == 2
    assert "--mac only work with --simulate" in result.stderr


def test_the_workdir_keeps_the_mac_it_was_given(tmp_path: Path) -> None:
    assert hub_mac(tmp_path, None) == "dc:a6:32:12:34:56"  # the default, kept nowhere
    assert not (tmp_path / HARDWARE_FILE).exists()
    assert hub_mac(tmp_path, "dc:a6:32:00:00:02") == "dc:a6:32:00:00:02"
    assert hub_mac(tmp_path, None) == "dc:a6:32:00:00:02"  # the next start, without --mac
    (tmp_path / HARDWARE_FILE).write_text('{"mac": "nonsense"}')
    damaged = re.escape(f"{tmp_path / HARDWARE_FILE}: mac: 'nonsense' is not a MAC address")
    with pytest.raises(RuntimeError, match=damaged + ".*give --mac, or delete the file"):
        hub_mac(tmp_path, None)
    (tmp_path / HARDWARE_FILE).write_text("{")
    with pytest.raises(RuntimeError, match=r"hardware\.json: not JSON"):
        hub_mac(tmp_path, None)
    assert hub_mac(tmp_path, "dc:a6:32:00:00:03") == "dc:a6:32:00:00:03"  # replaces it
    assert json.loads((tmp_path / HARDWARE_FILE).read_text()) == {"mac": "dc:a6:32:00:00:03"}
    (tmp_path / "odd" / HARDWARE_FILE).mkdir(parents=True)
    with pytest.raises(RuntimeError, match=r"hardware\.json: Is a directory$"):
        hub_mac(tmp_path / "odd", None)


def test_two_simulated_hubs_on_one_account_both_stay_online(tmp_path: Path) -> None:
    one = Sim(tmp_path / "one")
    two: Sim | None = None
    try:
        two = Sim(tmp_path / "two", "--mac", "dc:a6:32:00:00:02")
        assert two.info["network"]["wifi_mac"] == "dc:a6:32:00:00:02"
        assert two.status()["device_id"] == "dc-a6-32-00-00-02"
        account, mqtt = one.info["account"], one.info["mqtt"]
        with monitor_for(one) as monitor:
            for sim in (one, two):  # both on the first world's broker, one account
                assert http_get(sim.pair_url(
                    ssid="HomeNet", psk="supersecret", wsp=account["wsp"],
                    token=account["token"], host=mqtt["host"],
                    brport=str(mqtt["port"]))) == (200, "OK")
            base = f"{account['username']}/sweet-home"
            for device in (DEVICE_ID, "dc-a6-32-00-00-02"):
                monitor.wait_for(f"{base}/{device}/$state", "ready", timeout=30)
            # Both are there at once: each answers a command of its own.
            mark = monitor.mark()
            for device, seconds in ((DEVICE_ID, "7"), ("dc-a6-32-00-00-02", "9")):
                monitor.publish(f"{base}/{device}/zigbee/permitjoin/set", seconds)
            for device, seconds in ((DEVICE_ID, "7"), ("dc-a6-32-00-00-02", "9")):
                monitor.wait_for(f"{base}/{device}/zigbee/permitjoin", seconds, mark=mark,
                                 timeout=15)
            states = [m.text for m in monitor.since() if m.topic.endswith("/$state")
                      and m.topic.startswith(base)]
            assert "lost" not in states, states
        log = (tmp_path / "one" / "broker" / "mosquitto.log")
        assert "already connected" not in (log.read_text() if log.exists() else ""), \
            log.read_text()
    finally:
        for sim in (two, one):
            if sim is not None:
                assert sim.proc.stop(signal.SIGINT, timeout=30) == 0, sim.proc.output()

