"""Control-socket endpoints of BLE commissioning (``gatewayctl ble-window``).

- ``GET  /api/v1/ble`` and ``GET /api/v1/ble/window``: the commissioner's status.
- ``POST /api/v1/ble/window`` with ``{"action": "open" | "close"}`` and, for ``open``,
  optionally ``"authorize": true`` (what a button press does: Improv authorized for
  ``[ble] authorization_seconds``) and ``"seconds": N`` (the window closes N s from
  now; without, it stays open at least ``[ble] window_seconds`` from now). Answers the
  status after the change.

Mount with ``create_control_app(hub, call, extra=[ble_blueprint(commissioner, call)])``.
These endpoints belong on the control socket only (root or the control group): opening
the window forgives wrong setup codes, as the button does.
"""

from __future__ import annotations

from typing import Any, Protocol

from flask import Blueprint, jsonify

from gatewayd.ble_commission import BleUnavailable
from gatewayd.control.app import ApiError, invalid, json_object_body
from gatewayd.portal.api import BLE_DISABLED_CODE
from gatewayd.runtime.corecall import CoreCall

MAX_WINDOW_SECONDS = 86400.0


class BleControl(Protocol):
    """What the endpoints need (implemented by BleCommissioner)."""

    def status(self) -> dict[str, Any]: ...

    async def open_window(self, source: str = ..., *, authorize: bool = ...,
                          seconds: float | None = ...) -> dict[str, Any]: ...

    async def close_window(self, reason: str = ...) -> dict[str, Any]: ...


def ble_blueprint(commissioner: BleControl, call: CoreCall) -> Blueprint:
    bp = Blueprint("ble", __name__, url_prefix="/api/v1/ble")

    async def _status() -> dict[str, Any]:
        return commissioner.status()

    @bp.get("")
    @bp.get("/window")
    def status() -> Any:
        return jsonify(call(_status))

    @bp.post("/window")
    def window() -> Any:
        body = json_object_body()
        if "action" not in body:
            raise invalid("the body must be a JSON object with \"action\"")
        action = body.get("action")
        authorize = body.get("authorize", False)
        seconds = body.get("seconds")
        if action not in ("open", "close"):
            raise invalid("action: must be \"open\" or \"close\"")
        if not isinstance(authorize, bool):
            raise invalid("authorize: must be true or false")
        if seconds is not None and (isinstance(seconds, bool)
                                    or not isinstance(seconds, int | float)
                                    or not 0 < seconds <= MAX_WINDOW_SECONDS):
            raise invalid(f"seconds: must be a number of seconds above 0, "
                          f"at most {MAX_WINDOW_SECONDS:.0f}")
        if action == "close":
            return jsonify(call(commissioner.close_window, "control"))

        async def _open() -> dict[str, Any]:
            try:
                return await commissioner.open_window(
                    "control", authorize=authorize,
                    seconds=float(seconds) if seconds is not None else None)
            except BleUnavailable as exc:
                raise ApiError(409, BLE_DISABLED_CODE, str(exc)) from None

        return jsonify(call(_open))

    return bp
