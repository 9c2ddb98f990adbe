"""The 2Smart app's contract: ``GET /healthcheck`` and ``GET /pair`` with plain-text answers.

``/pair`` answers ``200 OK``, ``400 <message naming the parameter>``, ``403 <how to
reset>`` (not in pairing mode, or a cross-site browser request), ``409`` (an attempt
is already running), ``429`` (rate limit) or ``500 <message>``; a refused request
changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from flask import Blueprint, Response, request
from werkzeug.datastructures import MultiDict

from gatewayd.onboarding.pairing import PAIR_FIELDS, InvalidRequest, PairingError
from gatewayd.portal.core import PortalCore
from gatewayd.portal.security import RateLimiter, client_key, same_origin
from gatewayd.runtime.corecall import CoreUnavailable

log = logging.getLogger(__name__)

MAX_PARAMETERS = 32
CROSS_SITE = "Pairing requests from other web sites are refused."


def text(body: str, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(body, status=status, mimetype="text/plain", headers=dict(headers or {}))


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


def rate_limited_message(wait: int) -> str:
    return f"Too many pairing requests; try again in {wait} seconds."


def submit_or_refuse(core: PortalCore, fields: Callable[[], Mapping[str, Any]],
                     source: str) -> tuple[int, str, dict[str, Any] | None, str | None]:
    """Shared by ``/pair``, the form and ``/api/v1/pair``: (status, message, progress, field)."""
    try:
        progress = core.submit(fields, source)
    except PairingError as exc:
        # The field name only: a value could be a secret.
        log.info("pairing request from %s refused: %d %s", source, exc.status,
                 exc.field or type(exc).__name__)
        return exc.status, exc.message, None, exc.field
    except CoreUnavailable as exc:
        return 500, f"The hub cannot take a pairing request now: {exc}.", None, None
    return 200, "OK", progress, None


def pair_blueprint(core: PortalCore, limiter: RateLimiter) -> Blueprint:
    bp = Blueprint("pair", __name__)

    @bp.get("/healthcheck")
    def healthcheck() -> Response:
        # The 2Smart app probes this exact body.
        return text("OK")

    @bp.get("/pair")
    def pair() -> Response:
        wait = limiter.allow(client_key(request))
        if wait:
            return text(rate_limited_message(wait), 429, {"Retry-After": str(wait)})
        if not same_origin(request):
            # A web page the user visits must not pair the hub to someone else's account.
            return text(CROSS_SITE, 403)
        args = request.args
        status, message, _, _ = submit_or_refuse(core, lambda: query_fields(args), "http")
        return text(message, status)

    return bp
