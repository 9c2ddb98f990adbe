"""A TOML file and its drop-ins: ``gatewayd.toml`` and ``gatewayd.toml.d/*.toml``.

The packaged ``/etc/gatewayd/gatewayd.toml`` is a conffile: a vendor who edits it is asked
about it by dpkg at every upgrade that changes it (unattended upgrades skip such a
package). Presets belong in a drop-in the package does not own, read after the main file
in name order. A table in a drop-in sets the keys it names and leaves the others; any other
value, an array of tables (``[[virtual]]``) included, replaces the earlier one whole.

Each value's file is kept (:attr:`Layers.origins`), so that an error names the file that
set the value, not the main one.

The values' rules live beside the schema's fields (:func:`spec`, checked by
:func:`check_scalar` and :func:`apply_check`); a refused value is a :class:`ConfigError`
that names file, key and reason. ``gatewayd.config`` is the schema.
"""

from __future__ import annotations

import contextlib
import dataclasses
import grp
import math
import os
import pwd
import re
import stat
import sys
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUFFIX = ".toml"
NOT_KEYS = frozenset({"source", "drop_ins", "origins", "skipped"})  # where a Config came from


class TomlFileError(Exception):
    """A file that cannot be read or is not TOML; says which and why."""

    def __init__(self, file: Path, reason: str) -> None:
        super().__init__(reason)
        self.file = file
        self.reason = reason


@dataclass
class Layers:
    data: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # "hotspot.band" -> its file
    drop_ins: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # in ``path.d`` without the suffix

    def file_of(self, key: str, default: str) -> str:
        """The file that set ``key`` (``virtual[2].timeout``, ``hotspot.band``), or
        ``default``; a key set whole (an array) answers for the keys within it."""
        best = ""
        for path in self.origins:
            if (key == path or key.startswith((f"{path}.", f"{path}["))) and len(path) > len(
                    best):
                best = path
        if best:
            return self.origins[best]
        # A table as a whole ("nonsense: unknown key"): the last file that set a key in it.
        within = [f for path, f in self.origins.items() if path.startswith(f"{key}.")]
        return within[-1] if within else default

    def latest_file_of(self, keys: tuple[str, ...], default: str) -> str:
        """Of the files that set any of ``keys``, the one read last (``default`` first)."""
        order = {str(p): i for i, p in enumerate(self.drop_ins, 1)}
        return max((self.file_of(k, default) for k in keys), key=lambda f: order.get(f, 0))


def drop_in_dir(path: Path) -> Path:
    return path.with_name(path.name + ".d")


def read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise TomlFileError(path, "file not found") from None
    except OSError as exc:
        raise TomlFileError(path, f"cannot read: {exc.strerror}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise TomlFileError(path, "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise TomlFileError(path, toml_problem(str(exc))) from None
    except ValueError:  # Python's int() refuses more digits; not a TOMLDecodeError
        raise TomlFileError(path, "TOML value error: a number with more than "
                                  f"{sys.get_int_max_str_digits()} digits") from None


_TOML_AT = re.compile(r"\(at line (\d+), column (\d+)\)")


def toml_problem(message: str) -> str:
    """tomllib's message in our words: where the file stops being TOML, and the two
    mistakes a person editing a drop-in makes most (a table or a key written twice), not
    the decoder's own sentence ("Cannot declare ('cloud',) twice")."""
    at = _TOML_AT.search(message)
    where = (f"line {at[1]}, column {at[2]}" if at
             else "the end of the file" if "end of document" in message else "")
    if message.startswith("Cannot declare"):
        table = ".".join(re.findall(r"'([^']*)'", message.partition(" twice")[0]))
        what = f"TOML syntax error: [{table}] is declared twice" if table else \
            "TOML syntax error: a table is declared twice"
    elif message.startswith("Cannot overwrite a value"):
        what = "TOML syntax error: a key is set twice"
    else:
        what = "TOML syntax error"
    return f"{what} at {where}" if where else what


def read_layers(path: Path, *, main_required: bool = True) -> Layers:
    """``path`` (if it exists, or must) with the drop-ins of ``path.d`` merged over it."""
    layers = Layers()
    if main_required or path.exists():
        _merge(layers, layers.data, read_toml(path), str(path), "")
    directory = drop_in_dir(path)
    try:
        names = sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))
    except FileNotFoundError:
        return layers
    except OSError as exc:
        raise TomlFileError(directory, f"cannot read the directory: {exc.strerror}") from None
    layers.skipped = [directory / name for name in names if not name.endswith(SUFFIX)]
    for name in names:
        if not name.endswith(SUFFIX):
            continue  # x.toml.dpkg-old, x.toml~, x.conf: said by config_warnings
        drop_in = directory / name
        _merge(layers, layers.data, read_toml(drop_in), str(drop_in), "")
        layers.drop_ins.append(drop_in)
    return layers


