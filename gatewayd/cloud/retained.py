"""Which retained topics each device has on the broker, shared between devices alike.

The publisher keeps, per device, the topic suffixes (after ``.../<device id>/``) it has
sent retained, so that a removed device, or a property the model no longer has, can be
cleared. Two hundred plugs of one model send the same suffixes, so a set per device would
hold two hundred equal sets (about 0.3 MB for 200 plugs, whose allocations a hub keeps).
Here each distinct set exists once, as a frozenset that the devices holding it share,
counted so that a set no device holds any more is dropped: there are never more sets than
devices.

A publication whose suffix the device already holds (every report after the first) costs
one membership test, as with a set of its own. Adding or removing a suffix builds a new
set, which happens only while a device's tree first goes out or its model changes.
No I/O; runs on the loop with the publisher.
"""

from __future__ import annotations

from collections.abc import Iterator

_NONE: frozenset[str] = frozenset()


class _Shared:
    __slots__ = ("holders", "suffixes")

    def __init__(self, suffixes: frozenset[str]) -> None:
        self.suffixes = suffixes  # the one instance the devices holding this set share
        self.holders = 0


class RetainedSuffixes:
    """Device id -> the frozenset of suffixes it has retained, each distinct set once."""

    def __init__(self) -> None:
        self._of: dict[str, frozenset[str]] = {}
        self._shared: dict[frozenset[str], _Shared] = {}

    def get(self, device_id: str) -> frozenset[str]:
        return self._of.get(device_id, _NONE)

    def add(self, device_id: str, suffix: str) -> None:
        held = self._of.get(device_id, _NONE)
        if suffix not in held:
            self._hold(device_id, held | {suffix})

    def discard(self, device_id: str, suffix: str) -> None:
        held = self._of.get(device_id, _NONE)
        if suffix in held:
            self._hold(device_id, held - {suffix})

    def pop(self, device_id: str) -> None:
        self._hold(device_id, _NONE)

    def clear(self) -> None:
        self._of.clear()
        self._shared.clear()

    def distinct(self) -> int:
        """How many different sets the devices hold between them."""
        return len(self._shared)

    def __iter__(self) -> Iterator[str]:
        return iter(self._of)

    def _hold(self, device_id: str, new: frozenset[str]) -> None:
        old = self._of.pop(device_id, None)
        if old is not None:
            entry = self._shared[old]
            entry.holders -= 1
            if not entry.holders:
                del self._shared[old]
        if new:
            joined = self._shared.get(new)
            if joined is None:
                joined = self._shared[new] = _Shared(new)
            joined.holders += 1
            self._of[device_id] = joined.suffixes
