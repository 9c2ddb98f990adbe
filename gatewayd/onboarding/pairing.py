"""The one pairing path: every entry point builds a :class:`PairingRequest` here.

HTTP ``/pair``, the admin form, ``/api/v1/pair``, BLE Improv and the BLE secure
service all call :meth:`PairingService.submit`, which checks busy -> open -> valid in
that order and begins the attempt, so the rules (in :mod:`gatewayd.credentials`), the
order of the checks and the refusals (their codes live on :class:`PairingError`'s
subclasses, here only) are the same everywhere.

A request carries Wi-Fi and cloud credentials, or cloud credentials only (the "No Wi-Fi"
variant), or Wi-Fi credentials only: where the entry point explicitly allows it (Improv,
which can carry nothing but an SSID and a passphrase), "Wi-Fi first, cloud later"; and from
a signed-in admin re-pairing a paired hub from its hotspot, "a new network, the same
account" (the stored account is kept).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from gatewayd.config import CloudConfig
from gatewayd.credentials import (
    RAW_KEY_WPA3,
    CloudCredentials,
    InvalidField,
    WifiCredentials,
    cloud_from_fields,
    raw_wpa_key,
    wifi_from_fields,
)
from gatewayd.onboarding.progress import Progress

log = logging.getLogger(__name__)

# Parameter names of the 2Smart app's /pair contract.
PAIR_FIELDS = ("ssid", "psk", "wsp", "token", "host", "brport", "rootTopic", "mqtts_port",
               "hidden")
CLOUD_FIELDS = ("wsp", "token", "host", "brport", "rootTopic", "mqtts_port")
MAX_FIELD_BYTES = 2048

# What the scan reports for WEP and enterprise networks (gatewayd.ap.security_of).
UNSUPPORTED_SECURITY = "unsupported"
NOT_UTF8 = ("is not valid UTF-8 (or holds U+FFFD); networks whose names are not UTF-8 are "
            "not supported")
UNSUPPORTED_NETWORK = ("this network uses a security the hub does not support (WEP, or an "
                       "enterprise network such as eduroam); choose another network")

def _count(value: float, unit: str) -> str:
    text = f"{value:g}"
    return f"{text} {unit}" if text == "1" else f"{text} {unit}s"


def _seconds(value: float) -> str:
    return _count(value, "second")


def _window(seconds: float) -> str:
    """How long the window lasts, never longer than it does: whole minutes (rounded down),
    or seconds under a minute (``[ble] window_seconds`` may be as short as 10 s)."""
    minutes = int(seconds) // 60
    return _count(minutes, "minute") if minutes else _seconds(seconds)


def _reset_how(button_seconds: float | None) -> str:
    shell = "run 'gatewayctl reset' on the hub"
    if button_seconds is None:
        return shell
    return f"hold the hub's button for {_seconds(button_seconds)} or {shell}"


def reset_hint(button_seconds: float | None) -> str:
    """How a paired hub is reset to pair it again, said in this one place (the refusals,
    the panel's dashboard): its button held for ``button_seconds`` (``[button]
    long_press_seconds``; None: the hub has no button, ``[button] enabled`` false), or
    'gatewayctl reset' on the hub."""
    return f"To pair it again, {_reset_how(button_seconds)}."


def repair_hint(window_seconds: float | None, button_seconds: float | None) -> str:
    """How a paired hub that is offline with its hotspot up is paired again without a reset
    (docs/onboarding.md): the window a short press opens, or the admin's sign-in.
    ``window_seconds`` None: the hub has no such window; ``button_seconds`` as
    :func:`reset_hint`."""
    press = ""
    if window_seconds:
        how = ("press the hub's button briefly (or run 'gatewayctl button short' on it)"
               if button_seconds is not None else "run 'gatewayctl button short' on the hub")
        press = f"{how} and pair within {_window(window_seconds)}, or "
    return (f"To pair it again, {press}sign in to its panel as admin and pair there; or "
            f"reset it: {_reset_how(button_seconds)}.")


class PairingError(Exception):
    """A refusal: the HTTP-style status and the code every entry point answers with, and the
    parameter at fault. Each subclass is one refusal; its status and code live here only."""

    status = 400
    code = "invalid"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_json(self) -> dict[str, Any]:
        """The refusal as the JSON API and the secure BLE service spell it."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return error


