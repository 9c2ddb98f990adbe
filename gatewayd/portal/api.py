"""The JSON API under ``/api/v1`` (described by ``static/openapi.json``).

The same blueprint is mounted on the portal (with the rate limit and the admin
guard) and on the control socket (without: the socket's file mode is its access
control), so ``gatewayctl`` and the portal share one implementation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import cache
from importlib import resources
from typing import Any

from flask import Blueprint, Response, jsonify, request

from gatewayd.onboarding.pairing import (
    PAIR_FIELDS,
    InvalidRequest,
    PairingError,
    PairingFailed,
    RateLimited,
)
from gatewayd.portal import refusals
from gatewayd.portal.core import PortalCore
from gatewayd.portal.pair import MAX_PARAMETERS, http_gate, retry_after, submit_or_refuse
from gatewayd.portal.security import RateLimiter
from gatewayd.runtime.jsonbody import BadBody, parse_json

Guard = Callable[[], Response | None]  # None: go on; a Response: answer that instead

# The error codes the portal and the control socket answer (interfaces.md §4.6, §5.1), spelled
# here once. A refusal a pairing request can get as well is the pairing service's, so that one
# refusal has one code wherever it is met.
INVALID_CODE = InvalidRequest.code
FAILED_CODE = PairingFailed.code  # the hub could not do it (a pairing, a button press)
RATE_LIMITED_CODE = RateLimited.code
UNAUTHORIZED_CODE = "unauthorized"
UNSUPPORTED_MEDIA_CODE = "unsupported-media-type"
UNAVAILABLE_CODE = "unavailable"
# The control socket's own (interfaces.md §5.1).
SIM_UNAVAILABLE_CODE = "sim-unavailable"
NOT_SIMULATED_CODE = "not-simulated"
BLE_DISABLED_CODE = "ble-disabled"
ZIGBEE_DISABLED_CODE = "zigbee-disabled"
# An unexpected fault (refusals.py: the web server answers one with it too).
INTERNAL_CODE = refusals.INTERNAL_CODE


def api_error(status: int, message: str, *, code: str,
              field: str | None = None) -> Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    response = jsonify({"error": error})
    response.status_code = status
    return response


def refusal(exc: PairingError) -> Response:
    """A pairing refusal as the JSON API answers it (its code comes with it)."""
    response = jsonify({"error": exc.to_json()})
    response.status_code = exc.status
    response.headers.update(retry_after(exc))
    return response


@cache
def openapi_document() -> bytes:
    # In static/ so the existing package-data glob ships it with the .deb.
    return resources.files("gatewayd.portal").joinpath("static/openapi.json").read_bytes()


def json_fields(raw: bytes) -> Mapping[str, Any]:
    """The pairing fields of a JSON body; the same names and rules as ``/pair``."""
    try:
        body = parse_json(raw)
    except BadBody as exc:
        raise InvalidRequest(str(exc)) from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    if len(body) > MAX_PARAMETERS:
        raise InvalidRequest(f"too many parameters (at most {MAX_PARAMETERS})")
    return {name: body[name] for name in PAIR_FIELDS if name in body}


def api_blueprint(core: PortalCore, *, limiter: RateLimiter | None = None,
                  guard: Guard | None = None, include_status: bool = True,
                  signed_in: Callable[[], bool] | None = None) -> Blueprint:
    """``guard`` protects what only an admin may read once the hub is paired;
    ``signed_in`` tells whether the request carries an admin's session (who may re-pair
    a paired hub that is offline on its hotspot)."""
    bp = Blueprint("pairing_api", __name__, url_prefix="/api/v1")

    def guarded() -> Response | None:
        return guard() if guard is not None else None

    if include_status:
        @bp.get("/status")
        def status() -> Any:
            return guarded() or jsonify(core.status())

    @bp.get("/networks")
    def networks() -> Any:
        return guarded() or jsonify({"wifi": core.wifi_enabled, "networks": core.networks()})

    @bp.get("/progress")
    def progress() -> Any:
        # Public on purpose: the panel keeps following an attempt after pairing closes,
        # and progress holds no secret.
        return jsonify(core.progress().to_json())

    @bp.post("/pair")
    def pair() -> Any:
        gate = http_gate(limiter)
        if gate is not None:
            return refusal(gate)
        # JSON only: a cross-site page cannot send application/json without a CORS
        # preflight, which this API never grants; that is its CSRF protection.
        if not request.is_json:
            return api_error(415, "send the pairing request as application/json",
                             code=UNSUPPORTED_MEDIA_CODE)
        raw = request.get_data()
        source = "panel" if request.headers.get("X-Requested-By") == "gatewayd-panel" else "api"
        admin = signed_in is not None and signed_in()
        outcome = submit_or_refuse(core, lambda: json_fields(raw), source, admin=admin)
        if isinstance(outcome, PairingError):
            return refusal(outcome)
        return jsonify({"ok": True, "progress": outcome.to_json()})

    @bp.get("/openapi.json")
    def openapi() -> Response:
        return Response(openapi_document(), mimetype="application/json")

    return bp


def openapi_spec() -> dict[str, Any]:
    """The parsed document (tests and tools)."""
    result: dict[str, Any] = json.loads(openapi_document())
    return result
