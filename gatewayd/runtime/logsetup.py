"""Logging: journald with structured fields under systemd, readable stderr otherwise.

A :class:`Redactor` filter sits on every handler: whatever a log call is given,
a registered secret (token, passphrase, setup code) never reaches a log line.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class Redactor(logging.Filter):
    """Replaces registered secret strings in the final message with ``***``."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, *secrets: str) -> None:
        with self._lock:
            # Very short values would mask ordinary words; they are not worth a log line.
            self._secrets.update(s for s in secrets if s and len(s) >= 4)

    def redact(self, text: str) -> str:
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redact(message)
        if record.args or redacted != message:
            # JournalHandler would send record.args as CODE_ARGS: freeze the safe text.
            record.msg = redacted
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = self.redact(text)
        return True


def under_journald() -> bool:
    """True when stderr is the journal stream systemd gave us (systemd.exec(5))."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    if not stream:
        return False
    try:
        dev, ino = (int(x) for x in stream.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def configure(level: str, redactor: Redactor, *, journald: bool | None = None) -> None:
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    use_journal = under_journald() if journald is None else journald
    if use_journal:
        try:
            from systemd.journal import JournalHandler
        except ImportError:
            use_journal = False
    if use_journal:
        handler = JournalHandler(SYSLOG_IDENTIFIER="gatewayd")
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT))
    handler.addFilter(redactor)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # paho and waitress are chatty at INFO about things our own logs already say.
    logging.getLogger("waitress").setLevel(max(logging.WARNING, root.level))
