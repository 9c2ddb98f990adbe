"""The control socket's whole app, from the parts the daemon made.

The daemon imports this module (and so Flask) only when the control socket gets its first
request (:class:`gatewayd.runtime.webserver.LazyApp`): a hub that nobody runs ``gatewayctl``
on never loads the web stack for it.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, jsonify

from gatewayd.control.app import ApiError, control_blueprints, create_control_app
from gatewayd.control.devices import devices_blueprint
from gatewayd.control.parts import ControlParts
from gatewayd.control.platform import platform_blueprint
from gatewayd.control.slots import RESETS, Slots
from gatewayd.control.zigbee import zigbee_blueprint
from gatewayd.portal.api import BLE_DISABLED_CODE, ZIGBEE_DISABLED_CODE

BLE_OFF = "BLE commissioning is disabled on this hub ([ble] enabled = false)."
ZIGBEE_OFF = "Zigbee is disabled on this hub ([zigbee] enabled = false)."


def control_app(parts: ControlParts) -> Flask:
    resets = Slots(RESETS)  # a long press is a reset
    blueprints = [devices_blueprint(parts.call, parts.providers, parts.hardware,
                                    presses=resets),
                  *control_blueprints(parts.hub, parts.call, pairing=parts.pairing,
                                      onboarding=parts.onboarding)]
    if parts.bridge is not None:
        blueprints.append(zigbee_blueprint(parts.bridge, parts.call))
    else:
        blueprints.append(_zigbee_disabled())
    if parts.platform is not None:
        blueprints.append(platform_blueprint(parts.platform, parts.call))
    if parts.ble is not None:
        # Only with BLE on: its module is the BlueZ stack's face (already loaded then).
        from gatewayd.control.ble import ble_blueprint

        blueprints.append(ble_blueprint(parts.ble, parts.call))
    else:
        blueprints.append(_ble_disabled())
    return create_control_app(parts.hub, parts.call, extra=blueprints, resets=resets)


def _ble_disabled() -> Blueprint:
    """With BLE off, `gatewayctl ble-window` still gets the BLE status object (§5.2), and
    a change the refusal that says why (it got "no such endpoint")."""
    bp = Blueprint("ble_disabled", __name__, url_prefix="/api/v1/ble")

    @bp.get("")
    @bp.get("/window")
    def status() -> Any:
        return jsonify({"enabled": False})

    @bp.post("/window")
    def window() -> Any:
        raise ApiError(409, BLE_DISABLED_CODE, BLE_OFF)

    return bp


def _zigbee_disabled() -> Blueprint:
    """With Zigbee off, `gatewayctl permit-join` and the others say why (they got "no such
    endpoint"); any other path under /zigbee stays 404."""
    bp = Blueprint("zigbee_disabled", __name__, url_prefix="/api/v1/zigbee")

    def refused() -> Any:
        raise ApiError(409, ZIGBEE_DISABLED_CODE, ZIGBEE_OFF)

    for command in ("permit-join", "install-code", "remove", "sim"):
        bp.add_url_rule(f"/{command}", command, refused, methods=["POST"])
    return bp
