"""Zigbee on the portal: permit join only, behind the admin login, refused cross-site.

Everything else Zigbee (install codes, removal, simulator events) is the control socket's
(:mod:`gatewayd.control.zigbee`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, jsonify, request

from gatewayd.bridge import ZigbeeBridge
from gatewayd.portal.api import api_error
from gatewayd.portal.security import same_origin
from gatewayd.runtime.corecall import CoreCall
from gatewayd.zigbee.inputs import BridgeError, parse_permit_seconds


def zigbee_blueprint(bridge: ZigbeeBridge, call: CoreCall,
                     guard: Callable[[], Response | None]) -> Blueprint:
    bp = Blueprint("zigbee_portal", __name__, url_prefix="/api/v1/zigbee")

    @bp.before_request
    def _guard() -> Response | None:
        if not same_origin(request):
            return api_error(403, "cross-site requests are refused", code="cross-site")
        return guard()

    @bp.post("/permit-join")
    def permit_join() -> Any:
        body = request.get_json(silent=True)
        if body is None:
            body = {}
        if not isinstance(body, dict):
            return api_error(400, "the body must be a JSON object", code="invalid")
        try:
            seconds = parse_permit_seconds(body.get("seconds"))
            return jsonify({"permit_join": call(bridge.permit_join, seconds)})
        except BridgeError as exc:
            return api_error(exc.http_status, str(exc), code=exc.code)
        except ValueError as exc:
            return api_error(400, str(exc), code="invalid")

    return bp
