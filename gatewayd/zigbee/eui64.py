"""zigpy's ``EUI64`` hashed from its eight bytes instead of its text (pinned zigpy only).

zigpy hashes an ``EUI64`` (a list of eight ints) as ``hash(repr(self))``: it formats the
address as ``aa:bb:..`` text, 2-3 µs, each time one is a dict key or looked up in one.
Restoring a network from ``zigbee.db`` looks each device up twice per cached attribute
row (``devices[ieee]``); with 200 plugs, 8 800 rows: a quarter of the load (60 of about
230 ms on the development machine, bench/README.md, "Where a restart's second goes").
``hash(tuple(self))`` takes 0.2 µs and keeps the type's equality: two EUI64s are equal
when their eight ints are, and then their tuples hash the same. It is the change we would
offer zigpy.

A hash is one function for the whole process: a dict filled under one and read under
the other misses its keys. :func:`install` is therefore called before anything hashes an
EUI64, by :func:`gatewayd.zigbee.radio.controller_class` before it imports the radio
library (the daemon does that first, in its preload, before any zigpy object exists),
and is never undone. On a zigpy other than the pinned one it stays off
(:mod:`~gatewayd.zigbee.pinned`), and zigpy's own hash is kept.
"""

from __future__ import annotations

import importlib
from typing import Any

from gatewayd.zigbee.pinned import written_for


def _hash(self: Any) -> int:
    return hash(tuple(self))


def install() -> bool:
    """Give zigpy's ``EUI64`` the byte hash, once; False where it stays off."""
    eui64 = importlib.import_module("zigpy.types").EUI64
    if eui64.__hash__ is _hash:
        return True
    if not written_for("zigpy", "the EUI64 hash"):
        return False
    # setattr: zigpy's class declares __hash__ as a method; this replaces it, class-wide.
    setattr(eui64, "__hash__", _hash)  # noqa: B010
    return True