class InvalidRequest(PairingError):
    status, code = 400, "invalid"


class NotInPairingMode(PairingError):
    status, code = 403, "not-in-pairing-mode"


class CrossSite(PairingError):
    """A browser request from another web site (HTTP entry points only)."""

    status, code = 403, "cross-site"


class ForeignHost(PairingError):
    """A request naming a host that is not the hub (HTTP entry points only): a web page of
    another site whose name its DNS now points at the hub (DNS rebinding)."""

    status, code = 421, "foreign-host"


class HotspotOnly(PairingError):
    """``GET /pair`` from a client not on the hub's hotspot, with ``[portal] get_pair =
    "hotspot"`` (HTTP only): a web page the user visits could have sent it."""

    status, code = 403, "get-pair-hotspot-only"


class PairingBusy(PairingError):
    status, code = 409, "busy"


class RateLimited(PairingError):
    """Too many requests from one client (HTTP entry points); ``retry_after`` in seconds."""

    status, code = 429, "rate-limited"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many pairing requests; try again in {retry_after} seconds.")
        self.retry_after = retry_after


class PairingFailed(PairingError):
    status, code = 500, "failed"


BUSY_MESSAGE = "A pairing attempt is already in progress; wait for its result."
SETTLE_WAIT = 5.0  # how long a request waits for a transition (not an attempt) to end


@dataclass(frozen=True)
class PairingRequest:
    # None: Wi-Fi only. On a hub that is not paired, "Wi-Fi first, cloud later" (Improv:
    # allow_wifi_only), the cloud part comes later over the LAN or BLE; on a paired one
    # (an admin re-pairing it: keep_account) the attempt runs with the stored account.
    cloud: CloudCredentials | None
    wifi: WifiCredentials | None  # None: the "No Wi-Fi" variant, cloud credentials only
    source: str = "http"
    # Sent by a signed-in admin (the panel): may re-pair a paired hub that is offline with
    # its hotspot up, without the window a short press opens.
    admin: bool = False

    def __post_init__(self) -> None:
        if self.cloud is None and self.wifi is None:
            raise ValueError("a pairing request needs Wi-Fi or cloud credentials")

    @property
    def wifi_only(self) -> bool:
        return self.cloud is None

    def redacted(self) -> dict[str, Any]:
        return {"source": self.source,
                "cloud": self.cloud.redacted() if self.cloud else None,
                "wifi": self.wifi.redacted() if self.wifi else None,
                **({"admin": True} if self.admin else {})}


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
                        allow_wifi_only: bool = False,
                        keep_account: bool = False) -> PairingRequest:
    """Validate raw fields (query strings, form fields, JSON, BLE) into a request.

    Vendor presets fill what the request leaves out. Raises :class:`InvalidRequest`
    naming the first bad parameter; nothing is changed by a refused request.

    ``allow_wifi_only``: a request with Wi-Fi credentials, no cloud field of its own and
    no complete cloud account in the presets becomes a Wi-Fi-only request (``cloud`` is
    None) instead of a refusal. Only Improv asks for this; every other entry point
    requires the cloud fields (or presets) exactly as before.

    ``keep_account``: a request with Wi-Fi credentials and no cloud field of its own is
    Wi-Fi only whatever the presets say: the account the hub has is kept (a signed-in
    admin re-pairing a paired hub). A request that gives any cloud field gives an account.
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
            if isinstance(ssid, str) and "\ufffd" in ssid:
                # A name the hub (or the entry point) could not decode: a scanned one shows
                # U+FFFD, and no network the hub can join has that name.
                raise InvalidField("ssid", NOT_UTF8)
            wifi = wifi_from_fields(ssid, psk, _truthy(fields.get("hidden", False), "hidden"))
        usable_wifi = wifi if wifi_enabled else None
        if usable_wifi is not None and not _cloud_given(fields) and (
                keep_account or (allow_wifi_only and not _presets_complete(presets))):
            # debug: front ends also parse to ask "would these presets work?", at start
            log.debug("a Wi-Fi-only pairing request: the cloud account %s",
                      "is kept" if keep_account else "comes later")
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


class Openness(Protocol):
    """What decides whether a request may begin now (the onboarding machine)."""

    @property
    def pairing_open(self) -> bool: ...

    @property
    def busy(self) -> bool: ...

    @property
    def repairable(self) -> bool:
        """Paired, offline, its hotspot up: a signed-in admin may pair it again (and anyone
        near it while the window a short press opens is open: then pairing is open)."""
        ...

    @property
    def window_seconds(self) -> float | None:
        """How long the window a short press opens lasts; None: there is none."""
        ...

    @property
    def long_press_seconds(self) -> float | None:
        """How long the hub's button is held for a factory reset; None: the hub has no
        button (``[button] enabled`` false)."""
        ...


def check_open(machine: Openness, *, admin: bool) -> None:
    """Raise the refusal a request gets in this state, if any: the service asks first, the
    machine again under its lock as it begins, and both must give the same answer.
    ``admin``: the request comes from a signed-in admin (the panel)."""
    # Busy first: pairing is closed while an attempt runs, and "already paired" would be
    # the wrong answer to a second request during it.
    if machine.busy:
        raise PairingBusy(BUSY_MESSAGE)
    if not machine.pairing_open and not (admin and machine.repairable):
        raise NotInPairingMode(f"This hub is already paired. {closed_hint(machine)}")


def closed_hint(machine: Openness) -> str:
    """What a paired hub's refusal tells: how to pair it again from where it is."""
    if machine.repairable:
        return repair_hint(machine.window_seconds, machine.long_press_seconds)
    return reset_hint(machine.long_press_seconds)


