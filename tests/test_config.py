from __future__ import annotations

import dataclasses
import grp
import os
import subprocess
import tomllib
from pathlib import Path

import pytest

from gatewayd.cli import serial_warnings
from gatewayd.config import (
    NOT_KEYS,
    Config,
    ConfigError,
    config_warnings,
    load_config,
    parse_config,
)
from tests.helpers import BIN, REPO

EXAMPLE = REPO / "examples" / "gatewayd.toml"


def test_defaults_are_valid() -> None:
    cfg = parse_config({})
    assert cfg == Config()
    assert cfg.hotspot.address == "192.168.4.1/24"
    assert cfg.portal.port == 80


def test_example_config_is_valid_and_documents_every_key() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.hub.product == "gatewayd hub"
    text = EXAMPLE.read_text()
    for section in dataclasses.fields(Config):
        if section.name in NOT_KEYS | {"virtual"}:
            continue
        assert f"[{section.name}]" in text
        for f in dataclasses.fields(getattr(cfg, section.name)):
            assert f"{f.name} =" in text, f"{section.name}.{f.name} undocumented in example"


@pytest.mark.parametrize(
    ("toml", "key", "reason"),
    [
        ("[hotspot]\nband = 'x'", "hotspot.band", "must be one of"),
        ("[hotspot]\nchannel = 500", "hotspot.channel", "<= 196"),
        ("[hotspot]\nbogus = 1", "hotspot.bogus", "unknown key"),
        ("[nonsense]\na = 1", "nonsense", "unknown key"),
        ("[portal]\nport = '80'", "portal.port", "must be an integer"),
        # The pairing field takes digits in quotes (a query string has no numbers); the
        # preset does not, and never did (0.1.1 and 0.1.2 refused it alike).
        ("[cloud]\nport = \"1883\"", "cloud.port", "must be an integer, got str '1883'"),
        ("[cloud]\nmqtts_port = \"8883\"", "cloud.mqtts_port", "must be an integer"),
        ("[portal]\nport = 70000", "portal.port", "<= 65535"),
        ("[portal]\nenabled = 1", "portal.enabled", "must be a boolean"),
        ("[hotspot]\npassword = 'short'", "hotspot.password", "8-63"),
        ("[hotspot]\naddress = '192.168.4.1/31'", "hotspot.address", "prefix"),
        ("[hotspot]\nssid_template = '{nope}'", "hotspot.ssid_template", "placeholder"),
        # A rule in words, not a regular expression; a secret is not quoted back.
        ("[hub]\nsetup_code = '1234'", "hub.setup_code",
         "must be empty or 8 digits (without the dash the label shows), got a value that is not "
         "shown (a secret)"),
        ("[hub]\nsetup_code = '7983-7614'", "hub.setup_code", "without the dash"),
        ("[hub]\ndevice_id = 'Bad_ID'", "hub.device_id",
         "must be empty or 2-64 lowercase letters, digits and hyphens, not starting or ending "
         "with a hyphen, got 'Bad_ID'"),
        ("[[virtual]]\ntype = 'system'\nid = 'x'", "virtual[0].id",
         "must be 2 or more lowercase letters, digits and hyphens"),
        ("[[virtual]]\ntype = 'System'\nid = 'x1'", "virtual[0].type",
         "must be lowercase letters, digits, '_' and '-', starting with a letter"),
        ("[cloud]\nhost = 'not a host'", "cloud.host", "host name"),
        ("[cloud]\nroot_topic = 'a/b'", "cloud.root_topic", "topic level"),
        # A preset account a pairing request's own check would refuse, every time.
        ("[cloud]\nwsp = 'not an email'", "cloud.wsp", "must be an e-mail address"),
        ("[portal]\nhost_names = 'hub.lan'", "portal.host_names", "array of strings"),
        ("[portal]\nhost_names = ['hub.lan', 'not a host']", "portal.host_names[1]",
         "host name"),
        ("[portal]\nhost_names = [7]", "portal.host_names[0]", "must be a string"),
        ("[portal]\nget_pair = 'lan'", "portal.get_pair",
         "must be one of 'anywhere', 'hotspot', got 'lan'"),
        ("[cloud]\ntoken = \"tok\\u0001en-31415\"", "cloud.token",
         "must not contain control characters"),
        ("[cloud]\nreconnect_min = 50.0\nreconnect_max = 10.0", "cloud.reconnect_min",
         "must not exceed"),
        ("[zigbee]\nchannel = 27", "zigbee.channel", "<= 26"),
        ("[zigbee]\nradio = 'ti'", "zigbee.radio", "must be one of"),
        ("[[virtual]]\ntype = 'system'", "virtual[0].id", "is required"),
        ("[[virtual]]\ntype = 'system'\nid = 'a1'\n[[virtual]]\ntype = 'timer'\nid = 'a1'",
         "virtual[1].id", "duplicate"),
        ("hub = 3", "hub", "must be a table"),
        # TOML's nan passes every range check, and inf one of them
        ("[hotspot]\noffline_grace = nan", "hotspot.offline_grace", "finite"),
        ("[cloud]\nheartbeat_interval = -nan", "cloud.heartbeat_interval", "finite"),
        ("[ble]\nwindow_seconds = inf", "ble.window_seconds", "finite"),
        # Relative to the daemon's working directory (/), found only at start: exit 2 then.
        ("[hub]\nstate_dir = ''", "hub.state_dir",
         "must be an absolute path such as /var/lib/gatewayd, got ''"),
        ("[hub]\nruntime_dir = 'relative/run'", "hub.runtime_dir",
         "must be an absolute path such as /run/gatewayd, got 'relative/run'"),
    ],
)
def test_bad_values_name_key_and_reason(toml: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(toml), "x.toml")
    assert info.value.key == key
    assert reason in info.value.reason
    assert str(info.value).startswith(f"x.toml: {key}: ")


