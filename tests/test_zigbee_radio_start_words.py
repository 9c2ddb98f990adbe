"""A radio that cannot be opened, or does not answer, is said in the hub's words, by errno and
by the kind of device (a reviewer's reproduction: the status read ``cannot be opened
([Errno 13] Permission denied: '/dev/ttyUSB0')``, and a ``tcp://`` radio that did not
answer was told to check ``zigbee.baudrate``, which means nothing there)."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gatewayd import homie
from gatewayd.bridge import ZigbeeBridge
from gatewayd.config import ZigbeeConfig
from gatewayd.zigbee import radio_errors
from gatewayd.zigbee.radio import RadioError, start_controller
from tests.helpers import AS_NOBODY, NOBODY, REPO, ROOT_ONLY, reachable_tmp
from tests.test_bridge import HUB_ID, Recorder, run

pytestmark = pytest.mark.timeout(120)

BELLOWS = ZigbeeConfig(enabled=True, radio="bellows", device="/dev/ttyUSB0")

# The radio started as the service user would be: a user the port's mode keeps out.
START_AS_OTHER_USER = """
import asyncio, sys
from pathlib import Path
from gatewayd.config import ZigbeeConfig
from gatewayd.zigbee.radio import RadioError, start_controller

async def main() -> None:
    cfg = ZigbeeConfig(enabled=True, radio="bellows", device=sys.argv[1])
    try:
        await start_controller(cfg, Path(sys.argv[2]))
    except RadioError as exc:
        print(exc)

asyncio.run(main())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason=ROOT_ONLY)
def test_a_serial_port_the_service_user_may_not_open_is_said_so() -> None:
    with reachable_tmp() as tmp:
        port = tmp / "ttyUSB0"
        port.touch(mode=0o600)  # root's, as /dev/ttyUSB0 is root:dialout 0660
        state = tmp / "state"
        state.mkdir()
        os.chown(state, NOBODY, NOBODY)
        result = subprocess.run(
            [*AS_NOBODY, sys.executable, "-c", START_AS_OTHER_USER, str(port), str(state)],
            capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.stdout == (f"serial port {port} cannot be opened: permission denied: the "
                             "service user cannot open it; add it to the dialout group\n"), \
        result.stderr


@pytest.mark.parametrize(("device", "error", "words"), [
    ("/dev/ttyUSB0", OSError(errno.EBUSY, "Device or resource busy", "/dev/ttyUSB0"),
     "it is busy: another program has it open"),
    ("/dev/ttyUSB0", OSError(errno.EIO, "Input/output error"),
     "input/output error: the stick or its cable may be failing"),
    ("tcp://radio.local:6638", PermissionError(errno.EACCES, "Permission denied"),
     "permission denied"),  # no dialout group: not a device file
])
def test_what_the_os_refused_is_said_by_its_errno(
        device: str, error: OSError, words: str) -> None:
    cfg = ZigbeeConfig(enabled=True, radio="bellows", device=device)
    explained = radio_errors.explain(cfg, device, error)
    assert str(explained) == (f"cannot use the radio on {device} (zigbee.device = "
                              f"{device!r}): {words}")


def test_a_serial_radio_that_does_not_answer_is_told_to_check_its_baud_rate() -> None:
    explained = radio_errors.explain(BELLOWS, "/dev/ttyUSB0", TimeoutError())
    assert str(explained) == ("the radio on /dev/ttyUSB0 does not answer (zigbee.device = "
                              "'/dev/ttyUSB0'); check zigbee.radio = 'bellows' and "
                              "zigbee.baudrate = 115200")


def test_a_network_radio_that_does_not_answer_is_not_told_about_baud_rates(
        tmp_path: Path) -> None:
    async def main() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # takes every byte, answers none

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        url = f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        pub = Recorder()
        hub = homie.Device(HUB_ID, "Test hub")
        pub.add_device(hub)
        bridge = ZigbeeBridge(ZigbeeConfig(enabled=True, radio="bellows", device=url),
                              tmp_path, pub, hub=hub, retry_min=60, retry_max=60)
        try:
            await bridge.start()
            await pub.until(lambda: str(pub.value(HUB_ID, "zigbee/status")).startswith(
                "down"), 30)
        finally:
            await bridge.stop()
            server.close()
        assert pub.value(HUB_ID, "zigbee/status") == (
            f"down: the radio at {url} does not answer (zigbee.device = '{url}'); check "
            "zigbee.radio = 'bellows' and that what listens there is that radio's serial "
            "bridge")

    run(main())


@pytest.mark.parametrize("kind", ["file", "/dev/null"])
def test_a_device_that_is_not_a_serial_port_is_said_so_not_in_the_systems_words(
        tmp_path: Path, kind: str) -> None:
    """A reviewer's reproduction: `zigbee.device` a file or /dev/null read `cannot use the
    radio on /dev/null (...): Inappropriate ioctl for device`, retried as if it might mend."""
    device = str(tmp_path / "ttyUSB0") if kind == "file" else kind
    if kind == "file":
        Path(device).write_bytes(b"")
    cfg = ZigbeeConfig(enabled=True, radio="bellows", device=device)

    async def main() -> RadioError:
        with pytest.raises(RadioError) as refused:
            await start_controller(cfg, tmp_path)
        return refused.value

    refused = run(main())
    assert str(refused) == (f"cannot use the radio on {device} (zigbee.device = {device!r}): "
                            "it is not a serial port")
    assert not isinstance(refused, radio_errors.RadioUnavailable)  # retried once a minute


def test_a_network_the_radio_cannot_form_is_said_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A reviewer's reproduction: an NCP refusing to form read `... failed to start (...);
    check that it is a bellows radio (zigbee.radio)`."""
    from gatewayd.simulator.ncp import handlers
    from gatewayd.simulator.ncp import status as ncp_status
    from gatewayd.simulator.ncp.emulator import Emulator

    monkeypatch.setitem(handlers.HANDLERS, "formNetwork",
                        lambda ncp, p: {"status": ncp_status.FAIL})

    async def main() -> str:
        emu = await Emulator(tmp_path / "ncp.json").start()
        pub = Recorder()
        hub = homie.Device(HUB_ID, "Test hub")
        pub.add_device(hub)
        bridge = ZigbeeBridge(ZigbeeConfig(enabled=True, radio="bellows", device=emu.url,
                                           channel=20), tmp_path, pub, hub=hub,
                              retry_min=60, retry_max=60)
        try:
            await bridge.start()
            await pub.until(lambda: str(pub.value(HUB_ID, "zigbee/status")).startswith(
                "down"), 30)
            return f"{pub.value(HUB_ID, 'zigbee/status')}|{emu.url}"
        finally:
            await bridge.stop()
            await emu.stop()

    status, url = run(main()).split("|")
    assert status == (f"down: the radio on {url} could not form a Zigbee network on channel "
                      "20 (zigbee.channel); the hub's log has the details")
    assert "FormationFailure" in caplog.text  # the library's words: the log's
