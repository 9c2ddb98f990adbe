"""What a vendor sees when a setting cannot work on the hub: ``gatewayd --check-config``
and the daemon's start say which key, in which file, and exit 2 (the unit does not
restart a configuration error in a loop)."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gatewayd.ap import hotspot_profile
from gatewayd.ble_commission import BleCommissioner
from gatewayd.config import Config, with_overrides
from gatewayd.identity import Identity, device_id_from_mac
from gatewayd.onboarding.machine import Onboarding
from gatewayd.onboarding.pairing import PairingService
from gatewayd.state import StateStore
from tests.fakes import StubCloud
from tests.helpers import BIN, NOBODY, ROOT_ONLY, Gatewayd, ethernet_config, reachable_tmp


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "gatewayd"), "--config", str(path), "--check-config"],
                          capture_output=True, text=True, timeout=30)


def test_a_portal_port_in_use_stops_the_start_with_exit_2_naming_the_setting(
        tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        main = tmp_path / "gatewayd.toml"
        main.write_text(ethernet_config(tmp_path))
        (tmp_path / "gatewayd.toml.d").mkdir()
        drop_in = tmp_path / "gatewayd.toml.d" / "10-vendor.toml"
        drop_in.write_text(f"[portal]\nport = {port}\n")
        daemon = Gatewayd(["--config", str(main)])
        code = daemon.proc.wait(60)
        output = daemon.output()
    assert code == 2, output
    assert (f"gatewayd: configuration error: {drop_in}: portal.port: the portal cannot "
            f"listen on 127.0.0.1:{port} (Address already in use): choose another [portal] "
            "port, or stop the program using it") in output
    assert "Traceback" not in output


def test_a_portal_address_the_hub_does_not_have_names_portal_listen(tmp_path: Path) -> None:
    main = tmp_path / "gatewayd.toml"
    # TEST-NET-1: on no interface of this machine
    main.write_text(ethernet_config(tmp_path).replace('listen = "127.0.0.1"',
                                                      'listen = "192.0.2.1"'))
    daemon = Gatewayd(["--config", str(main)])
    code = daemon.proc.wait(60)
    output = daemon.output()
    assert code == 2, output
    assert (f"{main}: portal.listen: the portal cannot listen on 192.0.2.1:0 (Cannot assign "
            "requested address): set an address this hub has when gatewayd starts (the "
            "hotspot's comes later), or 0.0.0.0 for all") in output
    assert "Traceback" not in output


@pytest.mark.parametrize("listen", ["localhost", "::", "0.0.0.0"])
def test_a_portal_listen_0_1_1_took_is_still_taken(tmp_path: Path, listen: str) -> None:
    """A refusal added in this release stopped hubs whose config 0.1.1 took (exit 2, which
    the unit does not restart) at the first start after the upgrade."""
    main = tmp_path / "gatewayd.toml"
    main.write_text(f"[portal]\nlisten = '{listen}'\n")
    result = check_config(main)
    assert (result.returncode, result.stdout) == (0, f"{main}: OK\n")
    # Taken; "::" is a warning (below), never a refusal.
    assert result.stderr == ("" if listen != "::" else
                             f"gatewayd: warning: {main}: portal.listen: '::' is an IPv6 "
                             "address: the portal answers IPv6 clients only, and the "
                             "hotspot's phones (IPv4) cannot reach it; 0.0.0.0 is every IPv4 "
                             "address\n")


def check_config_as_root_for(user: str, path: Path) -> subprocess.CompletedProcess[str]:
    """``sudo gatewayd --check-config``, with ``user`` as the service's user (a test
    machine has no gatewayd user)."""
    code = ("import sys; import gatewayd.cli as cli; cli.SERVICE_USER = sys.argv[1]; "
            "sys.exit(cli.main(sys.argv[2:]))")
    return subprocess.run([sys.executable, "-c", code, user, "--config", str(path),
                           "--check-config"], capture_output=True, text=True, timeout=30)


@pytest.mark.skipif(os.geteuid() != 0, reason=ROOT_ONLY)
def test_check_config_as_root_refuses_a_drop_in_the_service_user_cannot_read() -> None:
    with reachable_tmp() as tmp:
        main = tmp / "gatewayd.toml"
        main.write_text("[hub]\nproduct = 'Acme hub'\n")
        main.chmod(0o644)
        (tmp / "gatewayd.toml.d").mkdir(mode=0o755)
        drop_in = tmp / "gatewayd.toml.d" / "10-vendor.toml"
        drop_in.write_text("[cloud]\ntoken = 'vendor-token-1'\n")
        drop_in.chmod(0o600)  # root's own: what a vendor writes for a token
        user = pwd.getpwuid(NOBODY).pw_name
        result = check_config_as_root_for(user, main)
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr == (
            f"gatewayd: configuration error: {drop_in}: the service's user {user} cannot "
            f"read it (Permission denied), so gatewayd.service would stop at its start; as "
            f"root: chown root:{user} {drop_in} && chmod 0640 {drop_in} (and let it reach "
            "the directories above)\n")
        # Readable by everyone: the service reads it, and so does every other user of the
        # hub, which is a warning (tests/test_config_secrets.py).
        drop_in.chmod(0o644)
        result = check_config_as_root_for(user, main)
        assert result.returncode == 0
        assert result.stderr.startswith(f"gatewayd: warning: {drop_in}: cloud.token: every "
                                        "user can read these secrets")
        assert result.stdout == f"{main}: OK\n{drop_in}: OK\n"
        # What the error says to do, with the service's group (nobody's, here).
        os.chown(drop_in, 0, pwd.getpwuid(NOBODY).pw_gid)
        drop_in.chmod(0o640)
        result = check_config_as_root_for(user, main)
        assert (result.returncode, result.stderr) == (0, "")
        assert result.stdout == f"{main}: OK\n{drop_in}: OK\n"


@pytest.mark.skipif(os.geteuid() != 0, reason=ROOT_ONLY)
def test_check_config_as_root_warns_of_a_ca_file_the_service_user_cannot_read() -> None:
    """The CA bundle is read at each TLS connection, not at the start: a refusal (exit 2)
    there stopped provisioning scripts over a file that stops nothing, and one that is not
    there at all is the load's warning, said once."""
    with reachable_tmp() as tmp:
        main = tmp / "gatewayd.toml"
        ca_file = tmp / "ca.pem"
        main.write_text(f"[cloud]\nca_file = '{ca_file}'\n")
        main.chmod(0o644)
        user = pwd.getpwuid(NOBODY).pw_name
        result = check_config_as_root_for(user, main)
        assert (result.returncode, result.stdout) == (0, f"{main}: OK\n")
        assert result.stderr == (f"gatewayd: warning: {main}: cloud.ca_file: there is no file "
                                 f"'{ca_file}': TLS connections to the broker will fail\n")
        ca_file.write_text("-----BEGIN CERTIFICATE-----\n")
        ca_file.chmod(0o600)
        result = check_config_as_root_for(user, main)
        assert (result.returncode, result.stdout) == (0, f"{main}: OK\n")
        assert result.stderr == (
            f"gatewayd: warning: {ca_file}: the service's user {user} cannot read it "
            f"(Permission denied), so TLS connections to the broker will fail; as root: "
            f"chown root:{user} {ca_file} && chmod 0640 {ca_file} (and let it reach the "
            "directories above)\n")
        ca_file.chmod(0o644)
        result = check_config_as_root_for(user, main)
        assert (result.returncode, result.stdout, result.stderr) == (0, f"{main}: OK\n", "")


