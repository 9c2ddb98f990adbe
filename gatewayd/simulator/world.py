"""The whole hardware-free world in one object: bus, NetworkManager, BlueZ, broker.

Used by ``gatewayd --simulate`` and, piece by piece, by the test fixtures.

What a restart of the same workdir keeps (docs/simulator.md): the broker's ports and accounts
(``broker/broker.json``), its TLS CA (``broker/pki``), the profiles the hub saved to
NetworkManager's "disk" (``nm/profiles.json``), the hub's MAC if ``--mac`` gave one
(``hardware.json``, gatewayd.simulator.run), and the hub's own state dir.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatewayd.config import Config, with_overrides
from gatewayd.simulator.broker import PLATFORM_USER, Account, Broker
from gatewayd.simulator.dbus_daemon import PrivateBus
from gatewayd.simulator.pki import sim_pki
from gatewayd.simulator.platform import SimPlatform
from gatewayd.simulator.provisioning import SimProvisioning
from gatewayd.simulator.provisioning_ops import attach
from gatewayd.simulator.uplink import Uplink
from gatewayd.simulator.zigbee_world import ZigbeeWorld

log = logging.getLogger(__name__)

SIM_WIFI_MAC = "dc:a6:32:12:34:56"
BUS_DIR = "bus"  # the private bus's socket, config and log: DIR/bus
UPLINK_SOCKET = "uplink.sock"  # DIR/nm/uplink.sock: the mock tells the uplink relay its state
SIM_ACCOUNT = ("developer@example.com", "sim-token-1234")
# A second user, to try re-pairing a hub with another account (ownership release).
SIM_OTHER_ACCOUNT = ("tester@example.com", "sim-token-5678")


@dataclass
class SimWorld:
    workdir: Path
    with_nm: bool = True
    with_bluez: bool = True
    with_platform: bool = True
    # A cable in eth0 with a working network (`--ethernet`); without it the hub is Wi-Fi only.
    ethernet: bool = False
    bus: PrivateBus | None = None
    nm: Any = None
    bluez: Any = None
    broker: Broker | None = None
    account: Account | None = None
    other_account: Account | None = None
    platform: SimPlatform | None = None
    # The platform's provisioning side (its own endpoint broker); what the hub was preset
    # with (`--provisioning`) goes to sim.json.
    provisioning: SimProvisioning | None = None
    provisioning_preset: dict[str, Any] | None = None
    access_points: list[dict[str, Any]] = field(default_factory=list)
    # "bellows": the NCP emulator in its own process (zigbee_world.py); "virtual": in-process.
    zigbee_radio: str = "bellows"
    zigbee: ZigbeeWorld | None = None
    # The simulated uplink (gatewayd.simulator.uplink), whose `open` `gatewayd --simulate`
    # gives its daemon as the cloud opener; needs the NetworkManager mock.
    with_uplink: bool = False
    # The hub's Wi-Fi MAC, which makes its identity (`--mac`; gatewayd.simulator.run).
    wifi_mac: str = SIM_WIFI_MAC
    uplink: Uplink | None = None

    def start(self) -> SimWorld:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            # Each part is assigned before it starts, so that stop() below also ends the
            # children of a part whose start failed half-way (a bus that never answered).
            self.zigbee = ZigbeeWorld(self.workdir / "zigbee", self.zigbee_radio)
            self.zigbee.launch()
            self.bus = PrivateBus(self.workdir / BUS_DIR)
            self.bus.start()
            if self.with_nm:
                from gatewayd.simulator.nm_mock import (
                    DEFAULT_ACCESS_POINTS,
                    NetworkManagerMock,
                )

                self.access_points = [dict(ap) for ap in DEFAULT_ACCESS_POINTS]
                extra: dict[str, Any] = {}
                if self.with_uplink:  # listening before the mock can announce anything
                    self.uplink = Uplink(self.workdir / "nm" / UPLINK_SOCKET).start()
                    extra["uplink_socket"] = str(self.uplink.state_socket)
                self.nm = NetworkManagerMock(self.bus, self.workdir / "nm", self.access_points,
                                             wifi_mac=self.wifi_mac, ethernet=self.ethernet,
                                             ethernet_connected=self.ethernet,
                                             profiles_file=self.workdir / "nm" / "profiles.json",
                                             extra_parameters=extra)
                self.nm.start()
            if self.with_bluez:
                from gatewayd.simulator.bluez_mock import BluezMock

                self.bluez = BluezMock(self.bus, self.workdir / "bluez")
                self.bluez.start()
            broker_dir = self.workdir / "broker"
            self.broker = Broker(broker_dir, tls=sim_pki(broker_dir / "pki"),
                                 state_file=broker_dir / "broker.json")
            self.account = self.broker.add_account(*SIM_ACCOUNT)
            self.other_account = self.broker.add_account(*SIM_OTHER_ACCOUNT)
            self.broker.start()
            if self.with_platform:
                self.platform = SimPlatform(
                    self.broker.host, self.broker.port, PLATFORM_USER,
                    self.broker.platform_password, self.workdir / "platform.json")
                self.platform.start()
                self.provisioning = SimProvisioning(
                    self.workdir / "provisioning", self.broker, self.account,
                    self.platform.responses)
                self.provisioning.start()
                attach(self.platform, self.provisioning)
            self.zigbee.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for part in (self.zigbee, self.provisioning, self.platform, self.broker, self.bluez,
                     self.nm, self.uplink, self.bus):
            if part is not None:
                try:
                    part.stop()
                except Exception:
                    log.exception("stopping %s failed", type(part).__name__)
        self.platform = self.provisioning = None
        self.broker = self.bluez = self.nm = self.bus = self.zigbee = self.uplink = None

    def hub_config(self, base: Config, portal_port: int = 0) -> Config:
        """The daemon's config inside this world: its dirs, loopback portal, simulated radios,
        and trust in the broker's TLS CA (unless ``base`` names a CA of its own)."""
        tls = self.broker.tls if self.broker is not None else None
        cloud = {"ca_file": str(tls.cafile)} if tls is not None and not base.cloud.ca_file \
            else {}
        return with_overrides(
            base,
            hub={"state_dir": str(self.workdir / "state"),
                 "runtime_dir": str(self.workdir / "run")},
            portal={"listen": "127.0.0.1", "port": portal_port},
            hotspot={"interface": "wlan0"},
            ble={"adapter": "hci0"},
            # The simulated button and LED (`gatewayctl button short|long`, SIGUSR1/SIGUSR2).
            button={"enabled": True},
            led={"enabled": True},
            # bellows on the NCP emulator: `gatewayctl zigbee sim join plug` and friends.
            zigbee=(self.zigbee.hub_settings() if self.zigbee is not None
                    else {"enabled": True, "radio": "virtual"}),
            cloud=cloud,
        )

    def describe(self, portal_url: str | None, control_socket: Path, state_dir: Path
                 ) -> dict[str, Any]:
        """The contents of sim.json (fields fixed by the design brief)."""
        assert self.broker is not None and self.bus is not None and self.account is not None
        info: dict[str, Any] = {
            "portal": portal_url,
            "mqtt": {"host": self.broker.host, "port": self.broker.port,
                     "monitor": {"username": "monitor",
                                 "password": self.broker.monitor_password},
                     "platform": {"username": PLATFORM_USER,
                                  "password": self.broker.platform_password},
                     "tls": ({"port": self.broker.tls.port, "ca": str(self.broker.tls.cafile)}
                             if self.broker.tls is not None else None)},
            "platform": ({"control": self.platform.control_url,
                          "responses": str(self.platform.responses)}
                         if self.platform is not None else None),
            "system_bus": self.bus.address,
            "control_socket": str(control_socket),
            "state_dir": str(state_dir),
            "account": {"wsp": self.account.wsp, "token": self.account.token,
                        "username": self.account.username},
            "accounts": [{"wsp": a.wsp, "token": a.token, "username": a.username}
                         for a in self.broker.accounts],
            "wifi": list({ap["ssid"]: {"ssid": ap["ssid"], "psk": ap.get("psk", ""),
                                       "security": ap.get("security", ""),
                                       "hidden": ap.get("hidden", False)}
                          for ap in self.access_points}.values()),  # one per SSID
        }
        info["provisioning"] = ({"mode": "pairing", **(self.provisioning_preset or {}),
                                  "endpoint": self.provisioning.endpoint()}
                                 if self.provisioning is not None else None)
        info["network"] = {"wifi_interface": "wlan0", "wifi_mac": self.wifi_mac,
                           "ethernet_interface": "eth0" if self.ethernet else None}
        if self.bluez is not None:
            info["ble"] = {"hub_adapter": "hci0", "phone_adapter": "hci1"}
        if self.zigbee is not None:
            info["zigbee"] = self.zigbee.describe()
        return info