def unreadable_by(user: str, paths: list[Path]) -> list[tuple[Path, str]] | None:
    """Which of ``paths`` (files or directories) ``user`` cannot open for reading, with the
    reason: tried in a child process with that user's ids and groups, so ownership, modes,
    ACLs and every directory on the way count as they will for the service. None when the
    user does not exist or the ids cannot be taken (not run as root)."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        status = 1
        try:
            os.close(read_end)
            os.setgroups(os.getgrouplist(user, entry.pw_gid))
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            found = []
            for path in paths:
                try:
                    os.close(os.open(path, os.O_RDONLY))
                except OSError as exc:
                    found.append(f"{path}\0{exc.strerror or exc}")
            with os.fdopen(write_end, "wb") as out:
                out.write("\0".join(found).encode("utf-8", "surrogateescape"))
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as result:
        data = result.read().decode("utf-8", "surrogateescape")
    _, status = os.waitpid(pid, 0)
    if status != 0:
        return None
    fields = data.split("\0") if data else []
    return [(Path(fields[i]), fields[i + 1]) for i in range(0, len(fields) - 1, 2)]


def secrets_in(path: Path, keys: list[str]) -> list[str]:
    """Which of the dotted ``keys`` the file ``path`` sets to a value (an empty string is
    none: the packaged file sets every key, its secrets to ``""``)."""
    try:
        data: Any = read_toml(path)
    except TomlFileError:
        return []
    found = []
    for key in keys:
        value = data
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value not in (None, ""):
            found.append(key)
    return found


def readers_besides(path: Path, user: str) -> str | None:
    """Who else may read ``path`` than root, its owner and ``user`` with its group:
    ``"every user"`` when its mode lets others read it and every directory above lets them
    through, ``"the group G's members"`` when a group with other members may; None when
    nobody. Judged from owners and modes (ACLs are not looked at), so it works unprivileged,
    as the service's user."""
    try:
        real = path.resolve(strict=True)
        st = real.stat()
        above = [d.stat() for d in real.parents]
    except (OSError, RuntimeError):
        return None
    if st.st_mode & stat.S_IROTH and all(d.st_mode & stat.S_IXOTH for d in above):
        return "every user"
    gid = st.st_gid
    if not st.st_mode & stat.S_IRGRP or gid in _trusted_gids(user) or not all(
            d.st_mode & stat.S_IXOTH or (d.st_gid == gid and d.st_mode & stat.S_IXGRP)
            for d in above):
        return None
    try:
        group = grp.getgrgid(gid)
        name, members = group.gr_name, set(group.gr_mem)
    except KeyError:
        name, members = str(gid), set()
    members |= {p.pw_name for p in pwd.getpwall() if p.pw_gid == gid}
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = ""
    return f"the group {name}'s members" if members - {"root", user, owner} else None


def _trusted_gids(user: str) -> set[int]:
    """root's group and the service's: the packaged config is ``root:gatewayd``."""
    gids = {0}
    with contextlib.suppress(KeyError):
        gids.add(pwd.getpwnam(user).pw_gid)
    with contextlib.suppress(KeyError):
        gids.add(grp.getgrnam(user).gr_gid)
    return gids


