"""The 2Smart app's contract: ``GET /healthcheck`` and ``GET /pair`` with plain-text answers.

``/pair`` answers ``200 OK``, or the refusal's status and message (docs/interfaces.md):
``400 <message naming the parameter>``, ``403 <how to reset>`` (not in pairing mode, a
cross-site browser request, or with ``[portal] get_pair = "hotspot"`` a client not on the
hotspot), ``409`` (an attempt is already running), ``429`` (rate limit) or
``500 <message>``; a refused request changes nothing.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from flask import Blueprint, Response, request
from werkzeug.datastructures import MultiDict

from gatewayd.config import Config
from gatewayd.onboarding.pairing import (
    PAIR_FIELDS,
    CrossSite,
    HotspotOnly,
    InvalidRequest,
    PairingError,
    PairingFailed,
    RateLimited,
)
from gatewayd.onboarding.progress import Progress
from gatewayd.portal.core import PortalCore
from gatewayd.portal.security import (
    MalformedOrigin,
    RateLimiter,
    client_key,
    in_network,
    same_origin,
)
from gatewayd.runtime.corecall import CoreUnavailable

log = logging.getLogger(__name__)

MAX_PARAMETERS = 32
CROSS_SITE = "Pairing requests from other web sites are refused."


def text(body: str, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(body, status=status, mimetype="text/plain", headers=dict(headers or {}))


def retry_after(refusal: PairingError) -> dict[str, str]:
    """The ``Retry-After`` header a rate-limited refusal carries."""
    if isinstance(refusal, RateLimited):
        return {"Retry-After": str(refusal.retry_after)}
    return {}


def query_args(raw: bytes) -> MultiDict[str, str]:
    """The query string's parameters. A byte that is not UTF-8 becomes U+FFFD, which the
    pairing rules refuse (werkzeug keeps it percent-encoded: ``Caf%E9`` would be taken as
    that literal name, of a network that cannot exist)."""
    return MultiDict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True,
                               errors="replace"))


def query_fields(args: MultiDict[str, str]) -> dict[str, str]:
    """The known pairing parameters of a query string; a repeated one is ambiguous."""
    if len(args) > MAX_PARAMETERS:
        raise InvalidRequest(f"too many parameters (at most {MAX_PARAMETERS})")
    fields: dict[str, str] = {}
    for name in PAIR_FIELDS:
        values = args.getlist(name)
        if len(values) > 1:
            raise InvalidRequest(f"{name}: given more than once", name)
        if values:
            fields[name] = values[0]
    return fields


def submit_or_refuse(core: PortalCore, fields: Callable[[], Mapping[str, Any]],
                     source: str, *, admin: bool = False) -> Progress | PairingError:
    """Shared by ``/pair``, the form and ``/api/v1/pair``: the progress, or the refusal.
    ``admin``: sent with a signed-in admin's session (the panel)."""
    try:
        return core.submit(fields, source, admin=admin)
    except PairingError as exc:
        # The field name only: a value could be a secret.
        log.info("pairing request from %s refused: %s %s", source, exc.code,
                 exc.field or type(exc).__name__)
        return exc
    except CoreUnavailable as exc:
        return PairingFailed(f"The hub cannot take a pairing request now: {exc}.")


def http_gate(limiter: RateLimiter | None) -> PairingError | None:
    """What HTTP entry points check before the front door: the rate limit, then browser
    requests marked as coming from another site (a GET that a page makes without such a
    mark cannot be told from the app's: docs/portal.md, "Security"). None: go on."""
    if limiter is not None:
        wait = limiter.allow(client_key(request))
        if wait:
            return RateLimited(wait)
    return origin_gate(CROSS_SITE)


def hotspot_only(config: Config) -> str:
    """What a ``GET /pair`` from elsewhere is told: where it is taken, and what to use."""
    where = ("GET /pair is taken only from the hub's own Wi-Fi hotspot." if
             config.hotspot.enabled else
             "This hub takes no GET /pair: only from a Wi-Fi hotspot, and it has none.")
    ble = " or over Bluetooth (BLE commissioning)" if config.ble.enabled else ""
    return (f"{where} Pair it with POST /api/v1/pair (a JSON body), in its admin "
            f"panel{ble}.")


def hotspot_gate(core: PortalCore) -> PairingError | None:
    """With ``[portal] get_pair = "hotspot"``, ``GET /pair`` is taken only from a client in
    the hotspot's subnet while the hotspot is up: a web page the user visits can send it
    from anywhere else (docs/portal.md, "Security"). None: go on."""
    config = core.hub.config
    if config.portal.get_pair != "hotspot":
        return None
    hotspot = ipaddress.IPv4Interface(config.hotspot.address).network
    if config.hotspot.enabled and in_network(request.remote_addr, hotspot) and \
            core.hotspot_up():
        return None
    refusal = HotspotOnly(hotspot_only(config))
    core.count_refusal(refusal)
    log.info("GET /pair from %s refused: %s", client_key(request), refusal.code)
    return refusal


def origin_gate(refused: str) -> PairingError | None:
    """A browser request from another web site is refused with ``refused``; one with an
    Origin header no browser sends is invalid. None: go on."""
    try:
        if not same_origin(request):
            return CrossSite(refused)
    except MalformedOrigin as exc:
        return InvalidRequest(str(exc))
    return None


def pair_blueprint(core: PortalCore, limiter: RateLimiter) -> Blueprint:
    bp = Blueprint("pair", __name__)

    @bp.get("/healthcheck")
    def healthcheck() -> Response:
        # The 2Smart app probes this exact body.
        return text("OK")

    @bp.get("/pair")
    def pair() -> Response:
        args = query_args(request.query_string)
        outcome = http_gate(limiter) or hotspot_gate(core) or submit_or_refuse(
            core, lambda: query_fields(args), "http")
        if isinstance(outcome, PairingError):
            return text(outcome.message, outcome.status, retry_after(outcome))
        return text("OK")

    return bp
