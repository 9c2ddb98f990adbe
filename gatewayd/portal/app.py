"""The portal's Flask app (pairing endpoints, admin panel, JSON API)."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response

from gatewayd.corecall import CoreCall
from gatewayd.hub import Hub


def create_portal_app(hub: Hub, call: CoreCall) -> Flask:
    app = Flask("gatewayd.portal")
    app.config["MAX_CONTENT_LENGTH"] = hub.config.portal.max_request_bytes

    @app.get("/healthcheck")
    def healthcheck() -> Any:
        # The 2Smart app probes this exact body.
        return Response("OK", mimetype="text/plain")

    return app
