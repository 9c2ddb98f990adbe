"""The local HTTP API: served on the control socket (gatewayctl) and, in part, by the portal.

Handlers run in waitress' worker threads and reach the asyncio core only
through :class:`~gatewayd.runtime.corecall.CoreCall`.

An exception a handler does not catch is answered by :func:`refusal` when it is one of our
components' refusals (its message is written for the person asking), and otherwise with
the fixed ``internal`` answer, its traceback in the log: a handler catches only what it
answers differently.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from gatewayd.cloud.reqres import BadRequest, PlatformError, RequestFailed
from gatewayd.control.slots import BUSY_CODE, MAX_BODY, RESETS, Busy, Slots
from gatewayd.hub import INTERNAL_MESSAGE, RESET_TIMEOUT, Hub, StateWriteFailed
from gatewayd.onboarding.pairing import PairingService
from gatewayd.portal.api import (
    FAILED_CODE,
    INTERNAL_CODE,
    INVALID_CODE,
    SIM_UNAVAILABLE_CODE,
    UNAVAILABLE_CODE,
    api_blueprint,
)
from gatewayd.portal.core import PortalCore, PortalOnboarding
from gatewayd.runtime.corecall import CoreCall, CoreTimeout, CoreUnavailable
from gatewayd.runtime.jsonbody import BadBody, parse_json
from gatewayd.zigbee.inputs import BridgeError
from gatewayd.zigbee.simlink import SimError, SimUnavailable

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def invalid(message: str) -> ApiError:
    """A bad body or value (``message`` names it): the portal's code for the same refusal."""
    return ApiError(400, INVALID_CODE, message)


def unavailable(message: str) -> ApiError:
    return ApiError(503, UNAVAILABLE_CODE, message)


def refusal(exc: Exception) -> ApiError | None:
    """The answer to a refusal of one of our components, whose message is a sentence for the
    person asking; None for any other exception (a library's, a bug): its text can carry a
    library's internals or a secret, and nobody is shown it."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, Busy):
        return ApiError(429, BUSY_CODE, str(exc))
    if isinstance(exc, CoreUnavailable):
        return unavailable(str(exc))
    if isinstance(exc, StateWriteFailed):  # a reset, from POST /reset or a long press
        return ApiError(507, exc.code, str(exc))
    if isinstance(exc, BridgeError):
        return ApiError(exc.http_status, exc.code, str(exc))
    if isinstance(exc, SimError):
        return invalid(str(exc))
    if isinstance(exc, SimUnavailable):
        return ApiError(503, SIM_UNAVAILABLE_CODE, str(exc))
    if isinstance(exc, BadRequest):
        return invalid(str(exc))
    if isinstance(exc, RequestFailed):
        return ApiError(502, exc.error_code, str(exc),
                        details={"status": exc.status, "code": exc.code})
    if isinstance(exc, PlatformError):
        return ApiError(exc.code, exc.error_code, str(exc))
    return None


def failed(what: str) -> ApiError:
    """The answer when ``what`` failed with an exception that is no :func:`refusal`: a fixed
    sentence. Whoever ran ``what`` has logged its traceback (the button logs every press's
    failure, a physical press having nobody else to tell)."""
    return ApiError(500, FAILED_CODE, f"{what} failed; see the hub's log (journalctl -u gatewayd)")


def json_object_body() -> dict[str, Any]:
    """The request's JSON object; ``{}`` without a body; 400 for anything else."""
    try:
        body = parse_json(request.get_data())
    except BadBody as exc:
        raise invalid(str(exc)) from None
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object")
    return body


def asker() -> str:
    """Who sent the request, for :class:`Slots`: the peer's uid on the control socket
    (``uid 1000``: gatewayd.runtime.webserver), an address elsewhere."""
    return str(request.environ.get("REMOTE_ADDR") or "unknown")


