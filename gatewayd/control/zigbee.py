"""Zigbee on the control socket: permit join, install codes, removal, simulator events."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from gatewayd.bridge import ZigbeeBridge
from gatewayd.control.app import ApiError, json_object_body
from gatewayd.runtime.corecall import CoreCall
from gatewayd.zigbee.inputs import BridgeError, parse_permit_seconds

# What `gatewayctl zigbee sim` may ask the virtual radio to do, and the arguments it takes.
SIM_ACTIONS = {"join": ("kind", "ieee", "install_code"), "leave": ("ieee",),
               "silence": ("ieee", "silent"), "report": ("ieee", "cluster", "attributes",
                                                         "endpoint"),
               "command": ("ieee", "cluster", "command", "args", "endpoint"),
               "set_link": ("ieee", "lqi"), "unplug": (), "replug": (), "list": (),
               "kinds": (),
               "stream": ("count", "rate", "cluster", "attribute", "start_at", "modulo",
                          "offset"),
               "stream_status": (), "stream_stop": ()}


def zigbee_blueprint(bridge: ZigbeeBridge, call: CoreCall) -> Blueprint:
    """Everything Zigbee on the control socket (the portal has permit join only:
    :mod:`gatewayd.portal.zigbee`)."""
    bp = Blueprint("zigbee", __name__, url_prefix="/api/v1/zigbee")

    def run(fn: Any, *args: Any) -> Any:
        try:
            return call(fn, *args)
        except BridgeError as exc:
            raise ApiError(exc.http_status, exc.code, str(exc)) from None
        except ValueError as exc:
            raise ApiError(400, "invalid", str(exc)) from None

    @bp.post("/permit-join")
    def permit_join() -> Any:
        try:
            seconds = parse_permit_seconds(json_object_body().get("seconds"))
        except ValueError as exc:
            raise ApiError(400, "invalid", str(exc)) from None
        return jsonify({"permit_join": run(bridge.permit_join, seconds)})

    @bp.post("/install-code")
    def install_code() -> Any:
        body = json_object_body()
        ieee, code = body.get("ieee"), body.get("code")
        if not isinstance(ieee, str) or not isinstance(code, str):
            raise ApiError(400, "invalid", "ieee and code are required (text)")
        return jsonify({"ieee": run(bridge.add_install_code, ieee, code)})

    @bp.post("/remove")
    def remove() -> Any:
        ieee = json_object_body().get("ieee")
        if not isinstance(ieee, str):
            raise ApiError(400, "invalid", "ieee: required")
        return jsonify({"removed": run(bridge.remove, ieee)})

    @bp.post("/sim")
    def sim() -> Any:
        network = bridge.virtual
        if network is None:
            raise ApiError(409, "not-simulated", "only the virtual radio takes injected "
                                                 "events ([zigbee] radio = \"virtual\")")
        body = json_object_body()
        action = body.pop("action", None)
        if action not in SIM_ACTIONS:
            raise ApiError(400, "invalid", f"action: one of {', '.join(SIM_ACTIONS)}")
        unknown = set(body) - set(SIM_ACTIONS[action])
        if unknown:
            raise ApiError(400, "invalid", f"{action} takes no {', '.join(sorted(unknown))}")

        async def _do() -> Any:
            # A VirtualRadioError (an event that cannot happen) is a ValueError: 400.
            return getattr(network, action)(**body)

        return jsonify({"action": action, "result": run(_do)})

    return bp
