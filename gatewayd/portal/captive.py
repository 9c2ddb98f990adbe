"""Captive portal: phones that join the hotspot are led to the panel.

While the hub is in hotspot (pairing) mode, the hotspot's DNS answers every name
with the hub's address. Phones then probe well-known URLs; answering with a
redirect makes them open the panel in their captive-portal browser. Outside
hotspot mode the probes get the answer that means "no portal here".
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

from flask import Blueprint, Flask, Response, request

from gatewayd.portal.core import PortalCore

# Probe paths of Android, Apple, Windows, Firefox and Kindle, with the "online" answer.
PROBES: dict[str, tuple[int, str, str]] = {
    "/generate_204": (204, "", "text/plain"),
    "/gen_204": (204, "", "text/plain"),
    "/hotspot-detect.html": (200, "<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success"
                                  "</BODY></HTML>", "text/html"),
    "/library/test/success.html": (200, "<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>"
                                        "Success</BODY></HTML>", "text/html"),
    "/connecttest.txt": (200, "Microsoft Connect Test", "text/plain"),
    "/ncsi.txt": (200, "Microsoft NCSI", "text/plain"),
    "/redirect": (204, "", "text/plain"),
    "/canonical.html": (200, '<meta http-equiv="refresh" content="0;url='
                             'https://support.mozilla.org/kb/captive-portal"/>', "text/html"),
    "/success.txt": (200, "success\n", "text/plain"),
    "/kindle-wifi/wifistub.html": (200, "<html><body>81ce4465-7167-4dcb-835b-dcc9e44c112a"
                                        "</body></html>", "text/html"),
}

# These keep their contract whatever the Host: the 2Smart app and API clients call them.
EXEMPT_PATHS = frozenset({"/healthcheck", "/pair"})
EXEMPT_PREFIX = "/api/"


def _strip_port(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def own_names() -> frozenset[str]:
    name = socket.gethostname().lower()
    return frozenset({"localhost", name, f"{name}.local", f"{name}.lan", f"{name}.home"})


def foreign_host(host: str, names: frozenset[str]) -> bool:
    """A name the hub does not answer to: someone asked for another site.

    Any IP literal counts as ours: DNS tricks only affect names, and the hub's own
    addresses (hotspot, LAN) are not all known here.
    """
    bare = _strip_port(host)
    if not bare:
        return False
    try:
        ipaddress.ip_address(bare)
        return False
    except ValueError:
        return bare not in names


def panel_url(core: PortalCore) -> str:
    port = request.environ.get("SERVER_PORT", "80")
    suffix = "" if port in ("80", "") else f":{port}"
    return f"http://{core.hotspot_ip}{suffix}/"


def install_captive(app: Flask, core: PortalCore,
                    names: Callable[[], frozenset[str]] = own_names) -> None:
    known = names()

    @app.before_request
    def _captive() -> Response | None:
        path = request.path
        if path in EXEMPT_PATHS or path.startswith(EXEMPT_PREFIX):
            return None
        if path not in PROBES and not foreign_host(request.host, known):
            return None
        if not core.snapshot().captive:
            return None
        target = panel_url(core)
        response = Response(status=302, headers={"Location": target})
        # Captive browsers and caches must not remember the redirect after pairing.
        response.headers["Cache-Control"] = "no-store"
        return response

    bp = Blueprint("captive", __name__)

    def probe(path: str) -> Callable[[], Response]:
        status, body, mimetype = PROBES[path]
        return lambda: Response(body, status=status, mimetype=mimetype)

    for path in PROBES:
        bp.add_url_rule(path, f"probe{path.replace('/', '_').replace('.', '_')}", probe(path))
    app.register_blueprint(bp)