# ---- the names a hub shows: the product is shortened, never the per-hub part -----------

LONG = "Acme Smart Home Gateway Pro 2"
CYRILLIC = "Умный дом Шлюз Про"


def test_check_config_warns_when_the_product_makes_a_name_too_long(tmp_path: Path) -> None:
    main = tmp_path / "gatewayd.toml"
    main.write_text(f"[hub]\nproduct = '{LONG}'\n")
    result = check_config(main)
    assert (result.returncode, result.stdout) == (0, f"{main}: OK\n")
    assert result.stderr == (
        f"gatewayd: warning: {main}: hub.product: '{LONG} 3456' is 34 bytes, over the 32 an "
        f"SSID holds: the product is shortened, to 'Acme Smart Home Gateway Pro 3456' "
        f"(hotspot.ssid_template in {main})\n"
        f"gatewayd: warning: {main}: hub.product: '{LONG} 3456' is 34 bytes, over the 29 a "
        f"BLE name holds: the product is shortened, to 'Acme Smart Home Gateway 3456' "
        f"(ble.name_template in {main})\n")


def test_the_hotspot_and_ble_names_keep_each_hubs_suffix_whole(tmp_path: Path) -> None:
    for product in (LONG, CYRILLIC):
        cfg = with_overrides(Config(), hub={"product": product}, ble={"enabled": True})
        seen = set()
        for mac in ("dc:a6:32:aa:34:56", "dc:a6:32:aa:cd:ef"):
            hub = Identity(device_id_from_mac(mac), mac, product)
            on_air = hotspot_profile(cfg, hub, "wlan0")["802-11-wireless"]["ssid"][1]
            ssid = on_air.decode("utf-8")  # whole characters: valid UTF-8
            assert len(on_air) <= 32 and ssid.endswith(f" {hub.mac4}"), ssid
            onboarding = Onboarding(cfg, StateStore(tmp_path / mac), None, StubCloud())
            ble = BleCommissioner(cfg, hub, StateStore(tmp_path / mac), onboarding,
                                  PairingService(onboarding, cfg.cloud, wifi_enabled=True))
            name = ble.status()["name"]
            assert len(name.encode()) <= 29 and name.endswith(f" {hub.mac4}"), name
            seen.add((ssid, name))
        assert len(seen) == 2  # two hubs, two names
    assert ssid == "Умный дом Шлюз CDEF"  # 38 bytes whole: "Про" goes, not half a letter
    assert name == "Умный дом Шлю CDEF"


