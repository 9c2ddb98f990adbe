"""The platform client on the control socket: ``gatewayctl platform request``.

``POST /api/v1/platform/request`` with ``{"endpoint": "...", "data": <any JSON>,
"timeout": seconds}`` sends one REQ/RES request through the daemon's platform client (as
caller ``control``, with its own bound) and answers ``{"endpoint", "data"}``: the
decrypted response. A request without a successful answer is an error whose ``code`` says
which (docs/interfaces.md): ``platform-refused`` (502, the platform's ``status`` and
``code`` in ``details``), ``timeout`` (504), ``cloud-offline`` and ``link-lost`` (503),
``too-many-requests`` (429): :func:`gatewayd.control.app.refusal` answers them. At most
``slots.PLATFORM`` requests wait at once (``too-many-waiting``, 429, for one more).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from gatewayd.cloud.reqres import PlatformClient, check_request
from gatewayd.control.app import asker, invalid, json_object_body
from gatewayd.control.slots import PLATFORM, Slots
from gatewayd.runtime.corecall import CoreCall

CALL_MARGIN = 5.0  # the core call outlives the request's own timeout


def platform_blueprint(platform: PlatformClient, call: CoreCall) -> Blueprint:
    bp = Blueprint("platform", __name__, url_prefix="/api/v1/platform")
    slots = Slots(PLATFORM)

    @bp.post("/request")
    def request_() -> Any:
        body = json_object_body()
        endpoint, timeout = body.get("endpoint"), body.get("timeout", 10)
        if not isinstance(endpoint, str):
            raise invalid("endpoint: required (text)")
        # Before the call's bound is taken from the timeout, and before a slot is held.
        check_request(endpoint, timeout, body.get("data"))

        async def _request() -> Any:
            return await platform.request(endpoint, body.get("data"), timeout=float(timeout),
                                          caller="control")
        with slots.hold(asker()):
            data = call(_request, timeout=float(timeout) + CALL_MARGIN)
        return jsonify({"endpoint": endpoint, "data": data})

    return bp
