"""A config file that holds a secret (a cloud token, the admin password) and that other
users of the hub can read: ``gatewayd --check-config`` and the daemon's start warn, naming
the file and the keys. ``sudoedit`` of a new drop-in under umask 022 makes it 0644; the
packaged drop-in directory (root:gatewayd 0750) keeps such a file from others, a
directory others can pass does not. Real files, real modes, in a directory another user
can reach (pytest's tmp_path is private to its user, so nothing in it is exposed)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gatewayd.config import Config
from gatewayd.runtime.tomlfiles import secret_keys
from tests.helpers import NOBODY, ROOT_ONLY, Gatewayd, ethernet_config, reachable_tmp

DOCS = Path(__file__).resolve().parent.parent / "docs"


def check_config(path: Path, service_user: str = "gatewayd") -> subprocess.CompletedProcess[str]:
    """``gatewayd --check-config``, with ``service_user`` as the unit's user."""
    code = ("import sys; import gatewayd.cli as cli; cli.SERVICE_USER = sys.argv[1]; "
            "sys.exit(cli.main(sys.argv[2:]))")
    return subprocess.run([sys.executable, "-c", code, service_user, "--config", str(path),
                           "--check-config"], capture_output=True, text=True, timeout=30)


def owners(path: Path) -> str:
    import grp
    import pwd

    st = path.stat()
    return f"{pwd.getpwuid(st.st_uid).pw_name}:{grp.getgrgid(st.st_gid).gr_name}"


def warning(path: Path, keys: str, who: str, mode: str, service_group: str = "gatewayd") -> str:
    return (f"gatewayd: warning: {path}: {keys}: {who} can read these secrets ({mode} "
            f"{owners(path)}); as root: chown root:{service_group} {path} && chmod 0640 "
            f"{path}\n")


def test_every_secret_of_the_schema_is_looked_for_and_documented() -> None:
    keys = secret_keys(Config)
    assert keys == ["hub.setup_code", "hotspot.password", "portal.admin_password",
                    "cloud.token", "provisioning.token", "provisioning.enroll_password"]
    documented = " ".join((DOCS / "interfaces.md").read_text().split())
    assert "secret (" + ", ".join(f"`{k}`" for k in keys) in documented


def test_check_config_warns_of_secrets_in_a_file_every_user_can_read() -> None:
    with reachable_tmp() as tmp:
        main = tmp / "gatewayd.toml"
        # The packaged file sets every key, its secrets empty: nothing secret in it.
        main.write_text("[hub]\nsetup_code = ''\n[cloud]\ntoken = ''\n")
        main.chmod(0o644)
        dropins = tmp / "gatewayd.toml.d"
        dropins.mkdir(mode=0o755)
        vendor = dropins / "10-vendor.toml"
        # What `sudoedit` of a new file makes under umask 022.
        vendor.write_text("[hub]\nproduct = 'Acme hub'\n[cloud]\ntoken = 'vendor-token-1'\n"
                          "[portal]\nadmin_password = 'hunter22'\n")
        vendor.chmod(0o644)
        plain = dropins / "20-radio.toml"
        plain.write_text("[zigbee]\nchannel = 20\n")
        plain.chmod(0o644)
        result = check_config(main)
        assert (result.returncode, result.stdout) == (
            0, f"{main}: OK\n{vendor}: OK\n{plain}: OK\n")
        assert result.stderr == warning(vendor, "portal.admin_password, cloud.token",
                                        "every user", "-rw-r--r--")
        assert "vendor-token-1" not in result.stderr and "hunter22" not in result.stderr

        # The packaged directory's mode keeps the same file from every other user.
        dropins.chmod(0o750)
        result = check_config(main)
        assert (result.returncode, result.stderr) == (0, "")
        dropins.chmod(0o755)
        # And so does the advice.
        vendor.chmod(0o640)
        result = check_config(main)
        assert (result.returncode, result.stderr) == (0, "")

        # The main file is looked at too, and a secret in it that a drop-in replaces is
        # still in it.
        main.write_text("[hotspot]\npassword = 'hotspot-pass'\n[provisioning]\n"
                        "enroll_password = 'enroll-pass'\n")
        vendor.write_text("[hotspot]\npassword = 'other-pass'\n")
        result = check_config(main)
        assert result.returncode == 0
        assert result.stderr == warning(main, "hotspot.password, provisioning.enroll_password",
                                        "every user", "-rw-r--r--")


@pytest.mark.skipif(os.geteuid() != 0, reason=ROOT_ONLY)
def test_check_config_warns_of_secrets_a_group_with_other_members_can_read() -> None:
    """root:nogroup 0640: nobody (whose group it is) reads the token. The same group as the
    service's own (here nobody's) is what the package sets up: no warning."""
    import grp

    nogroup = grp.getgrgid(NOBODY).gr_name
    with reachable_tmp() as tmp:
        main = tmp / "gatewayd.toml"
        main.write_text("[cloud]\ntoken = 'vendor-token-1'\n")
        os.chown(main, 0, NOBODY)
        main.chmod(0o640)
        result = check_config(main)
        assert (result.returncode, result.stdout) == (0, f"{main}: OK\n")
        assert result.stderr == warning(main, "cloud.token", f"the group {nogroup}'s members",
                                        "-rw-r-----")
        result = check_config(main, service_user="nobody")
        assert (result.returncode, result.stdout, result.stderr) == (0, f"{main}: OK\n", "")
        os.chown(main, 0, 0)
        result = check_config(main)
        assert (result.returncode, result.stderr) == (0, "")


def test_the_daemon_warns_at_its_start_and_runs() -> None:
    """A configuration that loaded before still loads (interfaces.md, section 1)."""
    with reachable_tmp() as tmp:
        main = tmp / "gatewayd.toml"
        main.write_text(ethernet_config(tmp))
        main.chmod(0o644)
        (tmp / "gatewayd.toml.d").mkdir(mode=0o755)
        vendor = tmp / "gatewayd.toml.d" / "10-vendor.toml"
        vendor.write_text("[hub]\nsetup_code = '12345678'\n")
        vendor.chmod(0o644)
        daemon = Gatewayd(["--config", str(main)])
        try:
            daemon.wait_socket(tmp / "run" / "control.sock")
        finally:
            code = daemon.stop()
        output = daemon.output()
        expected = warning(vendor, "hub.setup_code", "every user", "-rw-r--r--").removeprefix(
            "gatewayd: warning: ").rstrip("\n")
    assert code == 0, output
    assert re.search(rf"WARNING.*{re.escape(expected)}$", output, re.M), output
    assert "12345678" not in output

