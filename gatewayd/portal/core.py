"""The portal's one adapter to the asyncio core.

Every view runs in a waitress worker thread; whatever it needs from the hub,
the pairing service or onboarding goes through :class:`~gatewayd.runtime.corecall.CoreCall`
here, so no view touches core objects from the wrong thread.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gatewayd.config import CloudConfig
from gatewayd.hub import Hub
from gatewayd.onboarding.pairing import PairingError, PairingService, reset_hint
from gatewayd.onboarding.progress import Progress
from gatewayd.runtime.corecall import CoreCall

log = logging.getLogger(__name__)
MAX_NETWORKS = 64  # a scan in a block of flats can list hundreds; the panel needs a few


class PortalOnboarding(Protocol):
    """What the portal needs from onboarding beyond
    :class:`gatewayd.onboarding.pairing.Onboarding`."""

    def networks(self) -> list[dict[str, Any]]:
        """Scanned networks, strongest first, deduplicated:
        ``{"ssid": str, "signal": 0-100, "security": "open"|"wpa2"|"wpa3"|"wpa2/wpa3"}``."""
        ...

    def note_activity(self) -> None:
        """A person is using the portal: onboarding holds off retries that drop the hotspot."""
        ...

    async def on_ethernet(self) -> bool:
        """A Wi-Fi hub on its cable: the panel offers the cable (cloud only), no network."""
        ...


@dataclass(frozen=True)
class Snapshot:
    """What a request needs to decide between pairing form, captive redirect and login."""

    pairing_open: bool
    paired: bool  # credentials are stored (committed only once an attempt succeeded)
    captive: bool  # the hotspot is up: detection URLs and foreign names lead to the panel
    # Paired, offline on its hotspot: a signed-in admin may pair it again from the panel.
    repairable: bool = False

    @property
    def admin_only(self) -> bool:
        """The panel and the private API need the admin password: always once the hub is
        paired, whatever its state (offline on its hotspot too: whoever is in Wi-Fi range
        is not its owner), except while the window a short press opens makes it open for
        pairing (the person at the hub pairs it).

        Not while an unpaired hub's first attempt runs (pairing is closed then, but the
        person who started it must keep seeing its progress).
        """
        return self.paired and not self.pairing_open


def _normalise_code(value: str) -> str:
    # The label prints the setup code as 1234-5678; people type it either way.
    return value.replace("-", "").replace(" ", "")


class PortalCore:
    """Thread-side facade: each method is one hop into the core loop."""

    def __init__(self, hub: Hub, call: CoreCall, pairing: PairingService,
                 onboarding: PortalOnboarding, *, people: bool = True) -> None:
        """``people``: requests come from people on the hotspot (the portal), not from
        ``gatewayctl`` (the control socket), so they count as activity."""
        self.hub = hub
        self.call = call
        self.pairing = pairing
        self.onboarding = onboarding
        self.people = people
        self.hotspot_ip = str(ipaddress.IPv4Interface(hub.config.hotspot.address).ip)

    @property
    def wifi_enabled(self) -> bool:
        return self.pairing.wifi_enabled

    @property
    def presets(self) -> CloudConfig:
        return self.pairing.presets

    def _touch(self) -> None:
        """Runs on the core: tell onboarding someone is at the panel (or an app is pairing)."""
        if self.people:
            self.onboarding.note_activity()

    # ---- reads ----------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        async def _snap() -> Snapshot:
            self._touch()
            return Snapshot(self.pairing.open, self.hub.state.paired,
                            self.pairing.progress().hotspot,
                            self.pairing.onboarding.repairable)
        return self.call(_snap)

    def status(self) -> dict[str, Any]:
        async def _status() -> dict[str, Any]:
            return self.hub.status()
        return self.call(_status)

    def provisioning(self) -> dict[str, Any] | None:
        """A provisioned hub's ``provisioning`` status section (docs/provisioning.md)."""
        async def _provisioning() -> dict[str, Any] | None:
            section = self.hub.section("provisioning")
            return section if isinstance(section, dict) else None
        return self.call(_provisioning)

    def account(self) -> str | None:
        """The stored cloud account as the status shows it (``u***@example.com``)."""
        async def _account() -> str | None:
            cloud = self.hub.state.cloud
            return str(cloud.redacted()["account"]) if cloud is not None else None
        return self.call(_account)

    def hotspot_up(self) -> bool:
        """Whether the hub's hotspot is up now (not activity: nobody asked for a page)."""
        async def _up() -> bool:
            return self.pairing.progress().hotspot
        return self.call(_up)

    def reset_hint(self) -> str:
        """How this hub is reset to pair it again: its own button's hold time, or
        'gatewayctl reset' alone on a hub without a button."""
        async def _hint() -> str:
            return reset_hint(self.pairing.onboarding.long_press_seconds)
        return self.call(_hint)

    def progress(self) -> Progress:
        async def _progress() -> Progress:
            self._touch()
            return self.pairing.progress()
        return self.call(_progress)

    def networks(self) -> list[dict[str, Any]]:
        if not self.wifi_enabled:
            return []

        async def _networks() -> list[dict[str, Any]]:
            self._touch()
            return list(self.onboarding.networks())[:MAX_NETWORKS]
        return self.call(_networks)

    def on_ethernet(self) -> bool:
        """A Wi-Fi hub on its cable: Wi-Fi credentials would not be applied (False if
        NetworkManager cannot say: the form then asks for a network, as before)."""
        if not self.wifi_enabled:
            return False

        async def _on_ethernet() -> bool:
            try:
                return await self.onboarding.on_ethernet()
            except Exception:
                log.exception("could not read the Ethernet device's state")
                return False
        return self.call(_on_ethernet)

    # ---- actions --------------------------------------------------------------------------

    def submit(self, fields: Callable[[], Mapping[str, Any]], source: str, *,
               admin: bool = False) -> Progress:
        """Hand the request to the pairing service's front door, in one hop to the core.

        Raises a PairingError subclass. ``fields`` extracts the fields from the entry
        point's format; it must not touch Flask's request context: it runs on the core's
        thread, after the busy and mode checks. ``admin``: the request comes with a
        signed-in admin's session.
        """
        async def _submit() -> Progress:
            self._touch()
            return await self.pairing.submit(fields, source, admin=admin)
        return self.call(_submit)

    def count_refusal(self, refusal: PairingError) -> None:
        """Count a refusal the portal gave before the front door, with the front door's
        own (``gatewayctl status``: ``pairing.refused``)."""
        async def _count() -> None:
            self.pairing.count(refusal)
        self.call(_count)

    def check_admin_password(self, candidate: str) -> bool:
        configured = self.hub.config.portal.admin_password

        async def _setup_code() -> str:
            return self.hub.state.setup_code
        if configured:
            expected, given = configured, candidate
        else:
            expected, given = self.call(_setup_code), _normalise_code(candidate)
        return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