def reset_still_running(what: str) -> ApiError:
    """The answer when a reset outlasts its allowance: it is not cut short (Hub.reset), so
    the caller learns it goes on rather than that the daemon did not answer. Still the
    ``unavailable`` of any call out of time: a status code is part of the contract."""
    return unavailable(f"{what} did not finish within {RESET_TIMEOUT:g} s; it goes on in the "
                       "hub: see 'gatewayctl status'")


def error_response(status: int, code: str, message: str,
                   details: dict[str, Any] | None = None) -> Any:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    response = jsonify({"error": error})
    response.status_code = status
    return response


def control_blueprint(hub: Hub, call: CoreCall, resets: Slots) -> Blueprint:
    """Endpoints only the control socket serves (it is root/group-only by file mode).
    ``resets`` bounds the resets (and button presses) waiting at once."""
    bp = Blueprint("control", __name__, url_prefix="/api/v1")

    async def _status() -> dict[str, Any]:
        return hub.status()

    @bp.get("/status")
    def status() -> Any:
        return jsonify(call(_status))

    @bp.post("/reset")
    def reset() -> Any:
        full = json_object_body().get("full", False)
        if not isinstance(full, bool):
            raise invalid("full: must be true or false")
        try:
            with resets.hold(asker()):
                return jsonify(call(hub.reset, full, timeout=RESET_TIMEOUT))
        except CoreTimeout:
            raise reset_still_running("the reset") from None

    @bp.get("/setup-code")
    def setup_code() -> Any:
        async def _code() -> dict[str, str]:
            return hub.setup_code()
        return jsonify(call(_code))

    return bp


def create_control_app(hub: Hub, call: CoreCall, extra: list[Blueprint] | None = None, *,
                       resets: Slots | None = None) -> Flask:
    """``resets``: the slots ``POST /reset`` shares with ``POST /button``."""
    app = Flask("gatewayd.control")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.register_blueprint(control_blueprint(hub, call, resets or Slots(RESETS)))
    for bp in extra or []:
        app.register_blueprint(bp)

    @app.errorhandler(404)
    def _not_found(exc: Exception) -> Any:
        return error_response(404, "not-found", f"no such endpoint: {request.path}")

    @app.errorhandler(405)
    def _bad_method(exc: Exception) -> Any:
        return error_response(405, "method-not-allowed", f"{request.method} not allowed here")

    @app.errorhandler(413)
    def _too_large(exc: Exception) -> Any:
        return error_response(413, "request-entity-too-large",
                              f"the body is over {MAX_BODY // 1024} KiB, the most the control "
                              "socket takes")

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        # Werkzeug's own answers (400, 415, ...) are HTML pages, which gatewayctl cannot
        # read, and their descriptions speak to web developers: the hub's own words.
        status = exc.code or 500
        message = ("the request could not be read" if status == 400 else
                   f"the control socket cannot take this request ({status} {exc.name})")
        return error_response(status, exc.name.lower().replace(" ", "-"), message)

    @app.errorhandler(Exception)
    def _error(exc: Exception) -> Any:
        answer = refusal(exc)
        if answer is None:
            # The traceback goes to the log, where the redactor masks secrets.
            log.exception("control: unexpected error on %s %s", request.method, request.path)
            answer = ApiError(500, INTERNAL_CODE, INTERNAL_MESSAGE)
        return error_response(answer.status, answer.code, answer.message, answer.details)

    return app


def control_blueprints(hub: Hub, call: CoreCall, *, pairing: PairingService,
                       onboarding: PortalOnboarding) -> list[Blueprint]:
    """What the control socket mounts (``create_control_app(..., extra=...)``).

    ``/api/v1/networks``, ``/pair``, ``/progress`` and ``/openapi.json``: the portal's
    code without its rate limit or login (the socket's file mode is the access control).
    ``/status`` stays the control socket's own.
    """
    core = PortalCore(hub, call, pairing, onboarding, people=False)
    return [api_blueprint(core, include_status=False)]
