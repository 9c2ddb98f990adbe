"""The hub's identity at start: taken from a network interface's MAC, stored at the first
start and kept; never made up when no interface has a MAC yet (a Wi-Fi driver still loading
at boot): a made-up one would be stored for good and shared by every hub it happened to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gatewayd import cli, daemon, hub, identity
from gatewayd.config import load_config
from gatewayd.identity import (
    Identity,
    NoMacAddress,
    cpu_serial,
    hub_mac,
    label_code,
    wait_for_mac,
)
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
    """/sys/class/net as at boot before the Wi-Fi driver has loaded: only ``lo``, and no
    default route (this machine's own would name an interface of its own)."""
    path = tmp_path / "sys-net"
    add_interface(path, "lo", "00:00:00:00:00:00")
    monkeypatch.setattr(identity, "SYS_NET", path)
    monkeypatch.setattr(identity, "_default_route_interface", lambda: None)
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


ETH = "02:fc:00:00:00:01"


def test_without_an_interface_set_the_hub_takes_the_first_mac_at_once(sys_net: Path) -> None:
    """Nothing recorded (a first start) and no [hub] interface: no reason to wait."""
    add_interface(sys_net, "eth0", ETH)
    add_interface(sys_net, "wlan0", MAC)
    clock = Clock()
    assert wait_for_mac("", 30.0, clock=clock, sleep=clock.sleep) == ETH  # first by name
    assert clock.slept == []


def test_a_configured_interface_names_the_hub_at_once_even_on_other_hardware(
        sys_net: Path) -> None:
    """[hub] interface shows a MAC other than the recorded one: that card is the hub's."""
    add_interface(sys_net, "wlan0", MAC)
    clock = Clock()
    assert wait_for_mac("wlan0", 30.0, recorded=ETH, clock=clock, sleep=clock.sleep) == MAC
    assert clock.slept == []


def test_the_default_routes_interface_names_the_hub_before_the_first_by_name(
        sys_net: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    add_interface(sys_net, "eth0", ETH)  # not connected
    add_interface(sys_net, "wlan0", MAC)
    monkeypatch.setattr(identity, "_default_route_interface", lambda: "wlan0")
    clock = Clock()
    assert wait_for_mac("", 0.0, clock=clock, sleep=clock.sleep) == MAC


def test_the_default_route_is_the_kernels_route_to_0_0_0_0(tmp_path: Path) -> None:
    route = tmp_path / "route"
    header = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    lan = "eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n"
    default = "wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n"
    route.write_text(header + lan + default)  # a LAN route (gateway 0) before the default
    assert identity._default_route_interface(route) == "wlan0"
    route.write_text(header + default)
    assert identity._default_route_interface(route) == "wlan0"
    route.write_text(header + lan)
    assert identity._default_route_interface(route) is None
    assert identity._default_route_interface(tmp_path / "none") is None


def test_the_wait_gives_up_naming_the_interfaces_word_for_word(sys_net: Path) -> None:
    add_interface(sys_net, "eth0", ETH)
    add_interface(sys_net, "wlan0", "00:00:00:00:00:00")  # there, without a MAC yet
    clock = Clock()
    with pytest.raises(NoMacAddress) as failed:
        wait_for_mac("wlan0", 2.0, clock=clock, sleep=clock.sleep)
    assert str(failed.value) == (
        "[hub] interface wlan0 has no MAC address after 2 s (this machine has: eth0, wlan0); "
        "the hub's device id is made from its MAC, never from another card's, so it does "
        "not start without it (correct [hub] interface, or leave it empty to use the "
        "default route's interface)")
    (sys_net / "eth0" / "address").write_text("00:00:00:00:00:00\n")
    clock = Clock()
    with pytest.raises(NoMacAddress) as failed:
        wait_for_mac("", 2.0, clock=clock, sleep=clock.sleep)
    assert str(failed.value) == (
        "no network interface has a MAC address after 2 s (tried: eth0, wlan0); the hub's "
        "device id is made from it, so it does not start without one (set [hub] interface "
        "to the right one if need be)")
    for name in ("eth0", "wlan0"):
        (sys_net / name / "address").unlink()
        (sys_net / name).rmdir()
    clock = Clock()
    with pytest.raises(NoMacAddress) as failed:
        wait_for_mac("", 2.0, clock=clock, sleep=clock.sleep)
    assert f"(tried: none: {sys_net} lists no interface but lo)" in str(failed.value)


# ---- the names a hub shows: the product is shortened, never the per-hub part -----------

HUB = Identity("dc-a6-32-aa-34-56", "dc:a6:32:aa:34:56", "Acme Hub")


def test_a_name_fills_every_field_of_its_template() -> None:
    whole = "Acme Hub/3456/AA3456/dc-a6-32-aa-34-56"
    assert HUB.render("{product}/{mac4}/{mac6}/{device_id}") == whole
    assert HUB.render("{product}/{mac4}/{mac6}/{device_id}", len(whole)) == whole


@pytest.mark.parametrize(("limit", "name"), [
    (13, "Acme Hub 3456"),  # exactly the limit: whole
    (12, "Acme Hu 3456"),  # a byte over: the product's last letter goes, no more
    (11, "Acme H 3456"),
    (10, "Acme 3456"),  # a cut before a space drops the space as well
    (4, "3456"),  # the product gone, and the space that went with it
])
def test_a_name_over_its_limit_loses_letters_of_the_product_never_its_suffix(
        limit: int, name: str) -> None:
    assert HUB.render("{product} {mac4}", limit) == name


def test_a_name_whose_own_part_alone_is_too_long_is_cut_at_a_character() -> None:
    assert HUB.render("{product} {device_id}", 10) == "dc-a6-32-a"
    # 14 bytes of Cyrillic: cut at 7, inside a letter, the half letter goes.
    assert HUB.render("Умный {mac4}", 7) == "Умн"


def test_cpu_serial_reads_the_serial_line_past_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_bytes(b"processor\t: 0\nmodel name\t: ARMv7 \xff\nSerial\t\t: "
                        b"10000000ABCDEF01\n")
    assert cpu_serial(cpuinfo) == "10000000abcdef01"


def test_the_log_says_a_preset_replaced_the_stored_setup_code_only_when_it_did(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    file = tmp_path / "state.json"
    assert label_code("11112222", "33334444", file) == "11112222"
    assert caplog.messages == [
        f"{file}: the stored setup code is replaced by the [hub] setup_code preset"]
    caplog.clear()
    for preset, stored, kept in (("11112222", "11112222", "11112222"),
                                 ("", "33334444", "33334444"), ("11112222", "", "11112222"),
                                 ("", "", "")):
        assert label_code(preset, stored, file) == kept
    assert caplog.messages == []
