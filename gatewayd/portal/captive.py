"""Captive portal: phones that join the hotspot are led to the panel.

While the hub's hotspot is up (pairing mode, or a paired hub offline for re-pairing,
whose panel then asks for the sign-in), the hotspot's DNS answers every name with the
hub's address. Phones then probe well-known URLs; answering with a redirect makes them
open the panel in their captive-portal browser. While the hotspot is down the probes get
the answer that means "no portal here".

Whatever the mode, a request naming a host that is not the hub is never served: a web
page of another site can point its name at the hub's address (DNS rebinding) and, being
"same-origin" with itself, pass every browser check.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable

from flask import Blueprint, Flask, Response, render_template, request

from gatewayd.onboarding.pairing import ForeignHost
from gatewayd.portal.api import refusal
from gatewayd.portal.core import PortalCore
from gatewayd.portal.pair import text
from gatewayd.portal.panel import hub_name

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

# Answered whatever the Host: they change nothing and reveal nothing.
ANY_HOST_PATHS = frozenset({"/healthcheck"})
ANY_HOST_PREFIX = "/static/"
# Never redirected: with a foreign Host the 2Smart app and API clients get a refusal
# they can read (its code is ForeignHost's), not a page.
NO_REDIRECT_PATHS = frozenset({"/pair"})
NO_REDIRECT_PREFIX = "/api/"
_PORT = re.compile(r":[0-9]{1,5}")
FOREIGN_HOST = ("Requests that name another site are refused (a web page may be using that "
                "name to reach the hub): open the hub by its IP address or as {name}.local, or add "
                "the name to [portal] host_names.")


def _bare_host(host: str) -> str | None:
    """A Host header's name or address, lower case, without its port or a trailing dot;
    None if the value is not ``host[:port]`` (a bad port, an unclosed ``[``)."""
    host = host.strip().lower()
    if host.startswith("["):
        inner, closed, rest = host[1:].partition("]")
        if not closed or (rest and not _PORT.fullmatch(rest)):
            return None
        return inner if ":" in inner else None  # brackets hold an IPv6 address only
    if host.count(":") == 1:
        host, port = host.split(":")
        if not _PORT.fullmatch(":" + port):
            return None
    return host.rstrip(".")


def own_names() -> frozenset[str]:
    name = socket.gethostname().lower()
    return frozenset({"localhost", name, f"{name}.local", f"{name}.lan", f"{name}.home"})


def foreign_host(host: str, names: frozenset[str]) -> bool:
    """A name the hub does not answer to: someone asked for another site.

    ``host`` is the raw Host header ("" when there is none). Any IP literal counts as ours:
    DNS tricks only affect names, and the hub's own addresses (hotspot, LAN) are not all
    known here. Everything else is ours only if it is one of ``names``: an empty, missing
    or unparseable Host is foreign (werkzeug's ``request.host`` is "" for a name with a
    character it does not expect, such as "_", which browsers resolve all the same).
    """
    bare = _bare_host(host)
    if not bare:
        return True
    try:
        ipaddress.ip_address(bare)
        return False
    except ValueError:
        return bare not in names


def panel_url(core: PortalCore) -> str:
    port = request.environ.get("SERVER_PORT", "80")
    suffix = "" if port in ("80", "") else f":{port}"
    return f"http://{core.hotspot_ip}{suffix}/"


def _to_panel(core: PortalCore) -> Response:
    response = Response(status=302, headers={"Location": panel_url(core)})
    # Captive browsers and caches must not remember the redirect after pairing.
    response.headers["Cache-Control"] = "no-store"
    return response


def _refused(core: PortalCore, message: str) -> Response:
    """The foreign-host refusal in the shape of the path asked for."""
    exc = ForeignHost(message)
    path = request.path
    if path.startswith(NO_REDIRECT_PREFIX):
        return refusal(exc)
    if path in NO_REDIRECT_PATHS:
        return text(exc.message, exc.status)
    html = render_template("refused.html", name=hub_name(core), message=exc.message)
    return Response(html, status=exc.status, mimetype="text/html")


def install_captive(app: Flask, core: PortalCore,
                    names: Callable[[], frozenset[str]] = own_names) -> None:
    known = names()
    message = FOREIGN_HOST.format(name=socket.gethostname().lower())

    @app.before_request
    def _captive() -> Response | None:
        path = request.path
        if path in PROBES:
            return _to_panel(core) if core.snapshot().captive else None
        if path in ANY_HOST_PATHS or path.startswith(ANY_HOST_PREFIX) \
                or not foreign_host(request.environ.get("HTTP_HOST", ""), known):
            return None
        if path not in NO_REDIRECT_PATHS and not path.startswith(NO_REDIRECT_PREFIX) \
                and core.snapshot().captive:
            return _to_panel(core)
        return _refused(core, message)

    bp = Blueprint("captive", __name__)

    def probe(path: str) -> Callable[[], Response]:
        status, body, mimetype = PROBES[path]
        return lambda: Response(body, status=status, mimetype=mimetype)

    for path in PROBES:
        bp.add_url_rule(path, f"probe{path.replace('/', '_').replace('.', '_')}", probe(path))
    app.register_blueprint(bp)
