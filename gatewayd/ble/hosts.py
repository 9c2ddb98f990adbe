"""The hub as the BLE services see it: the Improv host and the secure service's host.

Each implements its service's host Protocol (:class:`~gatewayd.ble.improv_service.ImprovHost`,
:class:`~gatewayd.ble.secure_service.SecureHost`) over the hub's configuration, the
onboarding state machine and the pairing service. Pairing goes through the one front door,
:meth:`gatewayd.onboarding.pairing.PairingService.submit`, like every other entry point;
only the vocabulary of the answer differs (Improv's error codes, the secure service's JSON).
"""

from __future__ import annotations

import logging
import platform
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from gatewayd import __version__
from gatewayd.ble.improv_codec import Capability, Error
from gatewayd.ble.improv_service import ImprovRefused
from gatewayd.config import Config
from gatewayd.identity import Identity
from gatewayd.onboarding.pairing import InvalidRequest, PairingError, PairingService
from gatewayd.onboarding.progress import Progress
from gatewayd.state import StateStore

if TYPE_CHECKING:
    from sdbus import SdBus

log = logging.getLogger(__name__)

WIFI_FIELDS = ("ssid", "psk", "hidden")
# NetworkManager's scan cache names -> the auth types Improv's scan result spells out.
IMPROV_AUTH = {"open": "NO", "wpa2": "WPA2", "wpa3": "WPA3", "wpa2/wpa3": "WPA2/WPA3"}

TextHook = Callable[[str], Awaitable[str]]


class HubOnboarding(Protocol):
    """What the hosts read of the onboarding state machine."""

    @property
    def pairing_open(self) -> bool: ...

    def progress(self) -> Progress: ...

    def networks(self) -> list[dict[str, Any]]: ...


@dataclass
class HubView:
    """The hub the services talk about; ``name`` is the advertised local name (Improv may
    rename it, which every reader sees)."""

    config: Config
    identity: Identity
    store: StateStore
    onboarding: HubOnboarding
    pairing: PairingService
    name: str
    # A provisioned hub's provisioning ({"mode", "state", "verification_code"}), or None
    # (pairing mode): the daemon sets it (docs/provisioning.md, "What the technician sees").
    provisioning: Callable[[], dict[str, Any] | None] = lambda: None


def improv_provisioned(busy: bool, progress: Progress) -> bool:
    """Improv's "provisioned": the hub needs no Wi-Fi from an Improv client. That is a
    paired hub out of pairing mode, or a hub on its Wi-Fi network (paired or not)."""
    if busy:
        return False
    return not progress.pairing_open or progress.network == "wifi"


