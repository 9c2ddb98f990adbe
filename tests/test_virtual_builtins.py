"""The built-in virtual devices in isolation: system readers, the command runner, the timer."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from gatewayd.config import ConfigError, parse_config
from gatewayd.virtual import Registry
from gatewayd.virtual.command import CommandFailed, run_command
from gatewayd.virtual.host import VirtualDevices
from gatewayd.virtual.planning import check_config
from gatewayd.virtual.system import SystemDevice, read_disk, read_load
from tests.test_hardware import run, until
from tests.test_virtual_host import FakePublisher

pytestmark = pytest.mark.timeout(60)
PY = sys.executable


def toml_list(argv: list[str]) -> str:
    return "[" + ", ".join(f"'''{a}'''" for a in argv) + "]"


def host(text: str, pub: FakePublisher, registry: Registry | None = None) -> VirtualDevices:
    cfg = parse_config(tomllib.loads(text), "test.toml")
    return VirtualDevices(cfg.virtual, pub, registry=registry or Registry(group=None),
                          call_timeout=3)


# ---- system -----------------------------------------------------------------------------------

def fake_proc(tmp_path: Path) -> tuple[Path, Path]:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "loadavg").write_text("0.52 0.58 0.59 2/391 12345\n")
    (proc / "uptime").write_text("3600.25 7000.00\n")
    (proc / "meminfo").write_text("MemTotal:  1000000 kB\nMemFree:  100000 kB\n"
                                  "MemAvailable:  250000 kB\n")
    thermal = tmp_path / "thermal"
    (thermal / "thermal_zone0").mkdir(parents=True)
    (thermal / "thermal_zone0" / "type").write_text("cpu-thermal\n")
    (thermal / "thermal_zone0" / "temp").write_text("48312\n")
    return proc, thermal


def test_system_readers(tmp_path: Path) -> None:
    proc, _ = fake_proc(tmp_path)
    assert read_load(proc) == (0.52, 0.58, 0.59)
    assert read_load(tmp_path / "nowhere") is None
    disk = read_disk(str(tmp_path))
    assert disk is not None and 0 <= disk <= 100
    assert read_disk(str(tmp_path / "nowhere")) is None


def test_system_device_values_and_missing_sources(tmp_path: Path) -> None:
    proc, thermal = fake_proc(tmp_path)

    class FakeSystem(SystemDevice):
        pass

    FakeSystem.proc, FakeSystem.thermal = proc, thermal

    class NoThermal(SystemDevice):
        pass

    NoThermal.proc, NoThermal.thermal = proc, tmp_path / "no-thermal"
    pub = FakePublisher()

    async def main() -> None:
        reg = Registry(builtins={}, extra={"system": FakeSystem, "bare": NoThermal}, group=None)
        vd = host('[[virtual]]\ntype = "system"\nid = "sys"\ninterval = 1\ndisk = "/"\n'
                  '[[virtual]]\ntype = "bare"\nid = "bare"\n', pub, reg)
        await vd.start()
        node = pub.devices["virtual-sys"].nodes["system"]
        values = {pid: p.value for pid, p in node.properties.items()}
        assert values["cpu-temperature"] == 48.3 and values["uptime"] == 3600
        assert values["memory"] == 75
        assert (values["load-1"], values["load-5"], values["load-15"]) == (0.52, 0.58, 0.59)
        assert 0 <= values["disk"] <= 100
        assert node.properties["cpu-temperature"].unit == "°C"
        assert node.properties["memory"].format == "0:100"
        # No thermal zone here: the property is left out rather than left empty.
        assert "cpu-temperature" not in pub.devices["virtual-bare"].nodes["system"].properties
        (proc / "uptime").write_text("3700.0 7000.0\n")
        await until(lambda: node.properties["uptime"].value == 3700, timeout=3,
                    what="the next poll")
        await vd.stop()

    run(main())


def test_a_system_disk_that_cannot_be_read_is_an_alert_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "dataa"  # a mistyped mount point
    pub = FakePublisher()

    async def main() -> None:
        vd = host(f'[[virtual]]\ntype = "system"\nid = "sys"\ninterval = 1\n'
                  f'disk = "{missing}"\n', pub)
        await vd.start()
        await until(lambda: pub.state("virtual-sys") == "alert", what="the alert")
        assert vd.devices()[0]["error"] == f"the disk {missing} cannot be read"
        node = pub.devices["virtual-sys"].nodes["system"]
        assert "disk" not in node.properties and "uptime" in node.properties
        await vd.stop()

    run(main())


# ---- the command runner -------------------------------------------------------------------------

def test_commands_get_an_argument_list_never_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = f"$(touch {marker}); `touch {marker}` | touch {marker}"

    async def main() -> None:
        result = await run_command([PY, "-c", "import sys; print(sys.argv[1])", hostile],
                                   timeout=10, max_output=4096)
        assert result.returncode == 0
        assert result.stdout.decode().strip() == hostile

    run(main())
    assert not marker.exists()


def test_command_limits_time_output_and_reports_errors(tmp_path: Path) -> None:
    async def main() -> None:
        # A grandchild in the same process group must not outlive the timeout either.
        pidfile = tmp_path / "grandchild.pid"
        script = ("import subprocess, sys, time; "
                  "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
                  f"open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(60)")
        with pytest.raises(CommandFailed) as err:
            await run_command([PY, "-c", script], timeout=1.0, max_output=100)
        assert err.value.code == "TIMEOUT" and "within 1 s" in err.value.message
        grandchild = int(pidfile.read_text())
        await until(lambda: not _alive(grandchild), what="the grandchild to be killed")

        with pytest.raises(CommandFailed, match="printed more than 100 bytes"):
            await run_command([PY, "-c", "print('x' * 100000)"], timeout=10, max_output=100)
        with pytest.raises(CommandFailed, match="command not found"):
            await run_command(["/nonexistent/tool"], timeout=1, max_output=100)
        result = await run_command(
            [PY, "-c", "import sys; sys.stderr.write('\\n  first\\nsecond\\n' + 'e' * 100000);"
                       " sys.exit(4)"], timeout=10, max_output=100)
        assert result.returncode == 4 and result.first_error_line() == "first"
        assert len(result.stderr) <= 4096

    run(main())


def test_what_a_command_leaves_running_is_killed_when_it_exits(tmp_path: Path) -> None:
    # A script that starts a helper in the background and exits: one more process per run
    # would pile up and outlive the daemon.
    pidfile = tmp_path / "background.pid"
    script = ("import subprocess, sys; "
              "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], "
              "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
              f"open({str(pidfile)!r}, 'w').write(str(p.pid)); print(1)")

    async def main() -> None:
        result = await run_command([PY, "-c", script], timeout=10, max_output=100)
        assert result.returncode == 0 and result.stdout.strip() == b"1"
        await until(lambda: not _alive(int(pidfile.read_text())),
                    what="the background process to be killed")

    run(main())


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_command_that_prints_too_much_fails_at_once_and_leaves_no_pipe_open(
        tmp_path: Path) -> None:
    # Half a megabyte lands in a large pipe before the daemon reads any of it: more than the
    # reader buffers before it pauses. Then the command keeps printing.
    script = ("import fcntl, os\n"
              "fcntl.fcntl(1, 1031, 1 << 20)\n"  # F_SETPIPE_SZ: a 1 MiB pipe
              "os.write(1, b'x' * (1 << 19))\n"
              "while True: os.write(1, b'x' * 65536)\n")
    argv = [PY, "-c", script]
    pub = FakePublisher()

    async def main() -> None:
        before = _open_fds()
        vd = host(f'[[virtual]]\ntype = "command"\nid = "bigout"\ninterval = 60\n'
                  f'timeout = 2\ncommand = {toml_list(argv)}\n', pub)
        await vd.start()
        await until(lambda: vd.devices()[0]["error"], what="the failed run")
        assert vd.devices()[0]["error"] == f"{os.path.basename(PY)} printed more than 4096 bytes"
        assert pub.state("virtual-bigout") == "alert"
        await vd.stop()
        await until(lambda: _open_fds() == before, what="every pipe to be closed")

    run(main())


def test_a_command_that_leaves_a_background_child_succeeds_and_the_child_is_killed(
        tmp_path: Path) -> None:
    # The background child keeps the command's stdout open after the command has exited.
    sensor_pid, switch_pid = tmp_path / "sensor.pid", tmp_path / "switch.pid"
    sensor = ["/bin/sh", "-c", f"sleep 300 & echo $! > {sensor_pid}; echo 42"]
    switch = ["/bin/sh", "-c", f"sleep 300 & echo $! > {switch_pid}; echo started; exit 0"]
    pub = FakePublisher()

    async def main() -> None:
        vd = host(f'[[virtual]]\ntype = "command"\nid = "bg"\ndatatype = "integer"\n'
                  f'interval = 60\ntimeout = 2\ncommand = {toml_list(sensor)}\n'
                  f'[[virtual]]\ntype = "command"\nid = "bg-switch"\nmode = "switch"\n'
                  f'timeout = 2\non = {toml_list(switch)}\noff = {toml_list(switch)}\n', pub)
        await vd.start()
        value = pub.devices["virtual-bg"].find("sensor/value")
        await until(lambda: value.value is not None or vd.devices()[0]["error"],
                    what="the sensor's first run")
        assert vd.devices()[0]["error"] is None and value.value == 42
        assert pub.state("virtual-bg") == "ready"
        pub.command("virtual-bg-switch", "switch/state", "true")
        await until(lambda: pub.accepted or pub.rejected, what="the answer to the /set")
        assert pub.rejected == []
        assert pub.accepted == [("virtual-bg-switch", "switch/state", True)]
        sensor_child, switch_child = int(sensor_pid.read_text()), int(switch_pid.read_text())
        await until(lambda: not _alive(sensor_child), what="the sensor's leftover to be killed")
        await until(lambda: not _alive(switch_child), what="the switch's leftover to be killed")
        await vd.stop()

    run(main())


def test_a_leftover_that_left_the_process_group_does_not_hold_the_run(tmp_path: Path) -> None:
    # It cannot be killed with the group and keeps the output open: the run ends anyway,
    # with what the command printed, and closes its end of the pipes.
    pidfile = tmp_path / "escaped.pid"
    argv = [PY, "-c", "import subprocess\n"
                      "p = subprocess.Popen(['sleep', '30'], start_new_session=True)\n"
                      f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
                      "print(42)"]
    pub = FakePublisher()

    async def main() -> None:
        before = _open_fds()
        vd = host(f'[[virtual]]\ntype = "command"\nid = "escape"\ndatatype = "integer"\n'
                  f'interval = 60\ntimeout = 2\ncommand = {toml_list(argv)}\n', pub)
        await vd.start()
        value = pub.devices["virtual-escape"].find("sensor/value")
        try:
            await until(lambda: value.value is not None or vd.devices()[0]["error"],
                        what="the sensor's first run")
            assert vd.devices()[0]["error"] is None and value.value == 42
            await vd.stop()
            await until(lambda: _open_fds() == before, what="every pipe to be closed")
        finally:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pidfile.read_text()), signal.SIGKILL)

    run(main())


def test_a_switch_refuses_the_sensor_only_datatype() -> None:
    text = ('[[virtual]]\ntype = "command"\nid = "plug"\nmode = "switch"\n'
            'on = ["true"]\noff = ["true"]\ndatatype = "integer"\n')
    with pytest.raises(ConfigError) as err:
        check_config(parse_config(tomllib.loads(text), "c.toml"))
    # What gatewayd --check-config prints.
    assert str(err.value) == 'c.toml: virtual[0].datatype: only for mode = "sensor"'


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie waiting for its parent counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_command_env_hides_the_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    pub = FakePublisher()
    argv = [PY, "-c", "import os; print(os.environ.get('NOTIFY_SOCKET', 'none') + ' ' "
                      "+ os.environ['GATEWAYD_DEVICE_ID'])"]

    async def main() -> None:
        vd = host(f'[[virtual]]\ntype = "command"\nid = "env"\ncommand = {toml_list(argv)}\n',
                  pub)
        await vd.start()
        prop = pub.devices["virtual-env"].find("sensor/value")
        await until(lambda: prop.value, what="the first reading")
        assert prop.value == "none virtual-env"
        await vd.stop()

    run(main())


def test_command_sensor_failure_alerts_and_recovers(tmp_path: Path) -> None:
    source = tmp_path / "value"
    source.write_text("21.5\n")
    argv = [PY, "-c", f"print(open({str(source)!r}).read())"]
    pub = FakePublisher()

    async def main() -> None:
        vd = host(f'[[virtual]]\ntype = "command"\nid = "temp"\ndatatype = "float"\n'
                  f'unit = "°C"\ninterval = 0.1\ncommand = {toml_list(argv)}\n', pub)
        await vd.start()
        prop = pub.devices["virtual-temp"].find("sensor/value")
        await until(lambda: prop.value == 21.5, what="the first reading")
        source.write_text("warm\n")
        await until(lambda: pub.state("virtual-temp") == "alert", what="the alert")
        assert prop.value == 21.5  # the last good value stays
        # Why, where a person looks: the command's failure, as the device words it.
        assert vd.devices()[0]["error"] == "unusable output: value: expected a number, got 'warm'"
        assert vd.status()["faulty"] == ["virtual-temp"]
        source.write_text("22\n")
        await until(lambda: pub.state("virtual-temp") == "ready" and prop.value == 22.0,
                    what="recovery")
        assert vd.devices()[0]["error"] is None and vd.status()["faulty"] == []
        await vd.stop()

    run(main())


def test_command_switch_state_command_and_set_env(tmp_path: Path) -> None:
    state_file = tmp_path / "state"
    state_file.write_text("on")
    write = [PY, "-c", f"import os; open({str(state_file)!r}, 'w').write("
                       "'on' if os.environ['GATEWAYD_VALUE'] == 'true' else 'off')"]
    state = [PY, "-c", f"import sys; sys.exit(0 if open({str(state_file)!r}).read() == 'on' "
                       "else 1)"]
    pub = FakePublisher()

    async def main() -> None:
        vd = host(f'[[virtual]]\ntype = "command"\nid = "fan"\nmode = "switch"\n'
                  f'interval = 0.1\non = {toml_list(write)}\noff = {toml_list(write)}\n'
                  f'state = {toml_list(state)}\n', pub)
        await vd.start()
        prop = pub.devices["virtual-fan"].find("switch/state")
        assert prop.settable
        await until(lambda: prop.value is True, what="the state command's reading")
        pub.command("virtual-fan", "switch/state", "false")
        await until(lambda: pub.accepted, what="the echo")
        assert state_file.read_text() == "off"
        state_file.write_text("on")  # switched by hand
        await until(lambda: prop.value is True, what="the state command to notice")
        await vd.stop()

    run(main())


def test_a_switch_set_does_not_wait_for_a_state_check_in_progress(tmp_path: Path) -> None:
    # The first state check hangs; a /set must not spend its time waiting for it (the host
    # gives a /set 3 s here, the check would take 6).
    started, state_file = tmp_path / "started", tmp_path / "state"
    state_file.write_text("off")
    state = [PY, "-c", "import os, sys, time\n"
                       f"if not os.path.exists({str(started)!r}):\n"
                       f"    open({str(started)!r}, 'w').write(str(os.getpid())); time.sleep(6)\n"
                       f"sys.exit(0 if open({str(state_file)!r}).read() == 'on' else 1)"]
    write = [PY, "-c", f"import os; open({str(state_file)!r}, 'w').write("
                       "'on' if os.environ['GATEWAYD_VALUE'] == 'true' else 'off')"]
    pub = FakePublisher()

    async def main() -> None:
        vd = host(f'[[virtual]]\ntype = "command"\nid = "printer"\nmode = "switch"\n'
                  f'interval = 0.1\ntimeout = 7\non = {toml_list(write)}\n'
                  f'off = {toml_list(write)}\nstate = {toml_list(state)}\n', pub)
        await vd.start()
        await until(lambda: started.exists() and started.read_text(),
                    what="the state check to start")
        pub.command("virtual-printer", "switch/state", "true")
        await until(lambda: pub.accepted or pub.rejected, what="the answer to the /set")
        assert pub.rejected == [] and state_file.read_text() == "on"
        assert pub.accepted[0][1:] == ("switch/state", True)
        await until(lambda: not _alive(int(started.read_text())),
                    what="the interrupted state check to be killed")
        prop = pub.devices["virtual-printer"].find("switch/state")
        await until(lambda: prop.value is True and pub.state("virtual-printer") == "ready",
                    what="the next state check")
        await vd.stop()

    run(main())


# ---- the timer ----------------------------------------------------------------------------------

def test_timer_counts_down_fires_and_repeats() -> None:
    pub = FakePublisher()

    async def main() -> None:
        vd = host('[[virtual]]\ntype = "timer"\nid = "tea"\nduration = 0.3\n'
                  'update_interval = 0.1\n', pub)
        await vd.start()
        dev = pub.devices["virtual-tea"]
        assert dev.find("timer/running").value is False
        assert dev.find("timer/fired").retained is False
        pub.command("virtual-tea", "timer/running", "true")
        await until(lambda: pub.accepted, what="the echo")
        await until(lambda: dev.find("timer/running").value is False, what="expiry")
        fired = [v for d, p, v in pub.values if p == "timer/fired"]
        assert len(fired) == 1 and fired[0].endswith("Z")
        remaining = [v for d, p, v in pub.values if p == "timer/remaining"]
        assert 0.0 < remaining[0] <= 0.3 and remaining[-1] == 0.0
        assert remaining == sorted(remaining, reverse=True)

        # repeat: fires again and again until cancelled
        pub.command("virtual-tea", "timer/repeat", "true")
        pub.command("virtual-tea", "timer/duration", "0.1")
        await until(lambda: len(pub.accepted) == 3, what="the echoes")
        pub.command("virtual-tea", "timer/running", "true")
        await until(lambda: sum(1 for _, p, _ in pub.values if p == "timer/fired") >= 4,
                    what="repeated firing")
        timer: Any = vd.hosted["virtual-tea"].plugin
        countdown = timer._countdown
        assert countdown is not None
        pub.command("virtual-tea", "timer/running", "false")
        await until(lambda: dev.find("timer/running").value is False and len(pub.accepted) == 5)
        count = sum(1 for _, p, _ in pub.values if p == "timer/fired")
        await until(countdown.done, what="the countdown to end")  # cancelled, not sleeping on
        assert countdown.cancelled() and timer._countdown is None
        assert sum(1 for _, p, _ in pub.values if p == "timer/fired") == count
        pub.command("virtual-tea", "timer/duration", "0")
        await until(lambda: pub.rejected, what="a refused duration")
        assert pub.rejected[0][2] == "VALIDATION"
        await vd.stop()

    run(main())


def test_timer_autostart_and_stop_cancels() -> None:
    pub = FakePublisher()

    async def main() -> None:
        vd = host('[[virtual]]\ntype = "timer"\nid = "tt"\nduration = 60\nautostart = true\n',
                  pub)
        await vd.start()
        dev = pub.devices["virtual-tt"]
        await until(lambda: dev.find("timer/remaining").value > 59, what="counting")
        assert dev.find("timer/running").value is True
        await vd.stop()
        timer: Any = vd.hosted["virtual-tt"].plugin
        assert timer._countdown is None

    run(main())
