"""The bridge's children index (gatewayd/zigbee/children.py): ``of(device)`` must always
answer what ``get(str(device.ieee))`` answers, whatever happened to children and device
objects since the last question (removal, a new child for the same address, a device
object replaced by a quirk or a re-interview)."""

from __future__ import annotations

import gc
import weakref
from types import SimpleNamespace
from typing import Any

import pytest
import zigpy.types as t

from gatewayd.zigbee.child import Child
from gatewayd.zigbee.children import Children


class Sink:
    pass


def device(ieee: str) -> Any:
    return SimpleNamespace(ieee=t.EUI64.convert(ieee))


def add(children: Children, dev: Any) -> Child:
    child = children[str(dev.ieee)] = Child(dev, Sink(), 1.0)  # type: ignore[arg-type]
    return child


def agrees(children: Children, *devs: Any) -> None:
    for dev in devs:
        assert children.of(dev) is children.get(str(dev.ieee))
        assert children.of(dev) is children.get(str(dev.ieee))  # once remembered, too


def test_of_answers_as_the_lookup_by_address_text() -> None:
    children = Children()
    a, b, stranger = (device(f"00:11:22:33:44:55:66:{n:02x}") for n in (1, 2, 3))
    child_a, child_b = add(children, a), add(children, b)
    assert children.of(a) is child_a and children.of(b) is child_b
    assert children.of(stranger) is None
    agrees(children, a, b, stranger)

    # a quirk or a re-interview hands the child another object for the same device
    a2 = device(str(a.ieee))
    child_a.device = a2
    agrees(children, a, a2)
    assert children.of(a2) is child_a

    # removed: nobody's child any more, whichever object asks
    children.pop(str(b.ieee))
    assert children.of(b) is None
    agrees(children, a, a2, b)

    # the same address joins again as a new child, with the old object or a new one
    child_b2 = add(children, b)
    assert children.of(b) is child_b2
    b2 = device(str(b.ieee))
    children.pop(str(b.ieee))
    child_b3 = add(children, b2)
    assert children.of(b) is child_b3 and children.of(b2) is child_b3
    agrees(children, a, a2, b, b2, stranger)

    children.clear()
    agrees(children, a, a2, b, b2, stranger)
    assert children.of(a2) is None


def test_what_it_remembers_is_bounded_by_the_children() -> None:
    children = Children()
    for _ in range(500):  # a device object replaced over and over
        dev = device("00:11:22:33:44:55:66:77")
        children.pop(str(dev.ieee), None)
        child = add(children, dev)
        assert children.of(dev) is child
    assert len(children._by_device) <= 2 * len(children) + 17


class Dev:
    def __init__(self, ieee: str) -> None:
        self.ieee = ieee


class FakeChild:
    def __init__(self, dev: Dev) -> None:
        self.device, self.ieee = dev, dev.ieee


@pytest.mark.parametrize("how", ["pop", "del", "clear"])
def test_a_removed_child_is_not_kept_by_its_hint(how: str) -> None:
    """A removed device's child, and so its zigpy device, is not kept alive by the hint
    from that device object (before: until the hints outgrew 2N+16)."""
    children = Children()
    kept = FakeChild(Dev("00:00:00:00:00:00:00:01"))
    children[kept.ieee] = kept  # type: ignore[assignment]
    dev = Dev("00:00:00:00:00:00:00:02")
    children[dev.ieee] = FakeChild(dev)  # type: ignore[assignment]
    assert children.of(dev) is children[dev.ieee] and children.of(kept.device) is kept
    gone = weakref.ref(dev)
    if how == "pop":
        assert children.pop(dev.ieee).device is dev
    elif how == "del":
        del children[dev.ieee]
    else:
        children.clear()
    del dev
    gc.collect()
    assert gone() is None
    if how != "clear":
        assert children.of(kept.device) is kept
