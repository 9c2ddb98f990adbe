"""The emulator's control interface, state file and ``gatewayd-ncp-sim`` entry point."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gatewayd.simulator.ncp.control import ControlClient, ControlError
from gatewayd.simulator.ncp.emulator import Emulator
from gatewayd.simulator.ncp.state import StateFileError, Store
from tests.helpers import REPO, run_async

pytestmark = pytest.mark.timeout(60)


def test_control_errors_name_what_was_wrong(tmp_path: Path) -> None:
    async def main() -> None:
        emu = await Emulator(tmp_path / "ncp.json").start()
        async with ControlClient(emu.control_port or 0) as ctl:
            status = await ctl.call("status")
            assert status["network"] == {
                "up": False, "formed": False, "node_id": "0xFFFE",
                "eui64": status["network"]["eui64"], "host_connected": False,
                "permit_open": False}
            cases = {
                '{"op": "bogus"}': "unknown op 'bogus'",
                "not json": "not JSON",
                '[1, 2]': "a request is a JSON object",
                '{"op": "join", "kind": "lamp"}': "kind: must be one of button, contact, "
                                                  "light, motion, plug, rgb-light, th-sensor, "
                                                  "water-meter, got 'lamp'",
                '{"op": "join", "kind": "plug"}': "permit join is closed",
                '{"op": "leave"}': "leave: ieee is required (text such as "
                                   "00:12:4b:00:01:02:03:04)",
                '{"op": "leave", "ieee": "nonsense"}': "not an IEEE address",
                '{"op": "leave", "ieee": "00:11:22:33:44:55:66:77"}': "no simulated device",
                '{"op": "fault"}': "fault needs one of",
                '{"op": "fault", "noise": 1.5}': "noise rate must be",
                '{"op": "fault", "delay_ms": -1}': "delay_ms must be",
                '{"op": "report", "ieee": "00:11:22:33:44:55:66:77", "cluster": "on_off",'
                ' "attributes": {"on_off": 1}}': "network is not up",
            }
            for line, error in cases.items():
                reader, writer = await asyncio.open_connection("127.0.0.1", emu.control_port)
                writer.write(line.encode() + b"\n")
                reply = json.loads(await reader.readline())
                writer.close()
                assert reply["ok"] is False, line
                assert error in reply["error"], (line, reply)
                assert "Traceback" not in reply["error"]
            reply = await ctl.request({"op": "kinds", "id": 7})
            assert reply == {"id": 7, "ok": True, "result": [
                "button", "contact", "light", "motion", "plug", "rgb-light", "th-sensor",
                "water-meter"]}
            paired = await ctl.call("join", kind="plug", wait=True)
            assert paired["pairing"] is True
            assert await ctl.call("fault", noise=0.02, delay_ms=5) == {"noise": 0.02,
                                                                       "delay_ms": 5.0}
            counters = await ctl.call("counters")
            assert (counters["noise"], counters["delay_ms"]) == (0.02, 5.0)
            assert await ctl.call("fault", drop=True) == {"drop": False}  # no host
            with pytest.raises(ControlError, match="unknown op"):
                await ctl.call("nope")
        await emu.stop()

    run_async(main(), 30)


IEEE = "00:11:22:33:44:55:66:77"
# What a user may get wrong in a request, and the answer, whole: it names the argument and
# never quotes Python (a missing positional argument, 'list' object has no attribute...).
BAD_ARGUMENTS = {
    '{"op": "join"}':
        "join: kind is required (one of button, contact, light, motion, plug, rgb-light, "
        "th-sensor, water-meter)",
    '{"op": "join", "kind": ["plug"]}':
        "kind: must be one of button, contact, light, motion, plug, rgb-light, th-sensor, "
        "water-meter, got an array",
    '{"op": "join", "kind": "plug", "wait": "yes"}': "wait: must be true or false, got 'yes'",
    '{"op": "device"}': "device: ieee is required (text such as 00:12:4b:00:01:02:03:04)",
    '{"op": "device", "ieee": ["x"]}':
        "ieee: must be text such as 00:12:4b:00:01:02:03:04, got an array",
    f'{{"op": "report", "ieee": "{IEEE}", "cluster": "on_off", "attributes": "x"}}':
        'attributes: must be an object of attribute names and raw values, such as '
        '{"on_off": 1}, got \'x\'',
    f'{{"op": "report", "ieee": "{IEEE}", "attributes": {{"on_off": 1}}}}':
        "report: cluster is required (text: a zigpy cluster name such as on_off)",
    f'{{"op": "command", "ieee": "{IEEE}", "cluster": "on_off", "command": 7}}':
        "command: must be text: a zigpy command name such as toggle, got a number",
    f'{{"op": "set_link", "ieee": "{IEEE}", "lqi": "high"}}':
        "lqi: must be an integer from 0 to 255, got 'high'",
    # Before: 300 and -1 were taken, as 255 and 0.
    f'{{"op": "set_link", "ieee": "{IEEE}", "lqi": 300}}':
        "lqi: must be an integer from 0 to 255, got a number",
    f'{{"op": "set_link", "ieee": "{IEEE}", "lqi": -1}}':
        "lqi: must be an integer from 0 to 255, got a number",
    f'{{"op": "silence", "ieee": "{IEEE}", "colour": "red"}}':
        "silence takes no colour (it takes ieee, silent)",
    '{"op": "stream", "count": 5, "start_at": "soon"}':
        "start_at: must be a number (the event loop's clock), or null for now, got 'soon'",
    '{"op": "fault", "noise": "lots"}':
        "noise: must be a number from 0 up to 1, such as 0.01, got 'lots'",
    '{"op": "kinds", "all": true}': "kinds takes no all (it takes nothing)",
}


def test_bad_arguments_are_named_and_python_is_never_quoted(tmp_path: Path) -> None:
    async def main() -> None:
        emu = await Emulator(tmp_path / "ncp.json").start()
        reader, writer = await asyncio.open_connection("127.0.0.1", emu.control_port)
        try:
            for line, error in BAD_ARGUMENTS.items():
                writer.write(line.encode() + b"\n")
                assert json.loads(await reader.readline()) == {"ok": False, "error": error}
        finally:
            writer.close()
            await emu.stop()

    run_async(main(), 30)


ONE_REQUEST = 'send one JSON object per line, such as {"op": "status"}'
# Lines that are not a request, and the answer, whole: what was wrong and what to send,
# never the JSON parser's text ("Expecting value: line 1 column 1 (char 0)").
NOT_REQUESTS = {
    b"not json": f"the request is not JSON: {ONE_REQUEST}",
    b'{"op": "status",}': f"the request is not JSON: {ONE_REQUEST}",
    b'{"op": "st\xffatus"}': f"the request is not JSON: {ONE_REQUEST}",  # not UTF-8
    b"[" * 50_000 + b"]" * 50_000: f"the request nests deeper than 32 levels: {ONE_REQUEST}",
}


def test_a_line_that_is_not_a_request_is_answered_and_the_connection_goes_on(
        tmp_path: Path) -> None:
    async def main() -> None:
        emu = await Emulator(tmp_path / "ncp.json").start()
        reader, writer = await asyncio.open_connection("127.0.0.1", emu.control_port)
        try:
            for line, error in NOT_REQUESTS.items():
                writer.write(line + b"\n")
                assert json.loads(await reader.readline()) == {"ok": False, "error": error}
            writer.write(b'{"op": "kinds"}\n')  # the same connection still takes requests
            assert json.loads(await reader.readline())["ok"] is True
        finally:
            writer.close()
            await emu.stop()

    run_async(main(), 30)


def test_an_unexpected_failure_is_a_fixed_internal_error_with_details_in_the_log(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        emu = await Emulator(tmp_path / "ncp.json").start()

        def broken() -> None:
            raise AttributeError("'NoneType' object has no attribute 'secret_detail'")

        emu.control.ops["devices"] = broken
        async with ControlClient(emu.control_port or 0) as ctl:
            reply = await ctl.request({"op": "devices"})
        await emu.stop()
        assert reply == {"ok": False, "error": "internal error in devices; the details are "
                                               "in the emulator's log"}

    run_async(main(), 30)
    failed = [r for r in caplog.records if r.getMessage() == "control: devices failed"]
    assert failed and failed[0].exc_info is not None
    assert "secret_detail" in str(failed[0].exc_info[1])


def test_state_file_is_written_atomically_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "ncp.json"
    store = Store(path)
    nvram = store.load()
    store.save(nvram)
    assert json.loads(path.read_text())["eui64"] == nvram.eui64
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in tmp_path.iterdir()] == ["ncp.json"]  # no temp file left
    assert Store(path).load().eui64 == nvram.eui64
    path.write_text("{not json")
    with pytest.raises(StateFileError, match="delete it"):
        Store(path).load()


def test_a_write_from_an_older_snapshot_never_replaces_a_newer_one(tmp_path: Path) -> None:
    """The timed save writes from a thread (ncp.py ``_save_in_thread``): a snapshot taken
    earlier but written later must not bring older state back."""
    path = tmp_path / "ncp.json"
    store = Store(path)
    nvram = store.load()
    nvram.node_id = 0x1111
    older = store.snapshot(nvram)
    nvram.node_id = 0x2222
    newer = store.snapshot(nvram)
    assert older[0]["node_id"] == 0x1111  # a snapshot is a copy, not a view
    store.write(*newer)
    store.write(*older)
    assert Store(path).load().node_id == 0x2222 and store.saves == 1
    nvram.node_id = 0x3333
    store.save(nvram)  # a synchronous save is the newest of all
    assert Store(path).load().node_id == 0x3333 and store.saves == 2


@pytest.mark.slow
def test_console_entry_prints_its_ports_and_stops_cleanly(tmp_path: Path) -> None:
    state = tmp_path / "ncp.json"
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gatewayd.simulator.ncp", "--port", "0", "--state",
         str(state), "--device", "plug", "--noise", "0.001", "--seed", "3",
         "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env, text=True, cwd=tmp_path)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("gatewayd-ncp-sim: ncp tcp://127.0.0.1:"), line
        control_port = int(line.rsplit(":", 1)[1])

        async def main() -> None:
            async with ControlClient(control_port) as ctl:
                status = await ctl.call("status")
                assert status["devices"][0]["pairing"] is True
                assert status["counters"]["noise"] == 0.001
        run_async(main(), 20)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert json.loads(state.read_text())["network"] is None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


@pytest.mark.slow
def test_console_entry_rejects_bad_arguments(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-m", "gatewayd.simulator.ncp", "--state",
                             str(bad)], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 2
    assert "not an NCP emulator state file" in result.stderr
    result = subprocess.run([sys.executable, "-m", "gatewayd.simulator.ncp", "--state",
                             str(bad), "--device", "lamp"], capture_output=True, text=True,
                            env=env, timeout=30)
    assert result.returncode == 2 and "invalid choice: 'lamp'" in result.stderr
