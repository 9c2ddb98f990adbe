"""Zigbee on the control socket: permit join, install codes, removal, simulator events.

The bridge's refusals (:class:`BridgeError`) and the simulator's (``SimError``,
``SimUnavailable``) are answered by :func:`gatewayd.control.app.refusal`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, jsonify

from gatewayd.control.app import ApiError, invalid, json_object_body
from gatewayd.portal.api import NOT_SIMULATED_CODE
from gatewayd.runtime.corecall import CoreCall
from gatewayd.zigbee.inputs import parse_permit_seconds
from gatewayd.zigbee.simlink import check_action

if TYPE_CHECKING:  # the bridge (sqlite3, the radio glue) loads only with Zigbee on
    from gatewayd.bridge import ZigbeeBridge


def zigbee_blueprint(bridge: ZigbeeBridge, call: CoreCall) -> Blueprint:
    """Everything Zigbee on the control socket (the portal has permit join only:
    :mod:`gatewayd.portal.zigbee`)."""
    bp = Blueprint("zigbee", __name__, url_prefix="/api/v1/zigbee")

    @bp.post("/permit-join")
    def permit_join() -> Any:
        try:
            seconds = parse_permit_seconds(json_object_body().get("seconds"))
        except ValueError as exc:
            raise invalid(str(exc)) from None
        return jsonify({"permit_join": call(bridge.permit_join, seconds)})

    @bp.post("/install-code")
    def install_code() -> Any:
        body = json_object_body()
        ieee, code = body.get("ieee"), body.get("code")
        if not isinstance(ieee, str) or not isinstance(code, str):
            raise invalid("ieee and code are required (text)")
        return jsonify({"ieee": call(bridge.add_install_code, ieee, code)})

    @bp.post("/remove")
    def remove() -> Any:
        ieee = json_object_body().get("ieee")
        if ieee is None:
            raise invalid("ieee: required")
        if not isinstance(ieee, str):
            raise invalid("ieee: must be text such as 8b:b3:00:00:00:00:00:01")
        return jsonify({"removed": call(bridge.remove, ieee)})

    @bp.post("/sim")
    def sim() -> Any:
        link = bridge.sim
        if link is None:
            raise ApiError(409, NOT_SIMULATED_CODE, "only a simulated radio takes injected events "
                                                 "(the virtual radio, or the NCP emulator at "
                                                 "[zigbee] sim_control)")
        body = json_object_body()
        action = check_action(body.pop("action", None), body)

        async def _do() -> Any:
            return await link.call(action, body)

        return jsonify({"action": action, "result": call(_do)})

    return bp
