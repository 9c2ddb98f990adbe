"""A TOML file and its drop-ins: ``gatewayd.toml`` and ``gatewayd.toml.d/*.toml``.

The packaged ``/etc/gatewayd/gatewayd.toml`` is a conffile: a vendor who edits it is asked
about it by dpkg at every upgrade that changes it (unattended upgrades skip such a
package). Presets belong in a drop-in the package does not own, read after the main file
in name order. A table in a drop-in sets the keys it names and leaves the others; any other
value, an array of tables (``[[virtual]]``) included, replaces the earlier one whole.

Each value's file is kept (:attr:`Layers.origins`), so that an error names the file that
set the value, not the main one.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUFFIX = ".toml"


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
        raise TomlFileError(path, f"TOML syntax error: {exc}") from None
    except ValueError:  # Python's int() refuses more digits; not a TOMLDecodeError
        raise TomlFileError(path, "TOML value error: a number with more than "
                                  f"{sys.get_int_max_str_digits()} digits") from None


def read_layers(path: Path, *, main_required: bool = True) -> Layers:
    """``path`` (if it exists, or must) with the drop-ins of ``path.d`` merged over it."""
    layers = Layers()
    if main_required or path.exists():
        _merge(layers, layers.data, read_toml(path), str(path), "")
    directory = drop_in_dir(path)
    try:
        names = sorted(p.name for p in directory.iterdir()
                       if p.name.endswith(SUFFIX) and not p.name.startswith("."))
    except FileNotFoundError:
        return layers
    except OSError as exc:
        raise TomlFileError(directory, f"cannot read the directory: {exc.strerror}") from None
    for name in names:
        drop_in = directory / name
        _merge(layers, layers.data, read_toml(drop_in), str(drop_in), "")
        layers.drop_ins.append(drop_in)
    return layers


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
