"""Zigbee on the portal: permit join only, behind the admin login, refused cross-site.

Two doors to the same action: ``POST /api/v1/zigbee/permit-join`` (JSON, for apps) and
``POST /zigbee/permit-join`` (the admin panel's form: session and CSRF token).

Everything else Zigbee (install codes, removal, simulator events) is the control socket's
(:mod:`gatewayd.control.zigbee`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, jsonify, redirect, request, session, url_for

from gatewayd.hub import INTERNAL_MESSAGE
from gatewayd.onboarding.pairing import InvalidRequest
from gatewayd.portal.api import api_error, refusal
from gatewayd.portal.pair import origin_gate
from gatewayd.portal.security import AdminAuth, csrf_ok
from gatewayd.runtime.corecall import CoreCall, CoreUnavailable
from gatewayd.runtime.jsonbody import BadBody, parse_json
from gatewayd.zigbee.inputs import BridgeError, parse_permit_seconds

if TYPE_CHECKING:  # the bridge (sqlite3, the radio glue) loads only with Zigbee on
    from gatewayd.bridge import ZigbeeBridge

log = logging.getLogger(__name__)

JOINING_CLOSED = "Zigbee joining is closed: no new device can join now."


def zigbee_blueprint(bridge: ZigbeeBridge, call: CoreCall,
                     guard: Callable[[], Response | None]) -> Blueprint:
    bp = Blueprint("zigbee_portal", __name__, url_prefix="/api/v1/zigbee")

    @bp.before_request
    def _guard() -> Response | None:
        # The pairing API's refusals: a cross-site page must not add devices either.
        gate = origin_gate("cross-site requests are refused")
        return refusal(gate) if gate is not None else guard()

    @bp.post("/permit-join")
    def permit_join() -> Any:
        try:
            body = parse_json(request.get_data())
        except BadBody as exc:
            return refusal(InvalidRequest(str(exc)))
        if body is None:
            body = {}
        if not isinstance(body, dict):
            return refusal(InvalidRequest("the body must be a JSON object"))
        try:
            seconds = parse_permit_seconds(body.get("seconds"))
        except ValueError as exc:
            return refusal(InvalidRequest(str(exc)))
        # The bridge's refusals only: anything else the radio raises is the app's
        # unexpected error, whose text nobody is shown.
        try:
            granted = call(bridge.permit_join, seconds)
        except BridgeError as exc:
            return api_error(exc.http_status, str(exc), code=exc.code)
        return jsonify({"permit_join": granted})

    return bp


def zigbee_panel_blueprint(bridge: ZigbeeBridge, call: CoreCall, auth: AdminAuth) -> Blueprint:
    """The panel's "Add Zigbee devices" button; the outcome shows on the dashboard."""
    bp = Blueprint("zigbee_panel", __name__)

    @bp.post("/zigbee/permit-join")
    def permit_join() -> Any:
        if not auth.session_valid():
            return redirect(url_for("panel.login"), 303)
        if not csrf_ok(request):
            session["notice"] = {"kind": "error",
                                 "text": "This form has expired. Please try again."}
            return redirect(url_for("panel.index"), 303)
        text = request.form.get("seconds", "120")
        try:
            # [0-9], not str.isdigit: that is true of "\u00b2", which int() refuses.
            seconds = parse_permit_seconds(int(text) if re.fullmatch("[0-9]{1,3}", text)
                                           else text)
        except ValueError as exc:
            session["notice"] = {"kind": "error", "text": f"Not allowed: {exc}"}
            return redirect(url_for("panel.index"), 303)
        try:
            granted = call(bridge.permit_join, seconds)
            session["notice"] = {"kind": "ok", "text": (
                f"Zigbee devices may join for {granted} seconds: put the new device in "
                "pairing mode." if granted else JOINING_CLOSED)}
        except (BridgeError, CoreUnavailable) as exc:  # refusals, in our words
            session["notice"] = {"kind": "error", "text": str(exc)}
        except Exception:
            # Back to the dashboard all the same, the library's words in the log only.
            log.exception("portal: permit join from the panel failed")
            session["notice"] = {"kind": "error", "text": INTERNAL_MESSAGE}
        return redirect(url_for("panel.index"), 303)

    return bp
