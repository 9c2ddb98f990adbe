"""Crash-safe file replacement: a reader sees the old file or the new one, never a mix.

Also the other plumbing of a private directory: whose its files are when root writes there
(:func:`directory_owner`), and the lock file its user holds (:func:`hold_lock`).
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from pathlib import Path

_TEMP = re.compile(r"\.(.+)\.(\d+)\.tmp")


def atomic_write(path: str | Path, data: bytes, mode: int = 0o600,
                 owner: tuple[int, int] | None = None) -> None:
    """Write ``data`` to ``path`` atomically with permissions ``mode``.

    The temp file is created with ``mode`` from the start (never world-readable,
    even briefly), fsynced, renamed over the target, and the directory is fsynced
    so the rename itself survives a power cut. ``owner`` (uid, gid) is given to the
    temp file before the rename, so the file never appears with another owner.
    """
    path = Path(path)
    directory = path.parent
    tmp = directory / f".{path.name}.{os.getpid()}.tmp"  # _TEMP: the cleanup's pattern
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # umask may have narrowed or the file pre-existed
        if owner is not None:
            os.fchown(fd, *owner)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(directory)


def fsync_directory(directory: str | Path) -> None:
    """Make a rename or unlink in ``directory`` durable (a power cut must not undo it)."""
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def directory_owner(directory: Path) -> tuple[int, int] | None:
    """What root writing into the daemon's directory gives its files: the directory's owner
    and group, or the daemon (user gatewayd) could not read them and would not start. None
    when not root: a file written then is its writer's, as it should be."""
    if os.geteuid() != 0:
        return None
    st = directory.stat()
    return st.st_uid, st.st_gid


def hold_lock(path: Path, owner: tuple[int, int] | None, timeout: float) -> int | None:
    """An exclusive flock on ``path`` (created 0600), held until the descriptor returned is
    closed (at the latest when the process ends); None if another process still holds it
    after ``timeout`` s."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    if owner is not None:
        os.fchown(fd, *owner)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.1)  # its holders hold it for milliseconds, or for good


def remove_orphaned_temp_files(directory: str | Path) -> list[str]:
    """Remove the temp files of writes whose process died before the rename (kill -9, a
    power cut): they may hold a copy of secrets the real file no longer has. A temp file
    of a process still running is its write in progress, and stays. Returns the names."""
    removed = []
    # In name order, not the directory's: what one start removes does not depend on how
    # the file system lists the files.
    for path in sorted(Path(directory).glob(".*.tmp")):
        if _TEMP.fullmatch(path.name) is None or write_in_progress(path.name):
            continue
        path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed  # in name order already


def write_in_progress(name: str) -> bool:
    """Whether ``name`` is the temp file of an atomic write whose process still runs: its
    write is under way, not left behind."""
    match = _TEMP.fullmatch(name)
    return match is not None and _running(int(match.group(2)))


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: running
        return True
    return True