def _merge(layers: Layers, target: dict[str, Any], data: Mapping[str, Any], file: str,
           prefix: str) -> None:
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and isinstance(target.get(key, {}), dict):
            _merge(layers, target.setdefault(key, {}), value, file, dotted)
        else:
            target[key] = value
            # What this value replaces is forgotten with it: the new file answers for all.
            for path in [p for p in layers.origins if p.startswith((f"{dotted}.",
                                                                    f"{dotted}["))]:
                del layers.origins[path]
            layers.origins[dotted] = file


# ---- typed values: the schema of a file is a frozen dataclass whose fields say their rules

class ConfigError(Exception):
    """A configuration value that gatewayd refuses; says file, key and reason."""

    def __init__(self, file: str | Path, key: str, reason: str,
                 cause: str | tuple[str, ...] = "") -> None:
        self.file = str(file)
        self.key = key
        self.reason = reason
        # The key (or keys) whose value makes ``key`` wrong: the file named is the one that
        # set it, or of several the one read last (the drop-in that made them disagree).
        self.cause = cause
        where = f"{self.file}: {key}" if key else self.file
        super().__init__(f"{where}: {reason}")


def spec(
    default: Any = dataclasses.MISSING,
    *,
    factory: Any = dataclasses.MISSING,
    min: float | None = None,
    max: float | None = None,
    choices: tuple[Any, ...] | None = None,
    pattern: str | None = None,
    says: str = "",
    check: Any = None,
    doc: str = "",
    secret: bool = False,
) -> Any:
    """A dataclass field with validation metadata. A ``secret`` field's value never
    appears in an error: config errors go to the journal and the terminal. ``says`` is
    ``pattern`` in words, for the error (a person should not have to read a regex)."""
    meta = {"min": min, "max": max, "choices": choices, "pattern": pattern, "says": says,
            "check": check, "doc": doc, "secret": secret}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def secret_keys(cls: Any, prefix: str = "") -> list[str]:
    """The dotted keys of the schema ``cls`` whose fields are ``spec(secret=True)``, in its
    tables too (not in arrays of tables: a plugin's options are the plugin's)."""
    hints = typing.get_type_hints(cls)
    keys = []
    for f in dataclasses.fields(cls):
        if f.name in NOT_KEYS:
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            keys += secret_keys(hints[f.name], f"{prefix}{f.name}.")
        elif f.metadata.get("secret"):
            keys.append(f"{prefix}{f.name}")
    return keys


def secret_fields(instance: Any, prefix: str = "") -> list[tuple[str, str]]:
    """The dotted keys and values of an options dataclass ``instance`` (a plugin's) whose
    fields are ``spec(secret=True)``, in its tables and arrays too; empty values left out."""
    found: list[tuple[str, str]] = []
    for f in dataclasses.fields(instance):
        key, value = f"{prefix}{f.name}", getattr(instance, f.name)
        items = [(f"{key}[{i}]", v) for i, v in enumerate(value)] \
            if isinstance(value, tuple) else [(key, value)]
        for where, item in items:
            if dataclasses.is_dataclass(item) and not isinstance(item, type):
                found += secret_fields(item, f"{where}.")
            elif f.metadata.get("secret") and isinstance(item, str) and item:
                found.append((where, item))
    return found


SCALAR_TYPES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


