"""The hub's Wi-Fi signal as NetworkManager tells it: ``$telemetry/signal``.

NetworkManager knows the access point the Wi-Fi device is associated with (Device.Wireless
``ActiveAccessPoint``) and its ``Strength``, 0-100 %: the number the portal's network list
shows (:mod:`~gatewayd.nm.scan`), the same whatever the Wi-Fi driver. :class:`WifiSignal`
reads it at each telemetry sample (every minute: a handful of property reads, nothing
kept between samples, so a NetworkManager that restarted or re-exported its access
points is simply asked again):

* the device ``ACTIVATED`` in infrastructure mode (the hub is a client of a network):
  that access point's strength;
* the device in AP mode (the hub's hotspot, whose "active access point" is the hotspot
  itself) or without a link: no signal;
* NetworkManager tells nothing (not on the bus; no such device; an active link without an
  access point, or one that vanished between two reads): ``fallback()``, the kernel's view
  (/proc/net/wireless);
* before the control has started (the daemon's first sample): nothing yet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from sdbus import DbusFailedError

from gatewayd.nm.profiles import STATE_ACTIVATED

log = logging.getLogger("gatewayd.ap")  # the control's lines, under one name

MODE_INFRA = 2  # NM_802_11_MODE_INFRA: a client of an access point (3 is AP mode: a hotspot)


class Radio(Protocol):
    """What :class:`WifiSignal` needs of the Wi-Fi control (:mod:`gatewayd.ap`)."""

    interface: str

    @property
    def bus(self) -> Any: ...


class WifiSignal:
    """``read()``: the signal of the network the hub is a client of, 0-100 %, or None."""

    def __init__(self, radio: Radio, fallback: Callable[[], int | None]) -> None:
        self._radio = radio
        self._fallback = fallback

    async def read(self) -> int | None:
        bus = self._radio.bus
        if bus is None:  # the control has not started: the next sample asks
            return None
        try:
            client, strength = await self._strength(bus)
        except DbusFailedError as exc:  # not on the bus, no such device, an AP gone
            log.debug("Wi-Fi signal: NetworkManager cannot tell (%s)", exc)
            client, strength = True, None
        if not client:
            return None
        return self._fallback() if strength is None else strength

    async def _strength(self, bus: Any) -> tuple[bool, int | None]:
        """Whether the device is a client of a network, and its access point's strength
        (None if NetworkManager names none)."""
        from sdbus_async.networkmanager import AccessPoint, NetworkDeviceWireless, NetworkManager

        path = await NetworkManager(bus).get_device_by_ip_iface(self._radio.interface)
        device = NetworkDeviceWireless(path, bus)
        if await device.state != STATE_ACTIVATED or await device.mode != MODE_INFRA:
            return False, None
        ap = await device.active_access_point
        if not ap or ap == "/":
            return True, None
        return True, max(0, min(100, int(await AccessPoint(ap, bus).strength)))