@pytest.mark.parametrize(
    ("toml", "key", "secret"),
    [
        ("[hub]\nsetup_code = '1234-5678'", "hub.setup_code", "1234-5678"),
        ("[hub]\nsetup_code = 12345678", "hub.setup_code", "12345678"),
        ("[hotspot]\npassword = 9876543210", "hotspot.password", "9876543210"),
        ("[portal]\nadmin_password = 31415926", "portal.admin_password", "31415926"),
        ("[cloud]\ntoken = 271828182", "cloud.token", "271828182"),
        ("[provisioning]\ntoken = 161803398", "provisioning.token", "161803398"),
        ("[provisioning]\nenroll_password = 141421356", "provisioning.enroll_password",
         "141421356"),
    ],
)
def test_a_refused_secret_is_named_but_not_shown(toml: str, key: str, secret: str) -> None:
    """Config errors go to the journal and the terminal: the key and the reason, never
    the value of a password, token or setup code."""
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(toml), "x.toml")
    assert info.value.key == key
    assert "not shown" in info.value.reason
    assert secret not in str(info.value)


def test_virtual_device_options_are_kept_for_the_plugin() -> None:
    cfg = parse_config(tomllib.loads(
        "[[virtual]]\ntype = 'command'\nid = 'uptime'\ninterval = 5\nargv = ['uptime']"))
    (dev,) = cfg.virtual
    assert dev.options == {"interval": 5, "argv": ["uptime"]}


def test_a_virtual_device_option_set_twice_is_refused_by_name() -> None:
    """Beside type/id and in [virtual.options]: the top-level value silently won."""
    with pytest.raises(ConfigError, match="set twice") as info:
        parse_config(tomllib.loads(
            "[[virtual]]\ntype = 'command'\nid = 'uptime'\ninterval = 5\n"
            "[virtual.options]\ninterval = 60\n"))
    assert info.value.key == "virtual[0].interval"


