"""Each device's retained topics (gatewayd.cloud.retained): devices alike share one set,
and no device sees another's change."""

from __future__ import annotations

from gatewayd.cloud.retained import RetainedSuffixes

SUFFIXES = ("$state", "$name", "switch/$name", "switch/on", "switch/on/$datatype")


def plugs(n: int) -> RetainedSuffixes:
    held = RetainedSuffixes()
    for i in range(n):
        for suffix in SUFFIXES:
            held.add(f"plug-{i}", suffix)
    return held


def test_devices_that_sent_the_same_topics_share_one_set() -> None:
    held = plugs(200)
    assert held.distinct() == 1
    assert held.get("plug-0") is held.get("plug-199")
    assert held.get("plug-7") == frozenset(SUFFIXES)


def test_a_change_to_one_device_leaves_the_others_as_they_were() -> None:
    held = plugs(3)
    held.discard("plug-0", "switch/on")
    held.add("plug-1", "switch/level")
    assert held.get("plug-0") == frozenset(SUFFIXES) - {"switch/on"}
    assert held.get("plug-1") == frozenset(SUFFIXES) | {"switch/level"}
    assert held.get("plug-2") == frozenset(SUFFIXES)
    assert held.distinct() == 3


def test_a_set_no_device_holds_is_dropped() -> None:
    held = plugs(2)
    held.add("plug-0", "extra")
    held.discard("plug-0", "extra")  # back to the set plug-1 holds
    assert held.distinct() == 1
    assert held.get("plug-0") is held.get("plug-1")
    held.pop("plug-0")
    held.pop("plug-1")
    held.pop("never-seen")
    assert held.distinct() == 0
    assert held.get("plug-0") == frozenset()
    assert list(held) == []


def test_removing_every_suffix_forgets_the_device() -> None:
    held = RetainedSuffixes()
    held.add("lamp", "$state")
    held.discard("lamp", "$state")
    held.discard("lamp", "$state")  # already gone: nothing changes
    assert list(held) == []
    assert held.distinct() == 0
