"""The bridge's children by IEEE address text, and which child a zigpy device object is.

zigpy formats an ``EUI64`` as text each time it is printed or hashed (about 2 µs), and the
bridge is asked for a device's child on every frame a device sends (``handle_message``).
:meth:`Children.of` remembers the child per device object instead. What it remembers is a
hint only, checked on every use (the child is still the one under its address and still
has that device object), so nothing has to keep it up to date: a removed child, a device
object replaced by a quirk or a re-interview, all fall back to the lookup by text.
A child taken out (:meth:`Children.pop`, ``del``, :meth:`Children.clear`) takes its
hints with it: once the child is removed a hint is its last reference, and through it
its zigpy device's (up to 2N+16 removed devices were kept alive that way).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar, overload

if TYPE_CHECKING:
    from gatewayd.zigbee.child import Child

T = TypeVar("T")


class Children(dict[str, "Child"]):
    """``zigbee-``children keyed by ``str(device.ieee)`` (as ``Child.ieee``)."""

    def __init__(self) -> None:
        super().__init__()
        self._by_device: dict[int, Child] = {}  # id(device object) -> its child

    def of(self, dev: Any) -> Child | None:
        """``self.get(str(dev.ieee))``, without formatting the address once known."""
        child = self._by_device.get(id(dev))
        if child is not None and child.device is dev and self.get(child.ieee) is child:
            return child
        child = self.get(str(dev.ieee))
        if child is not None and child.device is dev:
            if len(self._by_device) > 2 * len(self) + 16:
                self._by_device.clear()  # hints for objects gone: bounded by the children
            self._by_device[id(dev)] = child
        return child

    @overload
    def pop(self, key: str, /) -> Child: ...
    @overload
    def pop(self, key: str, default: Child, /) -> Child: ...
    @overload
    def pop(self, key: str, default: T, /) -> Child | T: ...

    def pop(self, key: str, *default: Any) -> Any:
        child = super().pop(key, *default)
        self._forget(child)
        return child

    def __delitem__(self, key: str) -> None:
        self._forget(self.get(key))
        super().__delitem__(key)

    def clear(self) -> None:
        super().clear()
        self._by_device.clear()

    def _forget(self, child: Any) -> None:
        if child is not None:  # bounded: at most 2N+16 hints
            self._by_device = {k: c for k, c in self._by_device.items() if c is not child}
