"""The cable as NetworkManager tells it: whether one is in and up, and when that changed.

An unpaired hub on its Ethernet cable pairs over the LAN and keeps no hotspot; once the
cable is pulled the hotspot must come back (:mod:`gatewayd.onboarding.hotspot_watch`).
Whether a cable is in and up is whether an Ethernet device is ``ACTIVATED``
(:func:`ethernet_up`), and that answer changes only when a device enters or leaves that
state, which NetworkManager signals (``Device.StateChanged``). :class:`WiredWatch`
listens to every device's (one match, filtered here; the Wi-Fi device's own signals are
:mod:`gatewayd.ap`'s) and calls ``changed()``: the watchdog looks again then, instead of
asking NetworkManager every few seconds for as long as the hub sits on its cable.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from gatewayd.nm.presence import NM
from gatewayd.nm.profiles import STATE_ACTIVATED, TYPE_ETHERNET

log = logging.getLogger("gatewayd.ap")  # the control's lines, under one name
DEVICE_IFACE = "org.freedesktop.NetworkManager.Device"


async def ethernet_up(nm: Any, bus: Any) -> bool:
    """Whether an Ethernet device is activated (a cable in, and its link up)."""
    from sdbus_async.networkmanager import NetworkDeviceGeneric

    for path in await nm.get_devices():
        dev = NetworkDeviceGeneric(path, bus)
        if await dev.device_type == TYPE_ETHERNET and await dev.state == STATE_ACTIVATED:
            return True
    return False


class WiredWatch:
    """Calls ``changed()`` (on the loop) when a device other than the Wi-Fi one enters or
    leaves ``ACTIVATED``: what :func:`ethernet_up` answers may have changed."""

    def __init__(self) -> None:
        self.changed: Callable[[], None] = lambda: None
        self._wifi_path = ""
        self._slot: Any = None

    async def subscribe(self, bus: Any, wifi_path: str) -> None:
        """Listen to every device of the NetworkManager now on the bus but ``wifi_path``."""
        self.close()
        self._wifi_path = wifi_path
        self._slot = await bus.match_signal_async(NM, None, DEVICE_IFACE, "StateChanged",
                                                  self._on_state)

    def close(self) -> None:
        if self._slot is not None:
            with contextlib.suppress(Exception):  # a bus that is gone has no match to drop
                self._slot.close()
            self._slot = None

    def _on_state(self, message: Any) -> None:
        if (message.path or "") == self._wifi_path:
            return
        new, old, reason = message.get_contents()
        if STATE_ACTIVATED in (new, old):
            log.debug("device %s: %s -> %s (reason %s)", message.path, old, new, reason)
            self.changed()