def test_a_template_whose_per_hub_part_alone_is_too_long_is_a_warning(tmp_path: Path) -> None:
    main = tmp_path / "gatewayd.toml"
    main.write_text("[hotspot]\nssid_template = 'Acme wireless gateway {device_id}'\n")
    result = check_config(main)
    assert (result.returncode, result.stdout) == (0, f"{main}: OK\n")
    assert result.stderr == (
        f"gatewayd: warning: {main}: hotspot.ssid_template: is 39 bytes without the product "
        "('Acme wireless gateway dc-a6-32-12-34-56'), over the 32 an SSID holds: its per-hub "
        "part is cut, and hubs may show the same name\n")


# ---- values that cannot work are warnings (0.1.1 took them: no refusal), naming the key --

@pytest.mark.parametrize(("toml", "key", "reason"), [
    ("[cloud]\nca_file = 'certs/ca.pem'\n", "cloud.ca_file",
     "is not an absolute path (the daemon runs in /; such as /etc/gatewayd/ca.pem), got "
     "'certs/ca.pem': TLS connections to the broker will fail"),
    ("[cloud]\nca_file = '/nonexistent/ca.pem'\n", "cloud.ca_file",
     "there is no file '/nonexistent/ca.pem': TLS connections to the broker will fail"),
    ("[zigbee]\nenabled = true\ndevice = 'ttyUSB0'\n", "zigbee.device",
     "is not a serial port's path such as /dev/ttyUSB0, nor socket://host:port or "
     "tcp://host:port, got 'ttyUSB0' (/dev/ttyUSB0?): the radio will not open"),
    ("[portal]\nenabled = false\n[ble]\nenabled = false\n", "portal.enabled",
     "false with [ble] enabled = false as well: only the control socket's POST /api/v1/pair "
     "(an app on the hub) can pair it"),
    # Before: taken silently; waitress binds it IPv6-only, so every IPv4 client (the whole
    # hotspot) met "connection refused" (test_webserver's own check shows why).
    ("[portal]\nlisten = '::'\n", "portal.listen",
     "'::' is an IPv6 address: the portal answers IPv6 clients only, and the hotspot's "
     "phones (IPv4) cannot reach it; 0.0.0.0 is every IPv4 address"),
])
def test_a_value_that_cannot_work_is_a_warning_naming_the_key(tmp_path: Path, toml: str,
                                                              key: str, reason: str) -> None:
    main = tmp_path / "gatewayd.toml"
    main.write_text(toml)
    result = check_config(main)
    assert (result.returncode, result.stdout) == (0, f"{main}: OK\n")
    assert result.stderr == f"gatewayd: warning: {main}: {key}: {reason}\n"


def test_a_ca_file_that_cannot_be_looked_at_is_a_warning_not_a_traceback(
        tmp_path: Path) -> None:
    """Before: an OSError of the check (a directory on the way the user may not enter,
    here a name too long) escaped at every load: --check-config printed a traceback and
    exited 1, and gatewayctl status failed for a file it never uses."""
    main = tmp_path / "gatewayd.toml"
    main.write_text(f"[cloud]\nca_file = '/{'a' * 300}/ca.pem'\n")
    result = check_config(main)
    assert (result.returncode, result.stdout) == (0, f"{main}: OK\n"), result.stderr
    assert "cloud.ca_file: cannot be looked at (File name too long): TLS connections to the " \
        "broker will fail" in result.stderr
    assert "Traceback" not in result.stderr


def test_cloud_presets_beside_a_provisioning_mode_are_a_warning(tmp_path: Path) -> None:
    main = vendor_files(tmp_path, "[provisioning]\nmode = 'token'\nhost = 'p.example.com'\n"
                                  "token = 'batch-token'\n",
                        "[cloud]\nwsp = 'hub@example.com'\n")
    drop_in = tmp_path / "gatewayd.toml.d" / "10-vendor.toml"
    result = check_config(main)
    assert (result.returncode, result.stdout) == (0, f"{main}: OK\n{drop_in}: OK\n")
    assert result.stderr == (f"gatewayd: warning: {drop_in}: cloud.wsp: is not used with "
                             f"[provisioning] mode = \"token\" ({main}): the platform issues "
                             "the hub's account\n")


def vendor_files(tmp_path: Path, main_text: str, drop_in_text: str) -> Path:
    main = tmp_path / "gatewayd.toml"
    main.write_text(main_text)
    (tmp_path / "gatewayd.toml.d").mkdir()
    (tmp_path / "gatewayd.toml.d" / "10-vendor.toml").write_text(drop_in_text)
    return main


def test_the_simulator_says_a_portal_port_in_use_as_gatewayd_does(tmp_path: Path) -> None:
    """Before: gatewayd --simulate ended in a ConfigError traceback and exit 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        main = tmp_path / "gatewayd.toml"
        main.write_text(f"[portal]\nport = {port}\n")
        sim = Gatewayd(["--simulate", "--workdir", str(tmp_path / "w"), "--config", str(main)])
        code = sim.proc.wait(120)
        output = sim.output()
    assert code == 2, output
    assert (f"configuration error: {main}: portal.port: the portal cannot listen on "
            f"127.0.0.1:{port} (Address already in use)") in output
    assert "Traceback" not in output
