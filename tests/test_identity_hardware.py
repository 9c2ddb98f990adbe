"""Which hardware the hub's identity was made for, the setup-code preset and [hub] interface.

A golden image booted once and then cloned gave every hub the same device id, MQTT client
id, setup code, device key and SSID/BLE name ({mac4}), a factory reset included; a preset
[hub] setup_code was ignored once state.json existed, even after a reset; and a configured
[hub] interface not up yet named the hub after another card's MAC, for good. Each start
here runs the daemon's own start (cli.run_daemon) on a faked /sys/class/net and records
what a user sees: the hub status (with the cloud link's MQTT client id), the label, the
SSID, and state.json.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
from pathlib import Path
from typing import Any

import pytest

from gatewayd import cli, daemon, hub, identity
from gatewayd.config import load_config
from gatewayd.credentials import CloudCredentials
from gatewayd.identity import wait_for_mac
from gatewayd.runtime.logsetup import Redactor
from gatewayd.state import StateStore
from tests.helpers import ctl, write_config
from tests.test_identity import Clock, add_interface

BOARD_A = "dc:a6:32:aa:bb:cc"
BOARD_B = "dc:a6:32:11:22:33"
ETH = "02:fc:00:00:00:01"
CLOUD = CloudCredentials(wsp="user@example.com", token="t0k-secret", host="127.0.0.1",
                         port=1883)


def hub_toml(tmp: Path, hub_keys: str = "") -> Path:
    return write_config(tmp / "g.toml", f"""
[hub]
state_dir = "{tmp / 'state'}"
runtime_dir = "{tmp / 'run'}"
{hub_keys}
[hotspot]
enabled = false
ssid_template = "Hub {{mac4}}"
[ble]
enabled = false
""")


@pytest.fixture
def sys_net(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "sys-net"
    add_interface(path, "lo", "00:00:00:00:00:00")
    monkeypatch.setattr(identity, "SYS_NET", path)
    monkeypatch.setattr(hub, "MAC_WAIT", 0.0)  # the wait itself: on a fake clock, below
    return path


def board(sys_net: Path, mac: str, name: str = "wlan0") -> None:
    """The hardware the SD card is in now: ``name`` shows ``mac``."""
    add_interface(sys_net, name, mac) if not (sys_net / name).exists() else \
        (sys_net / name / "address").write_text(mac + "\n")


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Each start's status, label and SSID: the daemon's components are built, not run."""
    starts: list[dict[str, Any]] = []

    async def run(self: daemon.Daemon) -> int:
        built = self._build(asyncio.get_running_loop())
        starts.append({**built.status(), "label": built.setup_code(), "hub": built,
                       "ssid": self.identity.render(self.config.hotspot.ssid_template)})
        assert self.store._claim is not None
        os.close(self.store._claim)  # the state directory's lock goes with the process
        return 0
    monkeypatch.setattr(daemon.Daemon, "run", run)
    return starts


def start(tmp_path: Path, hub_keys: str = "") -> None:
    assert cli.run_daemon(load_config(hub_toml(tmp_path, hub_keys)), Redactor()) == 0


def stored(tmp_path: Path) -> dict[str, Any]:
    return json.loads((tmp_path / "state" / "state.json").read_text())  # type: ignore[no-any-return]


def ids(status: dict[str, Any]) -> tuple[str, str, str, str]:
    return (status["device_id"], status["mac"], status["cloud_link"]["client_id"],
            status["ssid"])


@pytest.mark.parametrize("interface", ["", 'interface = "wlan0"'])
def test_an_unpaired_hub_cloned_after_its_first_boot_gets_its_own_identity(
        tmp_path: Path, sys_net: Path, seen: list[dict[str, Any]],
        caplog: pytest.LogCaptureFixture, interface: str) -> None:
    board(sys_net, BOARD_A)
    start(tmp_path, interface)  # the golden image's first boot
    golden = stored(tmp_path)
    board(sys_net, BOARD_B)  # the same card in another board: a clone
    start(tmp_path, interface)
    start(tmp_path, interface)  # and again: the new identity is kept
    first, clone, again = seen
    assert ids(first) == ("dc-a6-32-aa-bb-cc", BOARD_A, "dc-a6-32-aa-bb-cc", "Hub BBCC")
    assert ids(clone) == ("dc-a6-32-11-22-33", BOARD_B, "dc-a6-32-11-22-33", "Hub 2233")
    assert ids(again) == ids(clone) and again["label"] == clone["label"]
    assert clone["label"]["setup_code"] != first["label"]["setup_code"]
    assert clone["label"]["payload"] == f"GWD1:dc-a6-32-11-22-33:{clone['label']['setup_code']}"
    assert clone["hardware_changed"] is None and clone["paired"] is False
    now = stored(tmp_path)
    assert now["identity"] == {"device_id": "dc-a6-32-11-22-33", "mac": BOARD_B}
    assert now["device_key"] != golden["device_key"]
    assert now["setup_code"] == clone["label"]["setup_code"]
    warnings = [r.getMessage() for r in caplog.records if "other hardware" in r.getMessage()]
    assert len(warnings) == 1, warnings  # once, at the start that made the new identity
    assert f"(MAC {BOARD_A}; this hub's is {BOARD_B})" in warnings[0]


