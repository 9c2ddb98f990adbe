"""Logging: journald with structured fields under systemd, readable stderr otherwise.

A :class:`Redactor` filter sits on every handler: whatever a log call is given,
a registered secret (token, passphrase, setup code) never reaches a log line.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class Redactor(logging.Filter):
    """Replaces registered secret strings in the final message with ``***``.

    Three kinds: the hub's configured secrets (:meth:`add`), kept for the process's life;
    its stored ones (:meth:`pin`: setup code, key, credentials), kept until replaced; and
    those that arrive in requests or refreshes (:meth:`add_recent`), of which the newest
    ``MAX_RECENT`` are kept (with those the stored ones replaced), since a client on the
    LAN may send any number of them while pairing is open, and every log line is checked
    against each one kept.
    """

    MAX_RECENT = 64

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._pinned: dict[str, tuple[str, ...]] = {}  # by slot: see pin()
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _worth(secrets: tuple[str, ...]) -> list[str]:
        # Very short values would mask ordinary words; they are not worth a log line.
        return [s for s in secrets if s and len(s) >= 4]

    def add(self, *secrets: str) -> None:
        with self._lock:
            self._secrets.update(self._worth(secrets))

    def pin(self, slot: str, *secrets: str) -> None:
        """The current secrets of ``slot`` (the stored credentials), kept for good until
        the slot is pinned again; those they replace (a refreshed token's predecessor)
        join the recent ones, so a hub that refreshes its token for years keeps a
        bounded set."""
        with self._lock:
            kept = tuple(self._worth(secrets))
            self._remember(s for s in self._pinned.get(slot, ()) if s not in kept)
            self._pinned[slot] = kept

    def add_recent(self, *secrets: str) -> None:
        with self._lock:
            self._remember(self._worth(secrets))

    def _remember(self, secrets: Iterable[str]) -> None:
        for secret in secrets:
            self._recent[secret] = None
            self._recent.move_to_end(secret)
        while len(self._recent) > self.MAX_RECENT:
            self._recent.popitem(last=False)

    def redact(self, text: str) -> str:
        with self._lock:
            pinned = (s for slot in self._pinned.values() for s in slot)
            secrets = sorted(self._secrets.union(self._recent, pinned), key=len,
                             reverse=True)
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
            # Formatters print exc_text alone; JournalHandler would also send the
            # exception itself (its text unredacted) as EXCEPTION_INFO.
            record.exc_info = None
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


# Zigbee's radio libraries: at debug they log every frame and the network key. aiosqlite,
# which only zigpy uses here, logs every statement run on zigbee.db at debug: the network
# backups it writes carry the key in full.
RADIO_LOGGERS = ("zigpy", "bellows", "zigpy_znp", "zigpy_deconz", "zigpy_xbee",
                 "zigpy_zigate", "aiosqlite")


def configure(level: str, redactor: Redactor, *, journald: bool | None = None,
              radio: str = "info") -> None:
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
    radio_level = max(logging.getLevelName(radio.upper()), root.level)
    for name in RADIO_LOGGERS:
        logging.getLogger(name).setLevel(radio_level)


class RepeatedFaults:
    """Faults of something asked again and again (a status section, a device list): the
    traceback goes to the log when one starts or changes, not on every call (the panel
    asks every few seconds). Bounded by the keys its owner uses."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._last: dict[str, str] = {}

    def failed(self, key: str, exc: BaseException, message: str, *args: object) -> None:
        """Call while ``exc`` is handled: logs ``message`` with the traceback if new."""
        if self._last.get(key) != repr(exc):
            self._last[key] = repr(exc)
            self._log.exception(message, *args)

    def ok(self, key: str) -> None:
        self._last.pop(key, None)


class LogBudget:
    """At most ``burst`` lines every ``window`` s about what a peer can make happen at will
    (a client flooding bad ``/set``): each line is the journal's, and journald's rate limit
    would drop the daemon's other lines with them. What is over the budget is counted and
    said in one line when its window ends (``later`` schedules that: the event loop's
    ``call_later``)."""

    def __init__(self, logger: logging.Logger, what: str, *, burst: int = 10,
                 window: float = 60.0, later: Callable[[float, Callable[[], None]], object],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log, self._what, self._burst, self._window = logger, what, burst, window
        self._later, self._clock = later, clock
        self._start = -window
        self._used = self._over = 0

    def allow(self) -> bool:
        """Whether this one may be logged; False counts it for the window's summary."""
        now = self._clock()
        if now - self._start >= self._window:
            self._start, self._used = now, 0
        if self._used < self._burst:
            self._used += 1
            return True
        if not self._over:
            self._later(self._start + self._window - now, self._summary)
        self._over += 1
        return False

    def _summary(self) -> None:
        # The window is over (the timer may run a hair early by the clock): the next starts
        # with the next line.
        over, self._over, self._start = self._over, 0, -self._window
        self._log.info("%d more %s in the last %g s, not logged one by one", over,
                       self._what, self._window)
