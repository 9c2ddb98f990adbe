"""Reading a JSON request body so that no input can crash the handler. No web framework.

``json.loads`` of ``[[[[...]]]]`` a few thousand levels deep raises RecursionError, which
no ``silent=True`` catches: it became a 500. :func:`parse_json` turns every bad body into
:class:`BadBody` with a sentence for the client, and refuses nesting deeper than any
request of ours needs.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 32


class BadBody(ValueError):
    """A body that is not JSON, or nests too deeply; the message is for the client."""


def parse_json(raw: bytes) -> Any:
    """The JSON value of ``raw``; None for an empty body."""
    if not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except RecursionError:
        raise BadBody(f"the body nests deeper than {MAX_DEPTH} levels") from None
    except (UnicodeDecodeError, ValueError):
        raise BadBody("the body is not JSON") from None
    if _deeper_than(value, MAX_DEPTH):
        raise BadBody(f"the body nests deeper than {MAX_DEPTH} levels")
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