def check_scalar(file: str, key: str, value: Any, typ: type, meta: Mapping[str, Any]) -> Any:
    """Type, choices, range and pattern of one value (``spec`` metadata); the ``check``
    hook is the caller's, so it can apply to whole arrays too (plugin options)."""
    got = "a value that is not shown (a secret)" if meta.get("secret") else repr(value)
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if (typ is int and isinstance(value, bool)) or not isinstance(value, typ):
        shown = got if meta.get("secret") else f"{type(value).__name__} {got}"
        raise ConfigError(file, key, f"must be {SCALAR_TYPES[typ]}, got {shown}")
    if isinstance(value, float) and not math.isfinite(value):
        # TOML has nan and inf, which pass every range check: a nan timeout never fires
        raise ConfigError(file, key, f"must be a finite number, got {got}")
    if meta.get("choices") is not None and value not in meta["choices"]:
        allowed = ", ".join(repr(c) for c in meta["choices"])
        raise ConfigError(file, key, f"must be one of {allowed}, got {got}")
    if meta.get("min") is not None and value < meta["min"]:
        raise ConfigError(file, key, f"must be >= {meta['min']}, got {got}")
    if meta.get("max") is not None and value > meta["max"]:
        raise ConfigError(file, key, f"must be <= {meta['max']}, got {got}")
    if meta.get("pattern") is not None and not re.fullmatch(meta["pattern"], str(value)):
        if meta.get("says"):
            raise ConfigError(file, key, f"must be {meta['says']}, got {got}")
        raise ConfigError(file, key, f"{got} does not match {meta['pattern']}")
    return value


def apply_check(file: str, key: str, value: Any, meta: Mapping[str, Any]) -> Any:
    """Run a field's ``spec(check=...)`` hook: it returns a reason, or None when fine."""
    check = meta.get("check")
    problem = check(value) if check is not None else None
    if problem:
        raise ConfigError(file, key, problem)
    return value


def build(cls: Any, data: Any, file: str, prefix: str, *, open_table: Any = None) -> Any:
    """An instance of the dataclass ``cls`` from a TOML table, every value checked; the
    unknown keys of an ``open_table`` go to its ``options`` (a plugin checks them)."""
    if not isinstance(data, dict):
        raise ConfigError(file, prefix.rstrip("."), f"must be a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in NOT_KEYS}
    unknown = sorted(set(data) - set(fields))
    if unknown and cls is not open_table:
        known = ", ".join(sorted(fields))
        raise ConfigError(file, f"{prefix}{unknown[0]}", f"unknown key (known keys: {known})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{prefix}{name}"
        typ = hints[name]
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(file, key, "is required")
            continue
        value = data[name]
        if dataclasses.is_dataclass(typ):
            kwargs[name] = build(typ, value, file, f"{key}.", open_table=open_table)
        elif typing.get_origin(typ) is tuple and typing.get_args(typ)[0] is str:
            if not isinstance(value, list):
                raise ConfigError(file, key, "must be an array of strings")
            kwargs[name] = tuple(
                apply_check(file, f"{key}[{i}]", check_scalar(file, f"{key}[{i}]", item, str,
                                                              f.metadata), f.metadata)
                for i, item in enumerate(value))
        elif typing.get_origin(typ) is tuple:
            (item_type, _) = typing.get_args(typ)
            if not isinstance(value, list):
                raise ConfigError(file, key, "must be an array of tables ([[" + name + "]])")
            kwargs[name] = tuple(
                build(item_type, item, file, f"{key}[{i}].", open_table=open_table)
                for i, item in enumerate(value)
            )
        elif typing.get_origin(typ) in (Mapping, dict) or typ is types.MappingProxyType:
            if not isinstance(value, dict):
                raise ConfigError(file, key, "must be a table")
            kwargs[name] = dict(value)
        else:
            kwargs[name] = apply_check(file, key, check_scalar(file, key, value, typ,
                                                               f.metadata), f.metadata)
    if cls is open_table:
        # Plugin options live beside type/id in the table; the plugin validates them.
        extra = {k: v for k, v in data.items() if k not in fields}
        if twice := sorted(extra.keys() & kwargs.get("options", {}).keys()):
            # Which one the plugin got depended on the merge order: say it instead.
            raise ConfigError(file, f"{prefix}{twice[0]}",
                              f"is set twice: here and in options.{twice[0]}; keep one")
        kwargs["options"] = {**kwargs.get("options", {}), **extra}
    return cls(**kwargs)