def paired_on_board_a_moved_to_b(tmp_path: Path, sys_net: Path) -> None:
    """A hub started and paired on board A whose SD card is now in board B."""
    board(sys_net, BOARD_A)
    start(tmp_path)
    store = StateStore(tmp_path / "state")
    store.open()
    store.commit_pairing(None, CLOUD)
    board(sys_net, BOARD_B)


def test_a_paired_hub_on_other_hardware_keeps_working_warns_and_a_reset_gives_it_its_own(
        tmp_path: Path, sys_net: Path, seen: list[dict[str, Any]],
        caplog: pytest.LogCaptureFixture) -> None:
    paired_on_board_a_moved_to_b(tmp_path, sys_net)
    start(tmp_path)
    moved = seen[-1]
    assert ids(moved) == ("dc-a6-32-aa-bb-cc", BOARD_A, "dc-a6-32-aa-bb-cc", "Hub BBCC")
    assert moved["paired"] is True
    changed = moved["hardware_changed"]
    assert (changed["identity_mac"], changed["mac"]) == (BOARD_A, BOARD_B)
    assert "gatewayctl reset, then systemctl restart gatewayd" in changed["advice"]
    assert f"identity was made for MAC {BOARD_A}, this hub's is {BOARD_B}" in caplog.text
    assert stored(tmp_path)["identity"]["mac"] == BOARD_A

    ctl("--config", str(hub_toml(tmp_path)), "--socket", str(tmp_path / "none.sock"),
        "reset")  # gatewayd stopped
    start(tmp_path)
    own = seen[-1]
    assert ids(own) == ("dc-a6-32-11-22-33", BOARD_B, "dc-a6-32-11-22-33", "Hub 2233")
    assert own["hardware_changed"] is None and own["paired"] is False
    assert own["label"]["setup_code"] != moved["label"]["setup_code"]


def test_a_device_id_preset_wins_on_other_hardware_and_the_rest_is_made_anew(
        tmp_path: Path, sys_net: Path, seen: list[dict[str, Any]]) -> None:
    preset = 'device_id = "acme-0001"'
    board(sys_net, BOARD_A)
    start(tmp_path, preset)
    board(sys_net, BOARD_B)
    start(tmp_path, preset)
    first, clone = seen
    assert ids(clone) == ("acme-0001", BOARD_B, "acme-0001", "Hub 2233")
    assert clone["label"]["setup_code"] != first["label"]["setup_code"]


def test_a_state_without_the_mac_it_was_made_for_is_adopted_as_it_is(
        tmp_path: Path, sys_net: Path, seen: list[dict[str, Any]]) -> None:
    """An older state.json (or one whose MAC did not survive a reset): nothing tells which
    hardware it was made for, so this hub's is recorded and the identity kept."""
    store = StateStore(tmp_path / "state")
    store.open()
    data = {**stored(tmp_path), "identity": {"device_id": "dc-a6-32-aa-bb-cc", "mac": ""}}
    store.path.write_text(json.dumps(data))
    board(sys_net, BOARD_B)
    start(tmp_path)
    assert ids(seen[0])[:3] == ("dc-a6-32-aa-bb-cc", BOARD_B, "dc-a6-32-aa-bb-cc")
    assert seen[0]["label"]["setup_code"] == data["setup_code"]
    assert stored(tmp_path)["identity"] == {"device_id": "dc-a6-32-aa-bb-cc", "mac": BOARD_B}


def test_a_clone_with_a_setup_code_preset_keeps_the_preset(
        tmp_path: Path, sys_net: Path, seen: list[dict[str, Any]]) -> None:
    preset = 'setup_code = "11112222"'
    board(sys_net, BOARD_A)
    start(tmp_path, preset)
    board(sys_net, BOARD_B)
    start(tmp_path, preset)
    assert [s["label"]["setup_code"] for s in seen] == ["11112222", "11112222"]
    assert seen[1]["device_id"] == "dc-a6-32-11-22-33"


