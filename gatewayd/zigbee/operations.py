"""What users ask of the Zigbee bridge (a base of :class:`~gatewayd.bridge.ZigbeeBridge`,
kept apart so each reads in one sitting): permit join, install codes, removal, the simulated
radio's handle, and what ``gatewayctl status`` and ``gatewayctl devices`` show.

Every request refuses with a :class:`~gatewayd.zigbee.inputs.BridgeError` (its code, a
sentence): bad input before the radio is asked, ``UNREACHABLE`` while the radio is down or
when it fails the request (:func:`~gatewayd.zigbee.radio.radio_request`).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatewayd.config import ZigbeeConfig
from gatewayd.zigbee.children import Children
from gatewayd.zigbee.inputs import (
    BridgeError,
    parse_device_ieee,
    parse_ieee,
    parse_install_code,
)
from gatewayd.zigbee.permits import PermitJoin
from gatewayd.zigbee.radio import (
    FastPaths,
    RadioError,
    ncp_version,
    radio_request,
    virtual_network,
)
from gatewayd.zigbee.simlink import SimLink, SimUnavailable, sim_link

if TYPE_CHECKING:
    from zigpy.application import ControllerApplication

    from gatewayd.zigbee.virtual.radio import VirtualNetwork


class BridgeOperations:
    """The bridge's requests; the bridge provides what is declared here."""

    cfg: ZigbeeConfig
    state_dir: Path
    app: ControllerApplication | None
    radio_up: asyncio.Event
    last_error: str | None
    db_aside: Path | None
    permits: PermitJoin
    children: Children
    fast: FastPaths
    _sim: SimLink | None
    _virtual: VirtualNetwork | None
    _virtual_lock: threading.Lock

    def _is_child(self, dev: Any) -> bool:
        raise NotImplementedError

    def radio_ready(self) -> bool:
        raise NotImplementedError

    def _require_app(self) -> ControllerApplication:
        if self.app is None or not self.radio_up.is_set():
            raise BridgeError(f"the Zigbee radio is not running ({self.last_error or 'starting'})",
                              "UNREACHABLE")
        return self.app

    async def permit_join(self, seconds: int | None = None) -> int:
        """Open (or with 0 close) joining for ``seconds`` (default: zigbee.permit_join_max)."""
        with radio_request("close joining" if seconds == 0 else "open joining",
                           self.radio_ready):
            return await self.permits.open(self._require_app(), seconds)

    def permit_remaining(self) -> int:
        return self.permits.remaining() if self.radio_up.is_set() else 0

    async def add_install_code(self, ieee: str, code: str, seconds: int | None = None) -> str:
        """Let ``ieee`` join with its Zigbee 3.0 install code; opens joining for it."""
        address = parse_device_ieee(ieee)  # these refused even while the radio is down
        parse_install_code(code)
        app = self._require_app()
        if address == str(app.state.node_info.ieee):
            raise BridgeError(f"{address} is the hub's own Zigbee radio, not a device: check "
                              "the address printed on the device")
        with radio_request("take the install code", self.radio_ready):
            return await self.permits.with_install_code(app, ieee, code, seconds)

    async def remove(self, ieee: str) -> str:
        """Ask a device to leave and forget it; its retained topics are cleared."""
        address = parse_ieee(ieee)
        import zigpy.types  # only with Zigbee on: the bridge's start has loaded it (preload)
        app = self._require_app()
        eui = zigpy.types.EUI64.convert(address)
        if eui not in app.devices or not self._is_child(app.devices[eui]):
            raise BridgeError(f"no Zigbee device {address}")
        with radio_request("remove the device", self.radio_ready):
            await app.remove(eui)
        return address

    @property
    def virtual(self) -> VirtualNetwork | None:
        """The simulated network when ``zigbee.radio = "virtual"`` (event injection): the
        one the radio runs, loaded from the world file at first use and kept."""
        with self._virtual_lock:  # the control socket's threads ask too: one network
            if self._virtual is None:
                self._virtual = virtual_network(self.cfg, self.state_dir)
            return self._virtual

    @property
    def sim(self) -> SimLink | None:
        """``gatewayctl zigbee sim``: the virtual radio's, or the NCP emulator's at
        ``zigbee.sim_control``; None for a real radio."""
        if self._sim is None:
            try:
                network = self.virtual
            except RadioError as exc:  # a damaged world file: the message names it
                raise SimUnavailable(str(exc)) from exc
            self._sim = sim_link(network, self.cfg.sim_control)
        return self._sim

    def devices(self) -> list[dict[str, Any]]:
        """What ``gatewayctl devices`` lists; JSON-able."""
        return sorted((c.listing() for c in self.children.values()), key=lambda d: d["device_id"])

    def status(self) -> dict[str, Any]:
        """For ``gatewayctl status``; never the network key. ``db_moved_aside``: where a
        damaged ``zigbee.db`` went since the daemon started (db_file.py), else null."""
        app = self.app if self.radio_up.is_set() else None
        info = app.state.network_info if app is not None else None
        return {"radio": self.cfg.radio, "up": app is not None, "error": self.last_error,
                "ncp_version": ncp_version(app) if app is not None else None,
                "channel": int(info.channel) if info else None,
                "pan_id": f"0x{int(info.pan_id):04x}" if info else None,
                "devices": len(self.children), "permit_join": self.permit_remaining(),
                "fast_path": self.fast.counts(),
                "db_moved_aside": str(self.db_aside) if self.db_aside else None}
