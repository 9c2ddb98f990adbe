"""Logging goes to the journal (structured) under systemd, to readable stderr otherwise."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewayd.config import ZigbeeConfig
from gatewayd.runtime.logsetup import RADIO_LOGGERS, Redactor, configure
from gatewayd.simulator.ncp.emulator import Emulator
from gatewayd.zigbee.radio import shutdown_controller, start_controller
from tests.helpers import run_async

PROBE = "from gatewayd.runtime.logsetup import under_journald; print(under_journald())"


def _probe(stderr_path: Path, journal_stream: str | None) -> str:
    env = dict(os.environ)
    env.pop("JOURNAL_STREAM", None)
    if journal_stream is not None:
        env["JOURNAL_STREAM"] = journal_stream
    with stderr_path.open("w") as err:
        return subprocess.run([sys.executable, "-c", PROBE], stderr=err, env=env,
                              capture_output=False, stdout=subprocess.PIPE, text=True,
                              check=True).stdout.strip()


def test_journald_is_detected_only_when_stderr_is_the_journal_stream(tmp_path: Path) -> None:
    stderr = tmp_path / "stderr"
    stderr.touch()
    st = stderr.stat()
    assert _probe(stderr, f"{st.st_dev}:{st.st_ino}") == "True"
    # Inherited by a child whose stderr went elsewhere: not the journal any more.
    assert _probe(stderr, f"{st.st_dev}:{st.st_ino + 1}") == "False"
    assert _probe(stderr, None) == "False"


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    radio = {name: logging.getLogger(name).level for name in RADIO_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, radio_level in radio.items():
        logging.getLogger(name).setLevel(radio_level)


def test_journal_handler_carries_identifier_and_redaction(restore_root_logger: None) -> None:
    from systemd.journal import JournalHandler

    redactor = Redactor()
    configure("info", redactor, journald=True)
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler, JournalHandler)
    assert handler._extra["SYSLOG_IDENTIFIER"] == "gatewayd"
    assert redactor in handler.filters


def test_stderr_handler_outside_systemd(restore_root_logger: None) -> None:
    configure("warning", Redactor(), journald=False)
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler, logging.StreamHandler)
    assert logging.getLogger().level == logging.WARNING


def test_secrets_from_requests_are_the_newest_kept_and_the_hubs_own_stay() -> None:
    """A LAN client may send any number of tokens while pairing is open: the redactor keeps
    the newest MAX_RECENT of them (memory, and every log line is checked against each),
    and never lets go of the hub's own."""
    redactor = Redactor()
    redactor.add("setup-code-31415926")
    total = Redactor.MAX_RECENT + 100
    for i in range(total):
        redactor.add_recent(f"request-token-{i:04d}")
    redactor.add_recent("request-token-0099")  # seen again: the newest once more
    newest_kept = [f"request-token-{i:04d}" for i in range(total - Redactor.MAX_RECENT + 1,
                                                            total)]
    evicted = f"request-token-{total - Redactor.MAX_RECENT:04d}"
    line = " ".join(["setup-code-31415926", "request-token-0099", evicted, *newest_kept])
    out = redactor.redact(line).split()
    assert out[:2] == ["***", "***"]
    assert out[2] == evicted, "the oldest request secret should have been let go"
    assert out[3:] == ["***"] * (Redactor.MAX_RECENT - 1)


def test_the_stored_secrets_are_kept_until_replaced_then_join_the_recent_ones() -> None:
    """A hub refreshing its registration token for years pins one token at a time: the
    one it replaced is masked a while longer, among the recent ones, then let go."""
    redactor = Redactor()
    redactor.pin("state", "token-0000", "setup-31415926")
    redactor.pin("state", "token-0001", "setup-31415926")  # refreshed
    assert redactor.redact("token-0000 token-0001 setup-31415926") == "*** *** ***"
    for i in range(Redactor.MAX_RECENT):  # requests while pairing was open, say
        redactor.add_recent(f"request-{i:04d}")
    assert redactor.redact("token-0000 token-0001 setup-31415926") == "token-0000 *** ***"


def test_a_secret_in_an_exception_reaches_no_journal_field(
        restore_root_logger: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """JournalHandler sends the exception itself as EXCEPTION_INFO beside the formatted
    EXCEPTION_TEXT: `journalctl -o verbose` showed a secret the message had masked."""
    import systemd.journal as journal

    sent: list[tuple[str, ...]] = []
    monkeypatch.setattr(journal, "sendv", lambda *fields: sent.append(fields))
    redactor = Redactor()
    redactor.add("SuperSecretToken99")
    configure("info", redactor, journald=True)
    try:
        raise ConnectionError("auth failed for user=x password=SuperSecretToken99")
    except ConnectionError:
        logging.getLogger("gatewayd.test").exception("cloud link: connect failed")
    (fields,) = sent
    assert [f for f in fields if "SuperSecret" in f] == []
    text = next(f for f in fields if f.startswith("EXCEPTION_TEXT="))
    assert "ConnectionError: auth failed for user=x password=***" in text
    assert "Traceback" in text


def test_the_radio_libraries_log_the_network_key_only_when_asked(
        restore_root_logger: None, capsys: pytest.CaptureFixture[str]) -> None:
    """zigpy logs the network key in full at debug; the hub at debug leaves the radio
    libraries at info unless ``[logging] radio = "debug"`` says otherwise."""
    key = "network_key=Key(key=aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99)"
    configure("debug", Redactor(), journald=False)
    logging.getLogger("zigpy.application").debug("Network info: %s", key)
    logging.getLogger("bellows.ezsp.protocol").debug("Received command %s", "frame")
    logging.getLogger("gatewayd.bridge").debug("ours at debug")
    logging.getLogger("zigpy.application").info("Network formed")
    err = capsys.readouterr().err
    assert "aa:bb:cc" not in err and "Received command" not in err
    assert "ours at debug" in err and "Network formed" in err
    configure("debug", Redactor(), journald=False, radio="debug")
    logging.getLogger("bellows.ezsp.protocol").debug("Received command %s", "frame")
    assert "Received command frame" in capsys.readouterr().err
    configure("warning", Redactor(), journald=False, radio="debug")  # never below `level`
    logging.getLogger("bellows.ezsp.protocol").info("Received command %s", "frame")
    assert capsys.readouterr().err == ""


def test_a_hub_at_debug_logs_no_network_key_when_its_radio_forms_a_network(
        restore_root_logger: None, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Before: at ``--log-level debug`` aiosqlite logged every statement zigpy ran on
    zigbee.db, the network backup with the key in full among them; the radio libraries'
    own loggers were held at info, that one was not. Unmodified bellows forms a network on
    the NCP emulator here, as a hub's first start does."""
    configure("debug", Redactor(), journald=False)

    async def main() -> str:
        emu = await Emulator(tmp_path / "ncp.json").start()
        try:
            cfg = ZigbeeConfig(enabled=True, radio="bellows", device=emu.url)
            app = await start_controller(cfg, tmp_path)
            try:
                return str(app.state.network_info.network_key.key)
            finally:
                await shutdown_controller(app)
        finally:
            await emu.stop()

    key = run_async(main())
    err = capsys.readouterr().err
    assert "DEBUG" in err  # the hub logged at debug meanwhile
    for form in (key, key.replace(":", ""), key.replace(":", "").upper()):
        assert form.lower() not in err.lower()
