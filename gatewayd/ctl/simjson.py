"""What gatewayctl reads from a simulator's ``sim.json`` (``--sim DIR``).

Every command reads it through :func:`read_sim_json`, and every value through a
:class:`SimJson` accessor, so a damaged file gives one kind of error,
:class:`SimJsonError`, naming the file and the key (gatewayctl prints it and exits 1;
docs/interfaces.md §2.2), instead of a traceback. Only the keys a command uses are checked:
a sim.json that lacks an unrelated key (an older simulator's) still serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatewayd.ctl.client import CtlError
from gatewayd.runtime.jsonbody import BadBody, loads

JSON_TYPES = {dict: "an object", list: "an array", str: "text", bool: "true or false",
              int: "a number", float: "a number", type(None): "null"}


class SimJsonError(CtlError):
    """sim.json is missing, unreadable or lacks a key; the message names file and key."""


def _kind(value: Any) -> str:
    return JSON_TYPES.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class SimJson:
    path: Path
    data: dict[str, Any]

    def _fail(self, key: str, problem: str) -> SimJsonError:
        return SimJsonError(f"{self.path}: {key}: {problem}")

    def _text(self, key: str, what: str) -> str:
        if key not in self.data:
            raise self._fail(key, f"missing ({what})")
        value = self.data[key]
        if not isinstance(value, str) or not value:
            kind = "empty text" if value == "" else _kind(value)
            raise self._fail(key, f"must be text ({what}), got {kind}")
        return value

    def control_socket(self) -> Path:
        return Path(self._text("control_socket", "the control socket's path"))

    def state_dir(self) -> Path:
        return Path(self._text("state_dir", "the hub's state directory"))

    def system_bus(self) -> str:
        return self._text("system_bus", "the simulator's D-Bus address")

    def platform_control(self) -> str | None:
        """The simulated platform's control URL; None for a simulator without it."""
        if "platform" not in self.data:
            raise self._fail("platform", "missing (an object, or null with --no-platform)")
        platform = self.data["platform"]
        if platform is None:
            return None
        if not isinstance(platform, dict):
            raise self._fail("platform", f"must be an object or null, got {_kind(platform)}")
        url = platform.get("control")
        if not isinstance(url, str) or not url.startswith("http://"):
            shown = repr(url) if isinstance(url, str) else _kind(url)
            raise self._fail("platform.control", f"must be an http:// URL, got {shown}")
        return url


def read_sim_json(workdir: str | Path) -> SimJson | None:
    """``DIR/sim.json``, or None if there is none (the simulator is not ready yet, or a
    stopped one never got ready); SimJsonError if it is not a JSON object."""
    path = Path(workdir) / "sim.json"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SimJsonError(f"{path}: unreadable ({reason})") from None
    try:
        data = loads(text, str(path), located=True)
    except BadBody as exc:
        raise SimJsonError(f"{path}: {exc.in_file}") from None
    if not isinstance(data, dict):
        raise SimJsonError(f"{path}: must be a JSON object, got {_kind(data)}")
    return SimJson(path, data)


def require_sim_json(workdir: str | Path) -> SimJson:
    """As :func:`read_sim_json`, for a command that cannot do without it."""
    sim = read_sim_json(workdir)
    if sim is None:
        raise SimJsonError(f"{Path(workdir) / 'sim.json'}: missing: the simulator writes it "
                           f"once ready (gatewayd --simulate --workdir {workdir})")
    return sim
