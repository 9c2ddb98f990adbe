"""The devices that left the network on their own, remembered across restarts.

zigpy keeps a device that left in ``zigbee.db`` (it may rejoin), so a restart would bring
it back as ``ready`` or ``sleeping``; the bridge shows it as ``lost`` until it rejoins or
is removed. ``zigbee-left.json`` in the state directory holds their IEEE addresses:
``{"left": ["8b:b3:...", ...]}`` (:mod:`~gatewayd.zigbee.ieee_file`: a file that cannot be
read is logged and treated as empty, at worst a device that left shows as it did before it
left). Written only when the set changes (a device leaves, rejoins or is removed).
"""

from __future__ import annotations

from pathlib import Path

from gatewayd.runtime.atomicfile import atomic_write
from gatewayd.runtime.writebehind import Write
from gatewayd.zigbee.ieee_file import MAX_BYTES, IeeeFile

__all__ = ["LEFT_FILE", "MAX_BYTES", "LeftDevices"]

LEFT_FILE = "zigbee-left.json"


class LeftDevices(IeeeFile):
    """IEEE addresses (zigpy's text form) of the devices that left."""

    def __init__(self, path: Path, write: Write = atomic_write) -> None:
        super().__init__(path, "left", "devices that left show as before", write)
