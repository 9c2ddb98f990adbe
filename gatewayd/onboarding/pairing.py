"""The one pairing path: every entry point builds a :class:`PairingRequest` here.

HTTP ``/pair``, the admin form, ``/api/v1/pair``, BLE Improv and the BLE secure
service all call :func:`request_from_fields` and then :meth:`PairingService.submit`,
so the rules (in :mod:`gatewayd.credentials`) and the refusals are the same everywhere.

A request carries Wi-Fi and cloud credentials, or cloud credentials only (the "No Wi-Fi"
variant), or, only where the entry point explicitly allows it (Improv, which can carry
nothing but an SSID and a passphrase), Wi-Fi credentials only: "Wi-Fi first, cloud later".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gatewayd.config import CloudConfig
from gatewayd.credentials import (
    CloudCredentials,
    InvalidField,
    WifiCredentials,
    cloud_from_fields,
    wifi_from_fields,
)

log = logging.getLogger(__name__)

# Parameter names of the 2Smart app's /pair contract.
PAIR_FIELDS = ("ssid", "psk", "wsp", "token", "host", "brport", "rootTopic", "mqtts_port",
               "hidden")
CLOUD_FIELDS = ("wsp", "token", "host", "brport", "rootTopic", "mqtts_port")
MAX_FIELD_BYTES = 2048

RESET_HINT = ("To pair it again, hold the hub's button for 10 seconds or run "
              "'gatewayctl reset' on the hub.")


class PairingError(Exception):
    """A refusal with the HTTP status the portal answers and the parameter at fault."""

    status = 400

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidRequest(PairingError):
    status = 400


class NotInPairingMode(PairingError):
    status = 403


class PairingBusy(PairingError):
    status = 409


class PairingFailed(PairingError):
    status = 500


@dataclass(frozen=True)
class PairingRequest:
    # None: a "Wi-Fi first, cloud later" request (only from request_from_fields(...,
    # allow_wifi_only=True), i.e. Improv); the cloud part comes later over the LAN or BLE.
    cloud: CloudCredentials | None
    wifi: WifiCredentials | None  # None: the "No Wi-Fi" variant, cloud credentials only
    source: str = "http"

    def __post_init__(self) -> None:
        if self.cloud is None and self.wifi is None:
            raise ValueError("a pairing request needs Wi-Fi or cloud credentials")

    @property
    def wifi_only(self) -> bool:
        return self.cloud is None

    def redacted(self) -> dict[str, Any]:
        return {"source": self.source,
                "cloud": self.cloud.redacted() if self.cloud else None,
                "wifi": self.wifi.redacted() if self.wifi else None}


def _truthy(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("", "0", "false", "no", "off"):
        return False
    raise InvalidField(field, "must be true or false")


def request_from_fields(fields: Mapping[str, Any], presets: CloudConfig, *,
                        wifi_enabled: bool = True, source: str = "http",
                        allow_wifi_only: bool = False) -> PairingRequest:
    """Validate raw fields (query strings, form fields, JSON, BLE) into a request.

    Vendor presets fill what the request leaves out. Raises :class:`InvalidRequest`
    naming the first bad parameter; nothing is changed by a refused request.

    ``allow_wifi_only``: a request with Wi-Fi credentials, no cloud field of its own and
    no complete cloud account in the presets becomes a Wi-Fi-only request (``cloud`` is
    None) instead of a refusal. Only Improv asks for this; every other entry point
    requires the cloud fields (or presets) exactly as before.
    """
    for name, value in fields.items():
        if isinstance(value, str) and len(value.encode("utf-8", "replace")) > MAX_FIELD_BYTES:
            raise InvalidRequest(f"{name}: too long", name)

    def get(name: str, preset: Any = None) -> Any:
        value = fields.get(name)
        if value is None or value == "":
            return preset if preset not in (None, "", 0) else value
        return value

    try:
        ssid, psk = fields.get("ssid"), fields.get("psk")
        wifi: WifiCredentials | None = None
        if ssid is not None or psk is not None:
            if ssid is None or ssid == "":
                raise InvalidField("ssid", "is required when psk is given")
            if psk is None:
                raise InvalidField("psk", "is required with ssid (empty for an open network)")
            wifi = wifi_from_fields(ssid, psk, _truthy(fields.get("hidden", False), "hidden"))
        usable_wifi = wifi if wifi_enabled else None
        if allow_wifi_only and usable_wifi is not None and not _cloud_given(fields) \
                and not _presets_complete(presets):
            log.info("Wi-Fi-only pairing request: the cloud account comes later")
            return PairingRequest(cloud=None, wifi=usable_wifi, source=source)
        cloud = cloud_from_fields(
            wsp=get("wsp", presets.wsp), token=get("token", presets.token),
            host=get("host", presets.host),
            # The default port is a preset only when the vendor preset the broker too.
            port=get("brport", presets.port if presets.host else None),
            mqtts_port=get("mqtts_port", presets.mqtts_port) or 0,
            root_topic=get("rootTopic", presets.root_topic) or "",
        )
    except InvalidField as exc:
        raise InvalidRequest(f"{exc.field}: {exc.message}", exc.field) from None
    if wifi is not None and not wifi_enabled:
        # An Ethernet-only hub never touches Wi-Fi, whatever the app sends.
        log.info("ignoring Wi-Fi credentials: this hub is configured without Wi-Fi")
        wifi = None
    return PairingRequest(cloud=cloud, wifi=wifi, source=source)


def _cloud_given(fields: Mapping[str, Any]) -> bool:
    """Whether the request itself carries any cloud field (then it must be complete)."""
    return any(fields.get(name) not in (None, "") for name in CLOUD_FIELDS)


def _presets_complete(presets: CloudConfig) -> bool:
    """Whether the vendor's presets alone make a cloud account (as request_from_fields
    fills them in: the port counts only with a preset host)."""
    return bool(presets.wsp and presets.token and presets.host and presets.port)


class Onboarding(Protocol):
    """What the pairing service needs from the onboarding state machine."""

    @property
    def pairing_open(self) -> bool: ...

    @property
    def busy(self) -> bool: ...

    async def begin(self, request: PairingRequest) -> None: ...

    def progress(self) -> dict[str, Any]: ...


class PairingService:
    """Accepts validated requests and hands them to onboarding; returns at once."""

    def __init__(self, onboarding: Onboarding, presets: CloudConfig, *,
                 wifi_enabled: bool = True,
                 secrets_sink: Callable[..., None] | None = None) -> None:
        self.onboarding = onboarding
        self.presets = presets
        self.wifi_enabled = wifi_enabled
        # Told about every token and passphrase the moment they are parsed, so no later
        # log line can carry them (the daemon passes the log redactor's ``add``).
        self.secrets_sink = secrets_sink or (lambda *secrets: None)

    @property
    def open(self) -> bool:
        return self.onboarding.pairing_open

    def parse(self, fields: Mapping[str, Any], source: str, *,
              allow_wifi_only: bool = False) -> PairingRequest:
        for name in ("token", "psk"):
            if isinstance(fields.get(name), str):
                self.secrets_sink(fields[name])
        return request_from_fields(fields, self.presets, wifi_enabled=self.wifi_enabled,
                                   source=source, allow_wifi_only=allow_wifi_only)

    def check_open(self) -> None:
        # Busy first: pairing is closed while an attempt runs, and "already paired"
        # would be the wrong answer to a second request during it.
        if self.onboarding.busy:
            raise PairingBusy("A pairing attempt is already in progress; wait for its result.")
        if not self.onboarding.pairing_open:
            raise NotInPairingMode(f"This hub is already paired. {RESET_HINT}")

    async def submit(self, request: PairingRequest) -> dict[str, Any]:
        """Start applying ``request``; progress is then observable via :meth:`progress`."""
        self.check_open()
        log.info("pairing request from %s: %s", request.source, request.redacted())
        await self.onboarding.begin(request)
        return self.onboarding.progress()

    def progress(self) -> dict[str, Any]:
        return self.onboarding.progress()
