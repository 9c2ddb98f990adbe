"""What the virtual-device host knows about one configured device (:class:`Hosted`)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from gatewayd import homie
from gatewayd.virtual.budget import Outlet
from gatewayd.virtual.planning import Plan
from gatewayd.virtual.plugin import VirtualDevice


@dataclass
class Hosted:
    """One configured device and what the host knows about it."""

    plan: Plan
    name: str
    log: logging.Logger
    plugin: VirtualDevice | None = None
    device: homie.Device | None = None
    faults: dict[str, str] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)  # of each fault: logged once a kind
    failures: int = 0
    in_a_row: int = 0  # faults since the last call that worked
    plugin_state: str = "ready"
    configured: dict[str, Any] = field(default_factory=dict)  # kept properties' config values
    plugin_reason: str | None = None  # why the plugin set that state, for gatewayctl devices
    added: bool = False  # the cloud link knows the device
    started: bool = False
    stopped: bool = False
    poller: asyncio.Task[None] | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)  # from VirtualDevice.spawn
    outlet: Outlet | None = None  # its publish path and budget, once the link has the device

    @property
    def device_id(self) -> str:
        return self.plan.device_id

    @property
    def state(self) -> str:
        if self.device is None:
            return "init"
        return self.device.state

    @property
    def problems(self) -> list[str]:
        """What is wrong with the device, for a person: its faults and its own reason."""
        reasons = list(self.faults.values())
        if self.plugin_reason is not None:
            reasons.append(self.plugin_reason)
        return reasons
