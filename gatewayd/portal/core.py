"""The portal's one adapter to the asyncio core.

Every view runs in a waitress worker thread; whatever it needs from the hub,
the pairing service or onboarding goes through :class:`~gatewayd.runtime.corecall.CoreCall`
here, so no view touches core objects from the wrong thread.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gatewayd.config import CloudConfig
from gatewayd.hub import Hub
from gatewayd.onboarding.pairing import PairingBusy, PairingFailed, PairingRequest, PairingService
from gatewayd.runtime.corecall import CoreCall

BUSY_MESSAGE = "A pairing attempt is already in progress; wait for its result."
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


@dataclass(frozen=True)
class Snapshot:
    """What a request needs to decide between pairing form, captive redirect and login."""

    pairing_open: bool
    paired: bool  # credentials are stored (committed only once an attempt succeeded)
    captive: bool  # the hotspot is up: detection URLs and foreign names lead to the panel

    @property
    def admin_only(self) -> bool:
        """The panel and the private API need the admin password.

        Not while an unpaired hub's first attempt runs (pairing is closed then, but the
        person who started it must keep seeing its progress), and not while a paired hub
        that fell back to its hotspot is open for re-pairing.
        """
        return self.paired and not self.pairing_open


class _NoOnboarding:
    """Stands in while the daemon runs the portal without an onboarding state machine.

    Pairing is then refused with a 500 that says why, instead of the portal failing to start.
    """

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    @property
    def pairing_open(self) -> bool:
        return not self.hub.state.paired

    @property
    def busy(self) -> bool:
        return False

    async def begin(self, request: PairingRequest) -> None:
        raise PairingFailed("Pairing is not available: the onboarding service is not running.")

    def progress(self) -> dict[str, Any]:
        return {"state": "paired" if self.hub.state.paired else "unpaired", "step": None,
                "attempt": None, "last_failure": None, "pairing_open": self.pairing_open}

    def networks(self) -> list[dict[str, Any]]:
        return []

    def note_activity(self) -> None:
        pass


def _normalise_code(value: str) -> str:
    # The label prints the setup code as 1234-5678; people type it either way.
    return value.replace("-", "").replace(" ", "")


class PortalCore:
    """Thread-side facade: each method is one hop into the core loop."""

    def __init__(self, hub: Hub, call: CoreCall, pairing: PairingService | None = None,
                 onboarding: PortalOnboarding | None = None, *, people: bool = True) -> None:
        """``people``: requests come from people on the hotspot (the portal), not from
        ``gatewayctl`` (the control socket), so they count as activity."""
        self.hub = hub
        self.call = call
        if pairing is None or onboarding is None:
            stand_in = _NoOnboarding(hub)
            pairing = pairing or PairingService(stand_in, hub.config.cloud,
                                                wifi_enabled=hub.config.hotspot.enabled)
            onboarding = onboarding or stand_in
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
            open_ = self.pairing.open
            hotspot = self.pairing.progress().get("hotspot")
            if not isinstance(hotspot, bool):
                # Onboarding does not say: assume the hotspot is up while pairing is open,
                # except on Ethernet-only hubs, which have none.
                hotspot = open_ and self.hub.config.hotspot.enabled
            return Snapshot(open_, self.hub.state.paired, hotspot)
        return self.call(_snap)

    def status(self) -> dict[str, Any]:
        async def _status() -> dict[str, Any]:
            return self.hub.status()
        return self.call(_status)

    def progress(self) -> dict[str, Any]:
        async def _progress() -> dict[str, Any]:
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

    # ---- actions --------------------------------------------------------------------------

    def submit(self, fields: Callable[[], Mapping[str, Any]], source: str) -> dict[str, Any]:
        """Check pairing mode, extract and validate the fields, hand over.

        Raises a PairingError subclass. One hop: the busy and mode checks come before
        validation (a paired hub answers 403 whatever the input), and no request can slip
        in between a check and the start of an attempt. ``fields`` must not touch Flask's
        request context: it runs on the core's thread.
        """
        async def _submit() -> dict[str, Any]:
            self._touch()
            if self.pairing.onboarding.busy:
                # Before check_open: onboarding closes pairing while an attempt runs, and
                # "already paired" would be the wrong answer to a second request.
                raise PairingBusy(BUSY_MESSAGE)
            self.pairing.check_open()
            request = self.pairing.parse(fields(), source)
            return await self.pairing.submit(request)
        return self.call(_submit)

    def check_admin_password(self, candidate: str) -> bool:
        configured = self.hub.config.portal.admin_password

        async def _setup_code() -> str:
            return self.hub.state.setup_code
        if configured:
            expected, given = configured, candidate
        else:
            expected, given = self.call(_setup_code), _normalise_code(candidate)
        return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
