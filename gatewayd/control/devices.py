"""Control-socket endpoints for child devices and the hub's hardware.

* ``GET /api/v1/devices``: every child device of every registered provider (virtual devices,
  the Zigbee bridge, ...), sorted by device id: ``{"devices": [...], "errors": {...}}``.
  Each entry has at least ``device_id``, ``provider``, ``name`` and ``state``.
* ``POST /api/v1/button`` ``{"press": "short"|"long"}``: the same action as the button.
* ``POST /api/v1/identify`` ``{"seconds": 10}``: the LED blinks its identify pattern.

Handlers run in waitress' threads and reach the loop only through :class:`CoreCall`.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, jsonify

from gatewayd.control.app import (
    asker,
    failed,
    invalid,
    json_object_body,
    refusal,
    reset_still_running,
    unavailable,
)
from gatewayd.control.parts import DeviceProviders
from gatewayd.control.slots import RESETS, Slots
from gatewayd.hardware.button import PRESS_KINDS
from gatewayd.hardware.component import Hardware
from gatewayd.hardware.led import IDENTIFY_SECONDS
from gatewayd.hub import RESET_TIMEOUT
from gatewayd.runtime.corecall import CoreCall, CoreTimeout

PRESS_ACTIONS = {"short": "commissioning-window", "long": "factory-reset"}
PRESS_TIMEOUT = RESET_TIMEOUT  # a long press is the factory reset


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return None
    return value


def devices_blueprint(call: CoreCall, providers: DeviceProviders,
                      hardware: Hardware | None, *, presses: Slots | None = None) -> Blueprint:
    """``presses``: the slots a button press shares with ``POST /reset``."""
    slots = presses or Slots(RESETS)
    bp = Blueprint("devices", __name__, url_prefix="/api/v1")

    @bp.get("/devices")
    def devices() -> Any:
        async def _collect() -> dict[str, Any]:
            return providers.collect()
        return jsonify(call(_collect))

    def _hardware() -> Hardware:
        if hardware is None:
            raise unavailable("the hub's hardware is not set up")
        return hardware

    @bp.post("/button")
    def button() -> Any:
        kind = json_object_body().get("press")
        if kind not in PRESS_KINDS:
            raise invalid(f"press: must be one of {', '.join(PRESS_KINDS)}")
        hw = _hardware()
        try:
            with slots.hold(asker()):
                result = call(hw.press, kind, timeout=PRESS_TIMEOUT)
        except CoreTimeout:
            if kind == "long":
                raise reset_still_running("the long press's factory reset") from None
            raise
        except Exception as exc:
            # What a press runs (the hotspot, the BLE window, the reset) fails in its
            # libraries' words: the caller learns which press failed, the log the rest.
            raise refusal(exc) or failed(f"the {kind} press") from None
        return jsonify({"press": kind, "action": PRESS_ACTIONS[kind],
                        "result": _jsonable(result)})

    @bp.post("/identify")
    def identify() -> Any:
        seconds = json_object_body().get("seconds", IDENTIFY_SECONDS)
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) \
                or not 0 < seconds <= 3600:
            raise invalid("seconds: must be a number above 0, at most 3600")
        hw = _hardware()
        return jsonify(call(hw.identify, float(seconds)))

    return bp
