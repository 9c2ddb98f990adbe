"""Reading JSON from outside (a request body, an MQTT payload) so that no input can crash
its handler. No web framework.

``json.loads`` of ``[[[[...]]]]`` a few thousand levels deep raises RecursionError, which
neither ``JSONDecodeError`` nor ``silent=True`` catches: over HTTP it became a 500, on the
REQ/RES response topic a traceback in the log for a message that was not even counted as
dropped. :func:`loads` turns every bad document into :class:`BadBody` with a sentence for
the client (or the log), and refuses nesting deeper than any message of ours needs;
:func:`parse_json` is the same for a request body, which may be empty. Files a person
edits (``sim.json``, the simulated platform's settings) and the state file are read with
``located=True``: the sentence says where the text stopped being JSON.

This is the one place that words a bad JSON document: the decoder's own messages and
Python's ("Exceeds the limit (4300 digits) for integer string conversion") are not for
users. :func:`read_bounded` reads such a file the daemon keeps, bounded, before it is
parsed.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

MAX_DEPTH = 32


class BadBody(ValueError):
    """A document that is not JSON, or nests too deeply; the message is for the client."""

    def __init__(self, what: str, problem: str) -> None:
        super().__init__(f"{what} {problem}")
        self.problem = problem

    @property
    def in_file(self) -> str:
        """The problem as a file's reader words it, after ``<file>: ``."""
        return self.problem.removeprefix("is ")


class NotJson(BadBody):
    """Not JSON text at all (as opposed to JSON that holds what no message may)."""


def parse_json(raw: bytes) -> Any:
    """The JSON value of a request body ``raw``; None for an empty body."""
    if not raw.strip():
        return None
    return loads(raw, "the body")


class _NotANumber(ValueError):
    pass


def _constant(name: str) -> Any:
    raise _NotANumber(name)


def _finite(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):  # 1e400: past a double's range, read as infinity
        raise _NotANumber(text)
    return value


def loads(raw: bytes | str, what: str, *, located: bool = False,
          finite_only: bool = True) -> Any:
    """The JSON value of ``raw``; BadBody naming ``what`` ("the body") if it has none.

    Python's json reads NaN and Infinity, which are not JSON (RFC 8259), and 1e400 as
    infinity: none is a number any of our messages can use, and each passed range checks
    (a NaN compares false with everything). ``located``: a syntax error says its line
    and column (a file's reader; a client's body does not need it). ``finite_only=False``
    reads them as floats, for a reader whose own checks name the key that holds one."""
    try:
        value = json.loads(raw, parse_constant=_constant if finite_only else None,
                           parse_float=_finite if finite_only else float)
    except RecursionError:
        raise BadBody(what, f"nests deeper than {MAX_DEPTH} levels") from None
    except _NotANumber as exc:
        raise BadBody(what, f"holds {exc}, which is not a finite number") from None
    except json.JSONDecodeError as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if located else ""
        raise NotJson(what, f"is not JSON{where}") from None
    except UnicodeDecodeError:
        raise NotJson(what, "is not JSON" + (" (not UTF-8 text)" if located else "")
                      ) from None
    except ValueError:  # Python's int() refuses more digits; not a JSONDecodeError
        raise BadBody(what, "holds a number of more than "
                            f"{sys.get_int_max_str_digits()} digits") from None
    if _deeper_than(value, MAX_DEPTH):
        raise BadBody(what, f"nests deeper than {MAX_DEPTH} levels")
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def read_bounded(path: Path, limit: int, log: logging.Logger, otherwise: str) -> bytes | None:
    """A small file the daemon keeps, at most ``limit`` bytes; None (said in ``log`` with
    what happens ``otherwise``, e.g. "read as empty") if it cannot be read or is larger,
    and quietly if it is not there."""
    try:
        with path.open("rb") as f:
            raw = f.read(limit + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot read %s (%s); %s", path, exc.strerror or type(exc).__name__,
                    otherwise)
        return None
    if len(raw) > limit:
        log.warning("%s is over %d bytes; %s", path, limit, otherwise)
        return None
    return raw