def test_syntax_error_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "g.toml"
    bad.write_text("[hub\n")
    with pytest.raises(ConfigError, match="TOML syntax error") as info:
        load_config(bad)
    assert info.value.file == str(bad)


@pytest.mark.parametrize("toml", ["[hotspot]\nband = 'x'\n", "[portal\n", "[cloud]\nport = 0\n",
                                  # int() refuses it: a traceback, exit 1 and restarts
                                  "[cloud]\nport = " + "1" * 5_000 + "\n"])
def test_daemon_exits_nonzero_before_touching_anything(tmp_path: Path, toml: str) -> None:
    state = tmp_path / "state"
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f"[hub]\nstate_dir = '{state}'\nruntime_dir = '{tmp_path / 'run'}'\n" + toml
                   if not toml.startswith("[hub") else toml)
    result = subprocess.run([str(BIN / "gatewayd"), "--config", str(cfg)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2
    assert str(cfg) in result.stderr
    assert "configuration error" in result.stderr and "Traceback" not in result.stderr
    assert not state.exists(), "a refused config must not create state"
    assert not (tmp_path / "run").exists()


def test_check_config(tmp_path: Path) -> None:
    result = subprocess.run([str(BIN / "gatewayd"), "--config", str(EXAMPLE), "--check-config"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    missing = subprocess.run([str(BIN / "gatewayd"), "--config", str(tmp_path / "no.toml"),
                              "--check-config"], capture_output=True, text=True, timeout=30)
    assert missing.returncode == 2
    assert "file not found" in missing.stderr


# ---- drop-ins: vendor presets next to the packaged conffile ---------------------------------

def vendor_config(tmp_path: Path, drop_ins: dict[str, str],
                  main: str = "[hotspot]\nchannel = 6\n[[virtual]]\ntype = 'system'\n"
                              "id = 'health'\n") -> Path:
    path = tmp_path / "gatewayd.toml"
    path.write_text(main)
    directory = tmp_path / "gatewayd.toml.d"
    directory.mkdir()
    for name, text in drop_ins.items():
        (directory / name).write_text(text)
    return path


def test_drop_ins_are_read_after_the_main_file_in_name_order(tmp_path: Path) -> None:
    path = vendor_config(tmp_path, {
        "20-site.toml": "[hotspot]\npassword = 'site-secret'\n",
        "10-vendor.toml": "[hotspot]\npassword = 'vendor-secret'\nband = 'a'\n"
                          "[hub]\nproduct = 'Acme hub'\n"
                          "[[virtual]]\ntype = 'timer'\nid = 'kettle'\n",
        "10-vendor.toml.dpkg-old": "[hub]\nproduct = 'not read'\n",
        ".hidden.toml": "[hub]\nproduct = 'not read either'\n"})
    cfg = load_config(path)
    # a table sets the keys it names; the main file's others stay
    assert (cfg.hotspot.channel, cfg.hotspot.band) == (6, "a")
    assert cfg.hotspot.password == "site-secret" and cfg.hub.product == "Acme hub"
    # an array of tables is replaced whole
    assert [v.id for v in cfg.virtual] == ["kettle"]
    assert cfg.drop_ins == (str(tmp_path / "gatewayd.toml.d" / "10-vendor.toml"),
                            str(tmp_path / "gatewayd.toml.d" / "20-site.toml"))
    assert cfg.file_of("virtual") == cfg.drop_ins[0]
    assert cfg.file_of("hotspot.channel") == str(path)


@pytest.mark.parametrize(("drop_in", "key", "reason"), [
    ("[hotspot]\nband = 'x'\n", "hotspot.band", "must be one of"),
    ("[nonsense]\na = 1\n", "nonsense", "unknown key"),
    ("[[virtual]]\ntype = 'system'\nid = 'x'\n", "virtual[0].id", "2 or more"),
    ("[hotspot\n", "", "TOML syntax error"),
    ("[cloud]\nport = " + "9" * 5_000 + "\n", "", "a number with more than 4300 digits"),
    # a key nobody set, which one the drop-in set requires
    ("[provisioning]\nmode = 'token'\nhost = 'p.example.com'\n", "provisioning.token",
     "is required"),
])
def test_an_error_in_a_drop_in_names_the_drop_in(tmp_path: Path, drop_in: str, key: str,
                                                 reason: str) -> None:
    path = vendor_config(tmp_path, {"10-vendor.toml": drop_in})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.file == str(tmp_path / "gatewayd.toml.d" / "10-vendor.toml")
    assert (info.value.key, reason in info.value.reason) == (key, True)


def test_a_key_another_one_requires_is_blamed_on_the_file_that_set_that_one(
        tmp_path: Path) -> None:
    # mode = "token" in the main file, the port in a drop-in: the token is the main file's
    # to give, not the drop-in's (which set a key of the same table).
    path = vendor_config(tmp_path, {"10-port.toml": "[provisioning]\nport = 8443\n"},
                         main="[provisioning]\nmode = 'token'\nhost = 'p.example.com'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.file, info.value.key) == (str(path), "provisioning.token")


def test_check_config_lists_the_drop_ins_and_names_a_bad_virtual_device(tmp_path: Path) -> None:
    path = vendor_config(tmp_path, {"10-vendor.toml": "[hub]\nproduct = 'Acme hub'\n"})
    result = subprocess.run([str(BIN / "gatewayd"), "--config", str(path), "--check-config"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{path}: OK",
                                          f"{tmp_path / 'gatewayd.toml.d' / '10-vendor.toml'}: OK"]
    # A device's options are checked after the files are merged: the error names its file.
    (tmp_path / "gatewayd.toml.d" / "20-devices.toml").write_text(
        "[[virtual]]\ntype = 'timer'\nid = 'kettle'\nduration = 0\n")
    result = subprocess.run([str(BIN / "gatewayd"), "--config", str(path), "--check-config"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"{tmp_path / 'gatewayd.toml.d' / '20-devices.toml'}: virtual[0].duration" in (
        result.stderr)


def test_check_config_warns_of_a_control_group_this_machine_does_not_have(
        tmp_path: Path) -> None:
    """Valid (the group may come later), but the socket will not be opened to it: said at
    check time, not found out when a member is refused."""
    cfg = tmp_path / "g.toml"
    cfg.write_text("[hub]\ncontrol_group = 'no-such-group-here'\n")
    result = subprocess.run([str(BIN / "gatewayd"), "--config", str(cfg), "--check-config"],
                            capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout) == (0, f"{cfg}: OK\n")
    assert result.stderr == (f"gatewayd: warning: {cfg}: hub.control_group: there is no group "
                             "'no-such-group-here' on this machine; the control socket is not "
                             "opened to it\n")
    cfg.write_text(f"[hub]\ncontrol_group = '{grp.getgrgid(os.getgid()).gr_name}'\n")
    result = subprocess.run([str(BIN / "gatewayd"), "--config", str(cfg), "--check-config"],
                            capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{cfg}: OK\n", "")


@pytest.mark.parametrize(("text", "reason"), [
    ("[cloud]\nport = 1883\n[cloud]\nhost = 'x'\n",
     "TOML syntax error: [cloud] is declared twice at line 3, column 7"),
    ("[hub]\nname = 'a'\nname = 'b'\n",
     "TOML syntax error: a key is set twice at line 3, column 11"),
    ("[hub\n", "TOML syntax error at line 1, column 5"),
    ("[hub]\nname = ", "TOML syntax error at the end of the file"),
])
def test_a_toml_mistake_is_named_with_its_line_in_the_hubs_words(
        tmp_path: Path, text: str, reason: str) -> None:
    """Before: tomllib's own sentence ("Cannot declare ('cloud',) twice (at line 3, ...)")."""
    bad = tmp_path / "g.toml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert (info.value.file, info.value.reason) == (str(bad), reason)


def test_a_drop_in_without_the_toml_suffix_is_not_read_and_is_a_warning(tmp_path: Path) -> None:
    """Before: 20-site.conf was skipped without a word; a vendor's setting silently absent."""
    path = vendor_config(tmp_path, {"10-vendor.toml": "[hub]\nproduct = 'Acme Hub'\n",
                                    "20-site.conf": "[hub]\nproduct = 'Site Hub'\n",
                                    ".20-site.toml.swp": "x"})
    cfg = load_config(path)
    skipped = tmp_path / "gatewayd.toml.d" / "20-site.conf"
    assert cfg.hub.product == "Acme Hub" and cfg.skipped == (str(skipped),)
    assert f"{skipped}: not read: only files ending in .toml are (a backup or a mistyped " \
        "name? rename it to use it)" in config_warnings(cfg)


@pytest.mark.parametrize(("main", "drop_in", "key"), [
    ("[cloud]\nreconnect_min = 30\n", "[cloud]\nreconnect_max = 10\n", "cloud.reconnect_min"),
    ("[provisioning]\nmode = 'enroll'\nhost = 'p.example.com'\ntemplate = 'hub'\n"
     "enroll_password = 'secret-1'\n", "[provisioning]\nenroll_password = ''\n",
     "provisioning.enroll_password"),
    ("[button]\nenabled = true\nline = 17\n[led]\nenabled = true\n", "[led]\nline = 17\n",
     "led.line"),
])
def test_settings_that_disagree_blame_the_drop_in_that_made_them(
        tmp_path: Path, main: str, drop_in: str, key: str) -> None:
    """Before: the main file was named, which was fine until the drop-in changed a value."""
    path = vendor_config(tmp_path, {"10-vendor.toml": drop_in}, main=main)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.file, info.value.key) == (
        str(tmp_path / "gatewayd.toml.d" / "10-vendor.toml"), key)


def test_check_config_warns_of_an_enroll_preset_on_a_machine_without_a_serial(
        tmp_path: Path) -> None:
    """Before: an enroll preset with an empty serial was OK at check time on a board whose
    /proc/cpuinfo has no Serial line (not a Raspberry Pi); every start then failed with
    no-serial."""
    cfg = tmp_path / "e.toml"
    cfg.write_text("[provisioning]\nmode = 'enroll'\nhost = 'prov.example.com'\n"
                   "template = 'acme'\nenroll_password = 'enroll-secret'\n")
    config = load_config(cfg)
    pi, board = tmp_path / "pi-cpuinfo", tmp_path / "board-cpuinfo"
    pi.write_text("processor\t: 0\nSerial\t\t: 10000000c0ffee01\n")
    board.write_text("processor\t: 0\nmodel name\t: ARMv7 Processor rev 5 (v7l)\n")
    assert serial_warnings(config, pi) == []
    assert serial_warnings(config, board) == [
        f"{cfg}: provisioning.serial: empty, and {board} has no Serial line on this machine, "
        "so the hub cannot enroll (no-serial); set [provisioning] serial"]
    cfg.write_text(cfg.read_text() + "serial = 'acme-0001'\n")
    assert serial_warnings(load_config(cfg), board) == []
    # The check prints it, as its other warnings, on a machine that has no serial.
    cfg.write_text(cfg.read_text().replace("serial = 'acme-0001'\n", ""))
    result = subprocess.run([str(BIN / "gatewayd"), "--config", str(cfg), "--check-config"],
                            capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout) == (0, f"{cfg}: OK\n")
    expected = "".join(f"gatewayd: warning: {w}\n" for w in serial_warnings(load_config(cfg)))
    assert result.stderr == expected
