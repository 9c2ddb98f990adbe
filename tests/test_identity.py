"""The hub's identity at start: taken from a network interface's MAC, stored at the first
start and kept; never made up when no interface has a MAC yet (a Wi-Fi driver still loading
at boot): a made-up one would be stored for good and shared by every hub it happened to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gatewayd import cli, daemon, hub, identity
from gatewayd.config import load_config
from gatewayd.identity import NoMacAddress, hub_mac, wait_for_mac
from gatewayd.runtime.logsetup import Redactor
from gatewayd.state import StateStore
from tests.helpers import write_config

MAC = "dc:a6:32:aa:bb:cc"


def hub_toml(tmp: Path, hub: str = "") -> Path:
    return write_config(tmp / "g.toml", f"""
[hub]
state_dir = "{tmp / 'state'}"
runtime_dir = "{tmp / 'run'}"
interface = "wlan0"
{hub}
[hotspot]
enabled = false
[ble]
enabled = false
""")


def add_interface(sys_net: Path, name: str, mac: str) -> None:
    (sys_net / name).mkdir(parents=True)
    (sys_net / name / "address").write_text(mac + "\n")


@pytest.fixture
def sys_net(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """/sys/class/net as at boot before the Wi-Fi driver has loaded: only ``lo``."""
    path = tmp_path / "sys-net"
    add_interface(path, "lo", "00:00:00:00:00:00")
    monkeypatch.setattr(identity, "SYS_NET", path)
    return path


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The daemon's run, recorded instead of run: the identity is settled before it."""
    runs: list[str] = []

    async def run(self: daemon.Daemon) -> int:
        runs.append(self.identity.device_id)
        return 0
    monkeypatch.setattr(daemon.Daemon, "run", run)
    return runs


@pytest.mark.parametrize("preset", ["", 'device_id = "acme-0001"'])
def test_a_first_start_without_any_mac_fails_with_status_1_and_stores_no_identity(
        tmp_path: Path, sys_net: Path, started: list[str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], preset: str) -> None:
    """Exit status 1 (systemd's Restart= tries again), a message naming the interfaces
    tried, and no state.json: not one with a placeholder identity kept for good. A preset
    [hub] device_id does not spare the MAC: the SSID and BLE name ({mac4}) come from it."""
    monkeypatch.setattr(hub, "MAC_WAIT", 0.0)  # the wait itself: below, on a fake clock
    config = load_config(hub_toml(tmp_path, preset))
    assert cli.run_daemon(config, Redactor()) == 1
    err = capsys.readouterr().err
    assert err.startswith("gatewayd: cannot start: [hub] interface wlan0 does not exist "
                          "after 0 s (this machine has: none but lo)")
    assert "does not start without it" in err
    assert started == []
    assert not (tmp_path / "state" / "state.json").exists()


def test_a_hub_with_a_stored_identity_starts_with_it_once_its_mac_shows_without_waiting(
        tmp_path: Path, sys_net: Path, started: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    StateStore(tmp_path / "state").open(device_id="dc-a6-32-aa-bb-cc", mac=MAC)
    add_interface(sys_net, "wlan0", MAC)

    def no_sleep(seconds: float) -> None:
        raise AssertionError("waited for a MAC although the stored one shows")
    real = identity.wait_for_mac
    monkeypatch.setattr(hub, "wait_for_mac",
                        lambda *args, **kwargs: real(*args, **kwargs, sleep=no_sleep))
    assert cli.run_daemon(load_config(hub_toml(tmp_path)), Redactor()) == 0
    assert started == ["dc-a6-32-aa-bb-cc"]


def test_a_hub_with_a_stored_identity_and_no_mac_at_all_keeps_it_after_the_wait(
        tmp_path: Path, sys_net: Path, started: list[str], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Nothing says the hardware changed: the stored identity stays, and the log says so."""
    monkeypatch.setattr(hub, "MAC_WAIT", 0.0)
    StateStore(tmp_path / "state").open(device_id="dc-a6-32-aa-bb-cc", mac=MAC)
    assert cli.run_daemon(load_config(hub_toml(tmp_path)), Redactor()) == 0
    assert started == ["dc-a6-32-aa-bb-cc"]
    assert ("[hub] interface wlan0 shows no MAC address after 0 s; keeping the stored "
            f"identity (made for MAC {MAC})") in caplog.text


def test_a_first_start_takes_the_mac_once_the_interface_shows_it(
        tmp_path: Path, sys_net: Path, started: list[str]) -> None:
    add_interface(sys_net, "wlan0", MAC)
    assert cli.run_daemon(load_config(hub_toml(tmp_path)), Redactor()) == 0
    assert started == ["dc-a6-32-aa-bb-cc"]
    stored = json.loads((tmp_path / "state" / "state.json").read_text())["identity"]
    assert stored == {"device_id": "dc-a6-32-aa-bb-cc", "mac": MAC}


class Clock:
    """Time that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []
        self.on_sleep = lambda: None

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        self.on_sleep()


def test_the_wait_polls_until_the_interface_appears(sys_net: Path) -> None:
    clock = Clock()
    clock.on_sleep = lambda: len(clock.slept) == 3 and add_interface(sys_net, "wlan0", MAC)
    assert hub_mac("wlan0") is None
    assert wait_for_mac("wlan0", 30.0, clock=clock, sleep=clock.sleep) == MAC
    assert clock.slept == [0.5, 0.5, 0.5]


def test_the_wait_gives_up_at_its_deadline_naming_every_interface_tried(sys_net: Path) -> None:
    add_interface(sys_net, "eth0", "00:00:00:00:00:00")  # an address that names nothing
    clock = Clock()
    with pytest.raises(NoMacAddress) as failed:
        wait_for_mac("", 3.0, clock=clock, sleep=clock.sleep)
    assert clock.slept == [0.5] * 6 and clock.now == 103.0
    assert "after 3 s (tried: " in str(failed.value)
    assert str(failed.value).count("eth0") == 1 and "lo," not in str(failed.value)
