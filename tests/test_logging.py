"""Logging goes to the journal (structured) under systemd, to readable stderr otherwise."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewayd.runtime.logsetup import Redactor, configure

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
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


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
