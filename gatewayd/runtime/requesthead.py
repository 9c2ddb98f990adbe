"""What the web server keeps of a request it may refuse: its first bytes, and the path on
its request line (:mod:`gatewayd.runtime.webserver` answers a refusal under ``/api/`` in
JSON, elsewhere in plain text, as the app would have).

:class:`HeadParser` is waitress' parser with two changes: it keeps a request's first
bytes, even when it refused before it read the request line (headers too large) or
failed on it; and a request line whose address urllib cannot split (``http://[10.42.0.1/``,
an IPv6 host never closed) is a bad request, 400 "Bad URI", as waitress answers an
address it cannot decode. waitress 3.0.2 lets urllib's ValueError out of its parser: the
client got no answer at all, and each such request logged an ERROR with a traceback
("uncaptured python exception"), as many as anyone on the hotspot cared to send.

:func:`path_of` skips what waitress skips before a request line (any whitespace: empty
lines, spaces), so that the refusal of such a request is answered in the path's format.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from waitress.parser import HTTPRequestParser, ParsingError

HEAD_BYTES = 1024  # of a request's first bytes kept, for the path of a refused one


class HeadParser(HTTPRequestParser):
    """waitress' parser, keeping a request's first bytes (up to its first line)."""

    head = b""

    def received(self, data: bytes) -> int:
        if len(self.head) < HEAD_BYTES and b"\n" not in self.head.lstrip():
            self.head += data[:HEAD_BYTES - len(self.head)]
        return super().received(data)

    def parse_header(self, header_plus: bytes) -> None:
        try:
            super().parse_header(header_plus)
        except ValueError as exc:
            # urllib's "Invalid IPv6 URL" from waitress' split_uri (which catches only
            # UnicodeError): a request line this parser cannot read, as waitress' own.
            raise ParsingError("Bad URI") from exc


def path_of(head: bytes) -> str:
    """The path of a request line's target (``GET /api/v1/pair?x HTTP/1.1``), "" if none."""
    parts = head.lstrip().partition(b"\n")[0].split(b" ")
    if len(parts) < 2:
        return ""
    target = parts[1].decode("latin-1")
    if not target.startswith("/"):  # the absolute form, http://host/path
        try:
            target = urlsplit(target).path
        except ValueError:
            return ""
    return unquote(target.partition("?")[0])  # undecodable bytes replaced, never raised
