"""Why the radio could not be started, in the hub's words (:class:`RadioError`).

:func:`explain` turns what the radio library raised while starting into a sentence for the
hub's Zigbee status (``zigbee/status``, ``gatewayctl status``, the cloud): by the OS error
under it (:mod:`~gatewayd.zigbee.radio_words`; a device that is not a serial port, a file
or ``/dev/null``, is no fault waiting mends), a network the radio could not form, and only
then the catch-all "check that it is a <radio> radio". :func:`database_error` does the
same for ``zigbee.db`` by SQLite's error code (a full disk, a file the service user cannot
write, one that is damaged: :mod:`~gatewayd.zigbee.db_file` moves that one aside). What
the library raised goes to the log only, once (``RadioError.details``).

Imports no zigpy at import (``gatewayctl`` and a hub without Zigbee never load it).
"""

from __future__ import annotations

import errno
import importlib
import sqlite3
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from gatewayd.config import ZigbeeConfig
from gatewayd.zigbee.radio_words import port_error, silent


class RadioError(Exception):
    """The radio cannot be started; the message says why and what to do.

    ``details`` is what the library raised when the message cannot say it (a traceback for
    the log, not text for the cloud); the bridge logs it once per change, not every retry.
    """

    def __init__(self, message: str, details: BaseException | None = None) -> None:
        super().__init__(message)
        self.details = details


class RadioUnavailable(RadioError):
    """The radio is absent or not answering right now; retrying may help."""


def is_url(device: str) -> bool:
    return bool(urllib.parse.urlparse(device).scheme) and not device.startswith("/")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        yield cause
        cause = cause.__cause__ or cause.__context__


def _in_frames(exc: BaseException, function: str) -> bool:
    """Whether ``function`` is on ``exc``'s traceback (or a cause's)."""
    for cause in _chain(exc):
        tb: TracebackType | None = cause.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_name == function:
                return True
            tb = tb.tb_next
    return False


def _formation_failed(exc: BaseException) -> bool:
    exceptions = importlib.import_module("zigpy.exceptions")  # loaded: a radio ran
    return (any(isinstance(c, exceptions.FormationFailure) for c in _chain(exc))
            or _in_frames(exc, "form_network"))


def explain(cfg: ZigbeeConfig, path: str, exc: BaseException) -> RadioError:
    """What ``exc``, raised while the radio library started, means for the hub."""
    where = f"zigbee.device = {path!r}" if cfg.radio != "virtual" else "the virtual radio"
    cause = next((c for c in _chain(exc) if isinstance(c, OSError | TimeoutError)), None)
    if isinstance(cause, FileNotFoundError):
        if cfg.radio == "virtual":
            return RadioUnavailable("the virtual radio is unplugged")
        return RadioUnavailable(f"serial port {path} does not exist ({where}): is the "
                                "Zigbee radio plugged in, and is this its port?")
    if cfg.radio == "virtual" and isinstance(cause, PermissionError):
        zcl = importlib.import_module("gatewayd.zigbee.virtual.zcl")  # zigpy: a radio ran
        if isinstance(cause, zcl.NetworkInUse):
            return RadioUnavailable("the virtual radio is in use by another radio start (the "
                                    "previous one has not let go of it yet)")
        return RadioUnavailable(f"cannot write the virtual radio's world file {path} "
                                f"({cause.strerror or 'permission denied'})")
    serial = not is_url(path)  # the hub's words by errno and device kind (radio_words.py)
    if isinstance(cause, PermissionError) and serial:
        return RadioUnavailable(f"serial port {path} cannot be opened: "
                                f"{port_error(cause, serial)}")
    if isinstance(cause, ConnectionRefusedError) and not serial:
        return RadioUnavailable(f"nothing listens at {path} ({where})")
    if isinstance(cause, TimeoutError):
        return RadioUnavailable(silent(cfg.radio, path, where, cfg.baudrate, serial))
    if isinstance(cause, OSError):  # not a serial port (ENOTTY): waiting does not mend it
        error = RadioError if cause.errno == errno.ENOTTY else RadioUnavailable
        return error(f"cannot use the radio on {path} ({where}): {port_error(cause, serial)}")
    if _formation_failed(exc):
        return RadioError(f"the radio on {path} could not form a Zigbee network on channel "
                          f"{cfg.channel} (zigbee.channel); the hub's log has the details",
                          details=exc)
    # What the radio library raised is for the log: this text goes to the cloud as the
    # hub's Zigbee status ("AttributeError: 'NoneType' object has no attribute ...").
    return RadioError(f"the {cfg.radio} radio on {path} failed to start ({where}); check "
                      f"that it is a {cfg.radio} radio (zigbee.radio); the hub's log has "
                      "the details", details=exc)


def _sqlite_code(exc: BaseException) -> int | None:
    for cause in _chain(exc):
        code = getattr(cause, "sqlite_errorcode", None)
        if isinstance(cause, sqlite3.Error) and isinstance(code, int):
            return code & 0xFF  # the primary code of an extended one
    return None


def damaged(exc: BaseException) -> bool:
    """``exc``, raised opening ``zigbee.db``, says the file is damaged (not a disk full, a
    permission or a lock: moving those aside would lose a good database)."""
    if _sqlite_code(exc) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return True
    exceptions = importlib.import_module("zigpy.exceptions")  # loaded: zigpy opened it
    return any(isinstance(c, exceptions.CorruptDatabase) for c in _chain(exc))


def database_error(path: Path, exc: BaseException) -> RadioError:
    """``zigbee.db`` cannot be opened: why, by SQLite's error code."""
    code = _sqlite_code(exc)
    if code == sqlite3.SQLITE_FULL:
        return RadioError(f"cannot write the Zigbee database {path}: the disk is full; free "
                          "some space", details=exc)
    if code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_READONLY):
        return RadioError(f"cannot open the Zigbee database {path} for writing: the service "
                          "user must be able to write it and its directory", details=exc)
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return RadioUnavailable(f"the Zigbee database {path} is locked by another program",
                                details=exc)
    return RadioError(f"cannot open the Zigbee database {path}; the hub's log has the "
                      "details", details=exc)
