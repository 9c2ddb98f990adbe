"""What the portal's web server refuses before the portal's app sees a request, answered
in the hub's words and format (docs/interfaces.md §4.6): a request whose body or headers
are over the limits, a transfer coding the server lacks, one its parser cannot read, and
an app that raised. Under ``/api/`` the JSON error, elsewhere plain text, as the app answers
its own 404 and 405, with the headers every portal answer carries.

No Flask: the daemon gives :func:`error_page` to the web server, which answers these before
the app is built (:class:`gatewayd.runtime.webserver.LazyApp`); the app takes its words
and headers from here too.
"""

from __future__ import annotations

import json

from gatewayd.hub import INTERNAL_MESSAGE
from gatewayd.runtime.webserver import Refusal

# An unexpected fault, on the portal and on the control socket alike: one code and a fixed
# message (gatewayd.hub.INTERNAL_MESSAGE); what went wrong is only in the log.
INTERNAL_CODE = "internal"

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "object-src 'none'")
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    # Not "no-referrer": with it Chromium sends "Origin: null" on our own form posts.
    ("Referrer-Policy", "same-origin"),
    ("Content-Security-Policy", CSP),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=()"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    # Pages show live state and forms carry tokens: never cache them.
    ("Cache-Control", "no-store"),
)

# What waitress' parser says it could not read (its own words start these), in ours.
UNREADABLE = (
    ("Content-Length is invalid", "its Content-Length is not a number of bytes"),
    ("Bare CR or LF", "a line ends in a bare CR or LF (HTTP lines end in CR LF)"),
    ("Invalid header", "a header line is not 'Name: value'"),
    ("Malformed header line", "a header line is not 'Name: value'"),
    ("Start line is invalid", "its first line is not 'METHOD /path HTTP/1.1'"),
    ("HTTP message header invalid", "its first line is not 'METHOD /path HTTP/1.1'"),
    ("Malformed HTTP method", "its method is not in capital letters, such as GET or POST"),
    ("Bad URI", "its address is not valid"),
    ("Chunk not properly terminated", "its chunked body is malformed"),
    ("Invalid chunk", "its chunked body is malformed"),
)


def wants_json(path: str) -> bool:
    """The JSON API's paths answer JSON errors; every other path plain text."""
    return path.startswith("/api/")


def body_too_large(limit: int) -> str:
    return f"The request body is too large: this hub takes at most {limit} bytes."


def unreadable(detail: str) -> str:
    """A request the parser could not read, and why, in the hub's words (never the
    parser's own, which quote the request back)."""
    what = next((ours for theirs, ours in UNREADABLE if detail.startswith(theirs)),
                "it is not valid HTTP/1.1")
    return f"The request could not be read: {what}."


def message(refusal: Refusal) -> str:
    status = refusal.status
    if status == 413 and refusal.limit is not None:
        return body_too_large(refusal.limit)
    if status == 431 and refusal.limit is not None:
        return (f"The request's headers are too large: this hub takes at most "
                f"{refusal.limit} bytes of request line (with its query string) and headers.")
    if status == 501:
        return ("The request's Transfer-Encoding is not supported: this hub takes only "
                "chunked.")
    if status == 400:
        return unreadable(refusal.detail)
    if status == 500:
        return INTERNAL_MESSAGE
    return f"The hub cannot take this request ({status} {refusal.reason})."


def code(status: int, reason: str) -> str:
    """An HTTP refusal's API error code: the status name, lowercase, with hyphens
    (``internal`` for a 500: an unexpected fault)."""
    return INTERNAL_CODE if status == 500 else reason.lower().replace(" ", "-")


def error_page(refusal: Refusal) -> tuple[list[tuple[str, str]], bytes]:
    """The web server's answer to ``refusal`` (:data:`gatewayd.runtime.webserver.ErrorPage`)."""
    text = message(refusal)
    if wants_json(refusal.path):
        error = {"error": {"code": code(refusal.status, refusal.reason), "message": text}}
        kind, body = "application/json", json.dumps(error).encode() + b"\n"
    else:
        kind, body = "text/plain; charset=utf-8", text.encode()
    return [("Content-Type", kind), *SECURITY_HEADERS], body