class Onboarding(Openness, Protocol):
    """What the pairing service needs from the onboarding state machine."""

    async def begin(self, request: PairingRequest) -> None: ...

    def progress(self) -> Progress: ...

    async def settle(self, timeout: float) -> None:
        """Return once no transition is under way (an attempt that just ended brings the
        hotspot back), or after ``timeout``."""
        ...

    async def has_uplink(self) -> bool:
        """Whether the hub is on a network (Ethernet carrier, or a client of its Wi-Fi)."""
        ...

    def networks(self) -> list[dict[str, Any]]:
        """The last scan's networks (``ssid``, ``signal``, ``security``); no scan is run."""
        ...


Fields = Mapping[str, Any] | Callable[[], Mapping[str, Any]]


class PairingService:
    """The front door: every entry point's request goes through :meth:`submit`."""

    def __init__(self, onboarding: Onboarding, presets: CloudConfig, *,
                 wifi_enabled: bool = True,
                 secrets_sink: Callable[..., None] | None = None,
                 provisioning: str = "pairing") -> None:
        self.onboarding = onboarding
        # [provisioning] mode token/enroll: the platform issues the account, so a request
        # may give the hub a Wi-Fi network only, and account presets do not apply.
        self.provisioning = provisioning
        self.presets = presets if provisioning == "pairing" else CloudConfig()
        self.wifi_enabled = wifi_enabled
        # Told about every token and passphrase the moment they are parsed, so no later
        # log line can carry them (the daemon passes the log redactor's ``add``).
        self.secrets_sink = secrets_sink or (lambda *secrets: None)
        self.accepted = 0
        self.refusals: Counter[str] = Counter()  # by refusal code, for gatewayctl status

    @property
    def open(self) -> bool:
        return self.onboarding.pairing_open

    def parse(self, fields: Mapping[str, Any], source: str, *,
              allow_wifi_only: bool = False, keep_account: bool = False) -> PairingRequest:
        """Validate only (no state is looked at): what :meth:`submit` does in its third
        step, and what a front end uses to ask "would these presets work?"."""
        for name in ("token", "psk"):
            if isinstance(fields.get(name), str):
                self.secrets_sink(fields[name])
        if self.provisioning != "pairing":
            return self._wifi_only(fields, source)
        return request_from_fields(fields, self.presets, wifi_enabled=self.wifi_enabled,
                                   source=source, allow_wifi_only=allow_wifi_only,
                                   keep_account=keep_account)

    def _wifi_only(self, fields: Mapping[str, Any], source: str) -> PairingRequest:
        """A provisioned hub's request: its Wi-Fi network and nothing else."""
        why = f"this hub gets its cloud account from its platform ([provisioning] mode " \
              f"{self.provisioning})"
        for name in CLOUD_FIELDS:
            if fields.get(name) not in (None, ""):
                raise InvalidRequest(f"{name}: {why}; send only the Wi-Fi network", name)
        if not self.wifi_enabled:
            raise InvalidRequest(f"ssid: {why}, and it has no Wi-Fi to set up", "ssid")
        if fields.get("ssid") in (None, "") and fields.get("psk") is None:
            raise InvalidRequest(f"ssid: {why}; a request can only give it a Wi-Fi network",
                                 "ssid")
        return request_from_fields(fields, self.presets, source=source, allow_wifi_only=True)

    async def submit(self, fields: Fields, source: str, *,
                     allow_wifi_only: bool = False, admin: bool = False) -> Progress:
        """Check, in this order, busy -> open -> valid, then begin; return the progress.

        Raises the :class:`PairingError` of the first check that fails, so the same request
        gets the same refusal whatever the entry point: a paired hub answers "not in
        pairing mode" to bad fields too. ``fields`` may be a callable that extracts them
        from the entry point's own format (query string, form, JSON, BLE message); it runs
        only once pairing is known to be open, and raises :class:`InvalidRequest`. The
        onboarding machine checks busy and open again as it begins, under its lock, since a
        cloud-only request awaits the uplink's state in between. ``admin``: from a
        signed-in admin (the panel's session), who may re-pair a paired hub that is offline
        with its hotspot up (:func:`check_open`), giving it a new network only: the hub
        keeps its account unless the request gives another.
        """
        # An attempt that has just failed still brings its hotspot back for a moment: an app
        # that retries as soon as progress shows the failure must not be told "busy".
        await self.onboarding.settle(SETTLE_WAIT)
        try:
            request = await self._check(fields, source, allow_wifi_only, admin)
            log.info("pairing request from %s: %s", request.source, request.redacted())
            # begin checks busy and open again: _check may have awaited (the uplink)
            await self.onboarding.begin(request)
        except PairingError as exc:
            self.count(exc)
            raise
        self.accepted += 1
        return self.onboarding.progress()

    async def _check(self, fields: Fields, source: str, allow_wifi_only: bool,
                     admin: bool) -> PairingRequest:
        check_open(self.onboarding, admin=admin)
        raw = fields() if callable(fields) else fields
        # Its admin moving a paired hub to a new router: the account stays (the machine runs
        # a Wi-Fi-only request on a paired hub with the stored one), as Improv's does.
        keep = admin and self.onboarding.repairable
        request = replace(self.parse(raw, source, allow_wifi_only=allow_wifi_only,
                                     keep_account=keep), admin=admin)
        wifi = request.wifi
        if wifi is not None:
            # What the last scan says of the network: the attempt could only fail.
            security = {n.get("ssid"): n.get("security") for n in self.onboarding.networks()}
            if security.get(wifi.ssid) == UNSUPPORTED_SECURITY:
                raise InvalidRequest(f"ssid: {UNSUPPORTED_NETWORK}", "ssid")
            if raw_wpa_key(wifi.psk) and security.get(wifi.ssid) == "wpa3":
                # SAE takes no raw key: a wrong password. (A network the scan did not list is
                # checked as its profile is made: gatewayd.ap.)
                raise InvalidRequest(f"psk: {RAW_KEY_WPA3}", "psk")
        elif self.wifi_enabled and not await self.onboarding.has_uplink():
            # "No Wi-Fi" pairing needs a network: a Wi-Fi hub on its hotspot has none.
            raise InvalidRequest("ssid: this hub is not on a network yet: send the Wi-Fi "
                                 "network (ssid and psk) with the account", "ssid")
        return request

    def count(self, refusal: PairingError) -> None:
        """Count a refusal (on the core's loop): an entry point's own too."""
        self.refusals[refusal.code] += 1

    def status(self) -> dict[str, Any]:
        """The ``pairing`` section of ``gatewayctl status``: requests taken and refused."""
        return {"open": self.open, "accepted": self.accepted,
                "refused": dict(sorted(self.refusals.items()))}

    def progress(self) -> Progress:
        return self.onboarding.progress()