def test_the_stored_mac_still_loading_is_waited_for_not_taken_as_other_hardware(
        sys_net: Path) -> None:
    """At boot, Ethernet may show before the Wi-Fi card the identity was made from."""
    board(sys_net, ETH, "eth0")
    clock = Clock()
    clock.on_sleep = lambda: len(clock.slept) == 3 and board(sys_net, BOARD_A)
    assert wait_for_mac("", 30.0, recorded=BOARD_A, clock=clock, sleep=clock.sleep) == BOARD_A
    # ...and when it never shows, this hub's own MAC at the deadline: other hardware.
    clock = Clock()
    assert wait_for_mac("", 2.0, recorded=BOARD_B, clock=clock, sleep=clock.sleep) in (
        ETH, BOARD_A)
    assert clock.now == 102.0


# ---- [hub] setup_code ------------------------------------------------------------------------

def test_a_setup_code_preset_replaces_the_stored_code_at_start_and_at_a_reset(
        tmp_path: Path, sys_net: Path, seen: list[dict[str, Any]],
        caplog: pytest.LogCaptureFixture) -> None:
    board(sys_net, BOARD_A)
    start(tmp_path)
    start(tmp_path)  # a random code stays random and the same across restarts
    random_code = seen[0]["label"]["setup_code"]
    assert seen[1]["label"]["setup_code"] == random_code != "11112222"
    assert "setup_code preset" not in caplog.text

    start(tmp_path, 'setup_code = "11112222"')  # a drop-in written after the first start
    assert seen[2]["label"]["setup_code"] == "11112222"
    assert seen[2]["label"]["payload"] == "GWD1:dc-a6-32-aa-bb-cc:11112222"
    assert stored(tmp_path)["setup_code"] == "11112222"
    assert ("the stored setup code is replaced by the [hub] setup_code preset"
            in caplog.text)
    assert random_code not in caplog.text and "11112222" not in caplog.text

    reset = ctl("--config", str(hub_toml(tmp_path, 'setup_code = "33334444"')), "--socket",
                str(tmp_path / "none.sock"), "reset")
    assert stored(tmp_path)["setup_code"] == "33334444"
    assert "replaced by the [hub] setup_code preset" in reset.stderr
    assert "11112222" not in reset.stderr + reset.stdout


# ---- [hub] interface --------------------------------------------------------------------------

def test_a_configured_interface_that_never_shows_stops_the_start_naming_it(
        tmp_path: Path, sys_net: Path, seen: list[dict[str, Any]],
        capsys: pytest.CaptureFixture[str]) -> None:
    board(sys_net, ETH, "eth0")  # only Ethernet: "wlan0" is a typo, or still loading
    assert cli.run_daemon(load_config(hub_toml(tmp_path, 'interface = "wlan0"')),
                          Redactor()) == 1
    err = capsys.readouterr().err
    assert err.startswith("gatewayd: cannot start: [hub] interface wlan0 does not exist "
                          "after 0 s (this machine has: eth0); the hub's device id is made "
                          "from its MAC, never from another card's")
    assert seen == [] and not (tmp_path / "state" / "state.json").exists()

    (tmp_path / "auto").mkdir()
    start(tmp_path / "auto")  # without the setting: today's choice, Ethernet's
    assert seen[0]["device_id"] == "02-fc-00-00-00-01"


def test_the_wait_for_a_configured_interface_takes_its_mac_not_the_card_up_first(
        sys_net: Path) -> None:
    board(sys_net, ETH, "eth0")
    clock = Clock()
    clock.on_sleep = lambda: len(clock.slept) == 3 and board(sys_net, BOARD_A)
    assert wait_for_mac("wlan0", 30.0, clock=clock, sleep=clock.sleep) == BOARD_A
    assert clock.slept == [0.5, 0.5, 0.5]


def test_a_paired_hub_on_other_hardware_starts_at_once_and_its_late_card_clears_the_warning(
        tmp_path: Path, sys_net: Path, seen: list[dict[str, Any]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: a paired hub on other hardware waited the whole 30 s at every start, for a
    card that might still be loading, though it keeps its identity either way."""
    paired_on_board_a_moved_to_b(tmp_path, sys_net)

    def no_sleep(seconds: float) -> None:
        raise AssertionError(f"the start waited {seconds} s for a MAC")
    monkeypatch.setattr(hub, "MAC_WAIT", 30.0)
    monkeypatch.setattr(hub, "wait_for_mac", functools.partial(identity.wait_for_mac,
                                                                sleep=no_sleep))
    start(tmp_path)
    moved = seen[-1]
    assert moved["paired"] is True and moved["hardware_changed"]["mac"] == BOARD_B
    add_interface(sys_net, "eth0", BOARD_A)  # the card it was made for, loaded late
    assert moved["hub"].status()["hardware_changed"] is None
