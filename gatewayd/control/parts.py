"""What the control socket's endpoints reach (:class:`ControlParts`), among them who has
child devices to list (:class:`DeviceProviders`, behind ``GET /api/v1/devices`` and the
status's ``devices`` section).

Apart from the endpoints so that the daemon assembles them without loading Flask: the
control app is built from them on the socket's first request
(:mod:`~gatewayd.control.build`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gatewayd.hardware.component import Hardware
from gatewayd.hub import INTERNAL_MESSAGE, Hub
from gatewayd.onboarding.pairing import PairingService
from gatewayd.portal.core import PortalOnboarding
from gatewayd.portal.signins import SignIns
from gatewayd.runtime.corecall import CoreCall
from gatewayd.runtime.logsetup import RepeatedFaults

if TYPE_CHECKING:
    from gatewayd.bridge import ZigbeeBridge
    from gatewayd.cloud.reqres import PlatformClient

log = logging.getLogger(__name__)

DeviceListProvider = Callable[[], list[dict[str, Any]]]


class DeviceProviders:
    """Who has child devices to list; each provider is called on the loop."""

    def __init__(self) -> None:
        self._providers: dict[str, DeviceListProvider] = {}
        self._faults = RepeatedFaults(log)  # a status call lists them too: every few seconds

    def add(self, name: str, provider: DeviceListProvider) -> None:
        self._providers[name] = provider

    def collect(self) -> dict[str, Any]:
        devices: list[dict[str, Any]] = []
        errors: dict[str, str] = {}
        for name, provider in self._providers.items():
            try:
                found = provider()
                self._faults.ok(name)
            except Exception as exc:
                # One broken provider must not hide the others' devices; no provider
                # refuses, so what failed is a fault, for the log only.
                self._faults.failed(name, exc, "device list of %s failed", name)
                errors[name] = INTERNAL_MESSAGE
                continue
            devices.extend({"provider": name, **entry} for entry in found)
        devices.sort(key=lambda d: str(d.get("device_id", "")))
        return {"devices": devices, "errors": errors}


@dataclass
class ControlParts:
    """What the control socket's endpoints reach; ``None`` for a feature that is off."""

    hub: Hub
    call: CoreCall
    providers: DeviceProviders
    hardware: Hardware
    pairing: PairingService
    onboarding: PortalOnboarding
    bridge: ZigbeeBridge | None = None
    platform: PlatformClient | None = None
    ble: Any = None  # gatewayd.ble_commission.BleCommissioner, with BLE on
    sign_ins: SignIns | None = None  # the portal's admin sign-ins, with the portal on
