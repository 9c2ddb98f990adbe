"""``gatewayd --check-config`` and plugins: a vendor runs it in CI before shipping.

It said ``OK`` (exit 0) for a configuration whose plugin does not load, which the daemon
then publishes as a broken device; and the plugins' discovery warnings were bare lines on
stderr, without ``gatewayd: warning:``. The plugins come from the test-only distribution
(tests/plugin_dist), which also provides a ``system`` that the built-in keeps.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import BIN, REPO, Gatewayd, ethernet_config, wait_for, write_config
from tests.test_virtual_devices import PLUGIN_DIST

IGNORED = ("gatewayd: warning: virtual device type 'system' from gatewayd-test-plugins "
           "ignored: the name is built in\n")


def check(cfg: Path, *site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [PLUGIN_DIST, *site, REPO]))}
    return subprocess.run([str(BIN / "gatewayd"), "--config", str(cfg), "--check-config"],
                          capture_output=True, text=True, timeout=30, env=env)


def test_a_plugin_that_does_not_load_is_a_configuration_error(tmp_path: Path) -> None:
    # Its options cannot be checked (foo is none of its), so the check cannot say OK.
    cfg = write_config(tmp_path / "c.toml", "[[virtual]]\ntype = 'test-unimportable'\n"
                                             "id = 's1'\nfoo = 1\n")
    result = check(cfg)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"gatewayd: configuration error: {cfg}: virtual[0].type: plugin 'test-unimportable' "
        "(gatewayd_test_plugins.unimportable:UnimportableDevice) does not load: ImportError: "
        "gatewayd_test_plugins.unimportable needs a library that is not installed; the "
        "daemon would publish virtual-s1 as a broken device ($state = alert)\n")


def test_an_unknown_option_of_a_plugin_that_loads_is_refused(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", "[[virtual]]\ntype = 'test-echo'\nid = 'e1'\n"
                                             "foo = 1\n")
    result = check(cfg)
    assert (result.returncode, result.stdout, result.stderr) == (
        2, "", f"gatewayd: configuration error: {cfg}: virtual[0].foo: unknown option "
               "(known: api_key, greeting, max_length)\n")


@pytest.mark.parametrize("device", ["", "[[virtual]]\ntype = 'test-echo'\nid = 'e1'\n"])
def test_the_plugins_discovery_warnings_are_check_config_warnings(
        tmp_path: Path, device: str) -> None:
    other = tmp_path / "site" / "other_plugins-1.0.dist-info"
    other.mkdir(parents=True)
    (other / "METADATA").write_text("Metadata-Version: 2.1\nName: other-plugins\n"
                                    "Version: 1.0\n")
    (other / "entry_points.txt").write_text(
        "[gatewayd.virtual_devices]\ntest-echo = gatewayd_test_plugins:EchoDevice\n")
    cfg = write_config(tmp_path / "c.toml", device)
    result = check(cfg, tmp_path / "site")
    assert (result.returncode, result.stdout) == (0, f"{cfg}: OK\n"), result.stderr
    assert result.stderr == IGNORED + (
        "gatewayd: warning: virtual device type 'test-echo' is provided twice "
        "(gatewayd-test-plugins and other-plugins); using gatewayd-test-plugins\n")


def test_the_running_daemon_still_isolates_a_plugin_that_does_not_load(
        tmp_path: Path) -> None:
    """Only the check refuses it: the hub runs, with that device broken; what the plugins'
    discovery says is in its log once, as every other line (it was also a bare line on
    stderr before the log was set up)."""
    cfg = write_config(tmp_path / "g.toml", ethernet_config(
        tmp_path, "[[virtual]]\ntype = 'test-unimportable'\nid = 's1'\n"))
    gw = Gatewayd(["--config", str(cfg)],
                  env={"PYTHONPATH": os.pathsep.join([str(PLUGIN_DIST), str(REPO)])})
    try:
        wait_for(lambda: "virtual devices: 0 of 1 running without faults" in gw.output()
                 or gw.proc.poll() is not None, 30, "the virtual devices started")
        assert gw.proc.poll() is None, gw.output()
    finally:
        assert gw.stop() == 0, gw.output()
    said = [line for line in gw.output().splitlines() if "the name is built in" in line]
    assert len(said) == 1 and said[0].endswith(
        " WARNING gatewayd.virtual.plugin: virtual device type 'system' from "
        "gatewayd-test-plugins ignored: the name is built in"), said
    assert ("ERROR   gatewayd.virtual.host.s1: virtual-s1: plugin 'test-unimportable' "
            "(gatewayd_test_plugins.unimportable:UnimportableDevice) does not load: "
            "ImportError: ") in gw.output()
