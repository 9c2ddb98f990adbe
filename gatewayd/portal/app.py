"""The portal's Flask app: pairing endpoints, JSON API, admin panel, captive portal.

Served by waitress (:class:`gatewayd.runtime.webserver.WebServer`) in threads beside the
asyncio core; every view reaches the core through :class:`PortalCore`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from gatewayd.hub import INTERNAL_MESSAGE, Hub
from gatewayd.onboarding.pairing import PairingService
from gatewayd.portal.api import (
    INTERNAL_CODE,
    RATE_LIMITED_CODE,
    UNAUTHORIZED_CODE,
    UNAVAILABLE_CODE,
    api_blueprint,
    api_error,
)
from gatewayd.portal.captive import install_captive, own_names
from gatewayd.portal.core import PortalCore, PortalOnboarding
from gatewayd.portal.pair import pair_blueprint, text
from gatewayd.portal.panel import format_time, format_uptime, panel_blueprint
from gatewayd.portal.refusals import body_too_large, wants_json
from gatewayd.portal.security import (
    LOGIN_RATE_PER_MINUTE,
    AdminAuth,
    RateLimiter,
    add_security_headers,
    configure_session,
)
from gatewayd.portal.signins import SignIns
from gatewayd.portal.zigbee import zigbee_blueprint, zigbee_panel_blueprint
from gatewayd.runtime.corecall import CoreCall, CoreUnavailable

if TYPE_CHECKING:  # the bridge (sqlite3, the radio glue) loads only with Zigbee on
    from gatewayd.bridge import ZigbeeBridge

log = logging.getLogger(__name__)


def _wants_json() -> bool:
    return wants_json(request.path)


def _admin_guard(core: PortalCore, auth: AdminAuth) -> Any:
    def guard() -> Response | None:
        if not core.snapshot().admin_only or auth.session_valid():
            return None
        result = auth.basic_auth(request)
        if result is True:
            return None
        if result is False:
            response = api_error(401, "sign in: HTTP Basic user 'admin' with the admin "
                                      "password (the setup code unless configured)",
                                 code=UNAUTHORIZED_CODE)
            response.headers["WWW-Authenticate"] = 'Basic realm="gatewayd", charset="UTF-8"'
            return response
        response = api_error(429, f"too many failed sign-ins; try again in {result} seconds",
                             code=RATE_LIMITED_CODE)
        response.headers["Retry-After"] = str(result)
        return response
    return guard


def http_message(exc: HTTPException, max_bytes: int) -> str:
    """Our own words for what the web framework refuses (its descriptions speak to
    developers: "If you entered the URL manually please check your spelling ..."); what
    the web server refuses before the app has its words in refusals.py."""
    status = exc.code or 500
    if status == 404:
        return "This hub has nothing at this address."
    if status == 405:
        allowed = sorted(set(getattr(exc, "valid_methods", None) or ()) - {"HEAD", "OPTIONS"})
        only = f" (only {' and '.join(allowed)})" if allowed else ""
        return f"This address does not take {request.method} requests{only}."
    if status == 413:
        return body_too_large(max_bytes)
    if status == 400:
        return "The request could not be read."
    return f"The hub cannot take this request ({status} {exc.name})."


def _install_error_handlers(app: Flask, max_bytes: int) -> None:
    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        status = exc.code or 500
        message = http_message(exc, max_bytes)
        if _wants_json():
            return api_error(status, message, code=exc.name.lower().replace(" ", "-"))
        return text(message, status)

    @app.errorhandler(CoreUnavailable)
    def _unavailable(exc: CoreUnavailable) -> Any:
        message = f"The hub is not ready: {exc}."
        return api_error(503, message, code=UNAVAILABLE_CODE) if _wants_json() \
            else text(message, 503)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        # Logged (the redactor masks secrets) but never shown: no traceback in a response.
        log.exception("portal: unexpected error on %s %s", request.method, request.path)
        return api_error(500, INTERNAL_MESSAGE, code=INTERNAL_CODE) if _wants_json() \
            else text(INTERNAL_MESSAGE, 500)


def create_portal_app(hub: Hub, call: CoreCall, *, pairing: PairingService,
                      onboarding: PortalOnboarding,
                      zigbee: ZigbeeBridge | None = None,
                      sign_ins: SignIns | None = None) -> Flask:
    """The portal app.

    ``pairing`` is the daemon's one :class:`PairingService`; ``onboarding`` is the state
    machine behind it (scanned networks, "a person is here"); ``sign_ins`` the daemon's
    record of admin sign-ins (its ``admin_sign_in`` status section).
    """
    app = Flask("gatewayd.portal")
    app.config["MAX_CONTENT_LENGTH"] = hub.config.portal.max_request_bytes
    app.jinja_env.filters.update(uptime=format_uptime, when=format_time)
    configure_session(app)
    core = PortalCore(hub, call, pairing, onboarding)
    pair_limiter = RateLimiter(hub.config.portal.pair_rate_per_minute)
    auth = AdminAuth(core, RateLimiter(LOGIN_RATE_PER_MINUTE), sign_ins=sign_ins)

    install_captive(app, core, lambda: own_names() | {
        name.lower().rstrip(".") for name in hub.config.portal.host_names})
    app.register_blueprint(pair_blueprint(core, pair_limiter))
    app.register_blueprint(api_blueprint(core, limiter=pair_limiter,
                                         guard=_admin_guard(core, auth),
                                         signed_in=auth.session_valid))
    app.register_blueprint(panel_blueprint(core, auth, pair_limiter))
    if zigbee is not None:
        app.register_blueprint(zigbee_blueprint(zigbee, call, _admin_guard(core, auth)))
        app.register_blueprint(zigbee_panel_blueprint(zigbee, call, auth))
    app.after_request(add_security_headers)
    _install_error_handlers(app, hub.config.portal.max_request_bytes)

    @app.after_request
    def _static_cache(response: Response) -> Response:
        if request.path.startswith("/static/"):
            # Small files, but captive browsers on slow phones reload them on every page.
            response.headers["Cache-Control"] = "public, max-age=300"
        return response

    return app

