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
            "requested address): set an address of this hub, or 0.0.0.0 for all") in output
    assert "Traceback" not in output


def test_a_portal_listen_host_name_is_refused_at_check_time(tmp_path: Path) -> None:
    main = tmp_path / "gatewayd.toml"
    main.write_text("[portal]\nlisten = 'no-such-host.invalid'\n")
    result = check_config(main)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (f"gatewayd: configuration error: {main}: portal.listen: must be "
                             "an IPv4 address of this hub, such as 0.0.0.0 (all of them) or "
                             "192.168.4.1, got 'no-such-host.invalid'\n")


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
        drop_in.chmod(0o644)
        result = check_config_as_root_for(user, main)
        assert (result.returncode, result.stderr) == (0, "")
        assert result.stdout == f"{main}: OK\n{drop_in}: OK\n"