class ImprovHubHost:
    """:class:`~gatewayd.ble.improv_service.ImprovHost` for the hub."""

    def __init__(self, hub: HubView, *, identify: Callable[[], Awaitable[None]] | None = None,
                 set_hostname: TextHook | None = None, set_device_name: TextHook | None = None,
                 renamed: Callable[[str], Awaitable[None]] | None = None,
                 max_name: int = 29) -> None:
        self.hub = hub
        self._identify = identify
        self._set_hostname = set_hostname
        self._set_device_name = set_device_name
        self._renamed = renamed
        self._max_name = max_name
        self.attempt: str | None = None  # the attempt Improv started, until it ends
        self.wifi_only = False
        self.problem = self._problem()

    def _problem(self) -> str | None:
        """Why Improv is not offered, or None. Improv carries only an SSID and passphrase:
        with complete cloud presets it pairs fully, otherwise it gives the hub Wi-Fi only."""
        config = self.hub.config
        if not config.ble.improv:
            return "disabled in the config ([ble] improv)"
        if not self.hub.pairing.wifi_enabled or not config.hotspot.enabled:
            return "this hub has no Wi-Fi"
        try:
            # A probe of the presets, not a request: validation only, nothing starts.
            request = self.hub.pairing.parse({"ssid": "improv-probe", "psk": ""},
                                             "ble-improv", allow_wifi_only=True)
        except InvalidRequest as exc:  # presets that do not validate
            return f"Improv Wi-Fi settings would be refused: {exc.message}"
        if request.wifi is None:
            return "this hub takes no Wi-Fi credentials"
        self.wifi_only = request.wifi_only
        return None

    @property
    def improv_capabilities(self) -> Capability:
        caps = Capability.DEVICE_INFO | Capability.SCAN_WIFI
        if self._identify is not None:
            caps |= Capability.IDENTIFY
        if self._set_hostname is not None:
            caps |= Capability.HOSTNAME
        return caps

    async def improv_wifi(self, ssid: str, psk: str) -> None:
        try:
            progress = await self.hub.pairing.submit({"ssid": ssid, "psk": psk}, "ble-improv",
                                                     allow_wifi_only=True)
        except PairingError as exc:
            # Credentials that cannot work: what Improv clients show as "unable to connect"
            # is what the user must fix. Every other refusal is Improv's "unknown".
            wifi_fault = isinstance(exc, InvalidRequest) and exc.field in WIFI_FIELDS
            raise ImprovRefused(Error.UNABLE_TO_CONNECT if wifi_fault else Error.UNKNOWN,
                                exc.message, refusal=exc) from None
        self.attempt = progress.attempt_id

    def improv_device_info(self) -> list[str]:
        hub = self.hub.config.hub
        name = self.hub.name
        code = (self.hub.provisioning() or {}).get("verification_code")
        if code:  # Improv's one free-text field: where an Improv client shows it
            name = f"{name} (code {code})"
        return [hub.fw_name, hub.fw_version, _hardware(), name]

    def improv_networks(self) -> list[tuple[str, int, str]]:
        networks = []
        for net in self.hub.onboarding.networks():
            auth = IMPROV_AUTH.get(net.get("security", ""))
            if auth is not None:  # WEP and enterprise networks cannot be paired to
                # NetworkManager reports 0-100 %; Improv wants dBm (NM's own mapping).
                networks.append((net["ssid"], int(net["signal"]) // 2 - 100, auth))
        return networks

    async def improv_identify(self) -> None:
        if self._identify is not None:
            await self._identify()

    async def improv_hostname(self, new: str | None) -> str:
        if new is None or self._set_hostname is None:
            return socket.gethostname()
        return await self._set_hostname(new)

    async def improv_device_name(self, new: str | None) -> str:
        if new is None:
            return self.hub.name
        if self._set_device_name is None:
            raise ImprovRefused(Error.BAD_HOSTNAME, "this hub's name is set by its vendor")
        self.hub.name = truncate(await self._set_device_name(new), self._max_name)
        if self._renamed is not None:
            await self._renamed(self.hub.name)
        return self.hub.name


class SecureHubHost:
    """:class:`~gatewayd.ble.secure_service.SecureHost` for the hub."""

    def __init__(self, hub: HubView) -> None:
        self.hub = hub

    def setup_code(self) -> str:
        return self.hub.store.state.setup_code

    def secure_summary(self) -> dict[str, Any]:
        summary = {"device_id": self.hub.identity.device_id,
                   "product": self.hub.config.hub.product, "name": self.hub.name,
                   "pairing_open": self.hub.onboarding.pairing_open}
        provisioning = self.hub.provisioning()
        if provisioning is not None:
            summary["provisioning"] = provisioning
        return summary

    def secure_device_info(self) -> dict[str, Any]:
        config = self.hub.config
        return {**self.secure_summary(), "mac": self.hub.identity.mac,
                "firmware": {"name": config.hub.fw_name, "version": config.hub.fw_version,
                             "gatewayd": __version__},
                "wifi": self.hub.pairing.wifi_enabled, "presets": self._presets(),
                "state": self.hub.onboarding.progress().state}

    def _presets(self) -> list[str]:
        """Which /pair fields the vendor preset, so the app may leave them out."""
        cloud = self.hub.config.cloud
        names = {"wsp": cloud.wsp, "token": cloud.token, "host": cloud.host,
                 "brport": cloud.host, "rootTopic": cloud.root_topic,
                 "mqtts_port": cloud.mqtts_port}
        return [name for name, value in names.items() if value]

    async def secure_pair(self, fields: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
        return (await self.hub.pairing.submit(fields, "ble")).to_json()

    def secure_progress(self) -> dict[str, Any]:
        return self.hub.onboarding.progress().to_json()

    def secure_networks(self) -> list[dict[str, Any]]:
        return self.hub.onboarding.networks()


def truncate(text: str, limit: int) -> str:
    """At most ``limit`` UTF-8 bytes, never half a character."""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def _hardware() -> str:
    try:
        model = Path("/proc/device-tree/model").read_bytes().rstrip(b"\x00").decode()
    except (OSError, UnicodeDecodeError):
        model = ""
    return model or platform.machine() or "unknown"


async def lan_panel_url(config: Config, bus: SdBus | None) -> str | None:
    """The admin panel on the LAN (Improv's redirect URL):
    http://<NetworkManager's primary IPv4 address>/, or None."""
    portal = config.portal
    if not portal.enabled or portal.port == 0 or bus is None:
        return None
    address = await lan_address(bus)
    if address is None:
        return None
    return f"http://{address}/" if portal.port == 80 else f"http://{address}:{portal.port}/"


async def lan_address(bus: SdBus) -> str | None:
    """IPv4 address of NetworkManager's primary connection, or None."""
    from sdbus_async.networkmanager import ActiveConnection, IPv4Config, NetworkManager

    try:
        primary = await NetworkManager(bus).primary_connection
        if primary in ("", "/"):
            return None
        ip4 = await ActiveConnection(primary, bus).ip4_config
        if ip4 in ("", "/"):
            return None
        for entry in await IPv4Config(ip4, bus).address_data:
            return str(entry["address"][1])
    except Exception as exc:
        log.info("no LAN address from NetworkManager: %s", exc)
    return None
