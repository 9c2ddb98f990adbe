"""What the state directory must look like whatever happened to the hub.

:func:`audit` lists what is wrong with a state directory: ``state.json`` that does not parse
(by the daemon's own validator) or is half paired, a credentials file readable by others, a
temp file left behind, a ``zigbee.db`` that SQLite cannot open or that fails its integrity
check, another JSON file that does not parse. :func:`snapshot` is the directory's bytes and
modes, so a campaign can tell whether a refused request changed anything.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import stat
import tempfile
from pathlib import Path

from gatewayd.runtime.atomicfile import write_in_progress
from gatewayd.state import STATE_FILE, HubState, StateError, parse_state

# Files that hold credentials: the account and Wi-Fi (state.json), the Zigbee network key.
PRIVATE = (STATE_FILE, "zigbee.db")
TEMP_SUFFIXES = (".tmp", ".temp", "~")
Snapshot = dict[str, tuple[int, bytes]]


def snapshot(state_dir: Path, names: tuple[str, ...] | None = None) -> Snapshot:
    """Every regular file's (mode, bytes), or only those in ``names``."""
    out: Snapshot = {}
    if not state_dir.is_dir():
        return out
    for path in sorted(state_dir.iterdir()):
        if names is not None and path.name not in names:
            continue
        try:
            st = path.stat()
            if stat.S_ISREG(st.st_mode):
                out[path.name] = (stat.S_IMODE(st.st_mode), path.read_bytes())
        except FileNotFoundError:
            continue
    return out


def differences(before: Snapshot, after: Snapshot) -> list[str]:
    """Names of files added, removed, or changed in content or mode."""
    names = sorted(set(before) | set(after))
    return [name for name in names if before.get(name) != after.get(name)]


def audit(state_dir: Path, *, temp_files: bool = True, database: bool = True) -> list[str]:
    """Everything wrong with ``state_dir``; empty when it is sound.

    ``temp_files``: also complain about temp files (a daemon killed halfway through a write
    may leave one; the daemon that starts next must not leave it lying there).
    ``database``: check ``zigbee.db``; only while no daemon has it open (a copy of a
    database being written is not a database).
    """
    problems: list[str] = []
    state_file = state_dir / STATE_FILE
    try:
        raw = state_file.read_bytes()
    except FileNotFoundError:
        return [f"{STATE_FILE} is missing"]
    try:
        state = parse_state(state_file, raw)
    except StateError as exc:
        problems.append(f"{STATE_FILE} is corrupt: {exc.key or 'file'}: {exc.reason}")
    else:
        if (state.cloud is None) != (state.paired_at is None):
            problems.append(f"{STATE_FILE} is half paired: cloud "
                            f"{'set' if state.cloud else 'missing'}, paired_at "
                            f"{state.paired_at!r}")
    for path in sorted(state_dir.iterdir()):
        name = path.name
        try:
            mode = stat.S_IMODE(path.lstat().st_mode)
        except FileNotFoundError:
            continue
        if name in PRIVATE and mode & 0o077:
            problems.append(f"{name} has mode {mode:04o}: it holds credentials (want 0600)")
        if temp_files and (name.endswith(TEMP_SUFFIXES) or ".tmp." in name) \
                and not write_in_progress(name):
            problems.append(f"temp file left behind: {name}")
        if name.endswith(".json") and name != STATE_FILE:
            try:
                json.loads(path.read_bytes())
            except (ValueError, OSError) as exc:
                problems.append(f"{name} does not parse: {exc}")
    db = state_dir / "zigbee.db"
    if database and db.exists():
        problem = check_sqlite(db)
        if problem:
            problems.append(problem)
    return problems


def check_sqlite(db: Path) -> str | None:
    """Open a copy of ``db`` (with its journal or WAL, as SQLite would recover it after a
    crash) and run the integrity check; the copy keeps a running daemon's files untouched."""
    with tempfile.TemporaryDirectory(prefix="chaos-db-") as tmp:
        copy = Path(tmp) / db.name
        for suffix in ("", "-wal", "-journal"):
            source = db.with_name(db.name + suffix)
            try:
                shutil.copyfile(source, copy.with_name(copy.name + suffix))
            except FileNotFoundError:
                continue
        try:
            conn = sqlite3.connect(copy)
            try:
                rows = conn.execute("PRAGMA integrity_check").fetchall()
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            return f"{db.name} does not open: {exc}"
    if rows != [("ok",)]:
        return f"{db.name} fails its integrity check: {rows[:3]}"
    return None


def stored(state_dir: Path) -> HubState | None:
    """The state file as the daemon would read it (None: none, or not readable)."""
    try:
        return parse_state(state_dir / STATE_FILE, (state_dir / STATE_FILE).read_bytes())
    except (OSError, StateError):
        return None


def paired(state_dir: Path) -> bool | None:
    """Whether ``state.json`` says the hub is paired (None: no readable state)."""
    try:
        raw = (state_dir / STATE_FILE).read_bytes()
        return parse_state(state_dir / STATE_FILE, raw).paired
    except (OSError, StateError):
        return None
