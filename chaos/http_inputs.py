"""Fuzzed HTTP inputs, made from a seeded ``random.Random``: no I/O here.

Three families, each a function of the generator and the input's number:

* :func:`pair_query`: ``GET /pair`` with the valid pairing fields mutated (overlong, wrong
  types, control characters, unicode, ``%0A``, missing, duplicated, huge), with structural
  faults (too many parameters, bad percent escapes) and browser headers (``Origin``,
  ``Sec-Fetch-Site``). A few inputs are valid requests with other values (a wrong Wi-Fi
  password, another account) or the valid request itself: those start attempts.
* :func:`json_body`: ``POST /api/v1/pair`` with bodies that are nested, of wrong types,
  not objects, not JSON, not UTF-8, too big, and with wrong media types.
* :func:`raw_request`: what no HTTP client would send: bad request lines, bad headers,
  conflicting lengths, truncated bodies, huge headers, pipelined garbage, random bytes.

The same seed gives the same inputs in the same order.
"""

from __future__ import annotations

import json
import random
import urllib.parse
from dataclasses import dataclass

from chaos.world import request

FIELDS = ("ssid", "psk", "hidden", "wsp", "token", "host", "brport", "rootTopic",
          "mqtts_port")
CONTROL = ["\x00", "\x01", "\x08", "\x1b[31m", "\x1f", "\x7f", "\t", "\r", "\n", "\r\n"]
UNICODE = ["é", "☃", "𝄞", "\u202e", "\u200b", "\ufeff", "\u210c", "\u0661\u0668\u0668\u0663",
           "\uff21\uff22", "e\u0301", "\u2028", "\U0010ffff"]
BAD_UTF8 = [b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\x80"]
WRONG_TYPES = ["true", "null", "[]", "{}", "1e3", "-1", "0", "65536", "99999", "0x1f", "NaN",
               "+1883", "1883.0", "١٨٨٣", "1_883", " 1883", "Infinity", "-0"]
PERCENT_JUNK = ["%", "%z", "%zz", "%g0", "%%41", "%u0041", "%0", "%C3", "%FF%FE", "%00"]
SPECIAL = ["&", "=", "#", ";", "+", "?", "/", "\\", "'", '"', "<script>", "${x}", "%s%n"]
BY_FIELD = {
    "wsp": ["no-at", "a@b", "@x.com", "a@@b.com", "a b@c.com", "x" * 65 + "@ex.com",
            "a@" + "b" * 64 + ".com", "a@b..com", "a@-b.com", "a@b_c.com", "a@.com",
            "a@b.com\n", "a\x00@b.com", "a@b.c-"],
    "host": ["exa mple.com", "-bad.com", "a..b", "[::1]", "::1:", "localhost..", "a" * 254,
             "http://h", "h:1883", "*", "a_b.com", "é.com", ".", "host.%0A", "a.-b", "1.2.3..",
             "::g", "fe80::1%eth0\n", "fe80::1%/x", "a" * 64 + ".com"],
    "rootTopic": ["a/b", "+", "#", "$SYS", "$x", "a" * 129, "é" * 65, "a+b", "a#", "\x00",
                  "/", "a/", "$", "#/+", "x\x7f"],
    "ssid": ["a" * 33, "é" * 17, "\x00"],
    "psk": ["short", "x" * 64, "a" * 65, "pässwörd12", "0123456789abcdef" * 3 + "0123456g",
            "\x7fcontrol1"],
    "hidden": ["maybe", "2", "yes please", "TRUE ", "tru", "offf", "\x00"],
    "brport": WRONG_TYPES, "mqtts_port": WRONG_TYPES,
    "token": ["a\x01b", "x" * 1025, "é" * 600, "\x7f"],
}
# Valid values other than the account's: an attempt starts and fails (or pairs).
OTHER_VALID = [("psk", "wrong-password-1"), ("token", "not-the-token"),
               ("wsp", "someone@example.org"), ("hidden", "false")]
ORIGINS = ["http://evil.example", "null", "http://[::1", "http://[", "https://127.0.0.1:1",
           "file://", "http://127.0.0.1:1:2", "\u2603"]
Value = str | bytes


@dataclass(frozen=True)
class HttpInput:
    kind: str  # "pair", "json" or "raw"
    label: str  # what the input is, for the report
    data: bytes  # the whole request as sent; then the client shuts its sending side, so
    # a request cut short ends there instead of at the portal's request deadline
    # A status of 500 or more that is the documented answer: 501 for a transfer coding
    # the server does not implement (RFC 9112 section 6.1; docs/interfaces.md 4.4)
    allowed: tuple[int, ...] = ()
    mutated: frozenset[str] = frozenset()  # the pairing fields a mutation changed


def _insert(rng: random.Random, value: str, extra: str) -> str:
    at = rng.choice([0, len(value) // 2, len(value)])
    return value[:at] + extra + value[at:]


# Optional fields take many values (an empty one means "the default"), so most mutations
# of them are valid requests; a valid rootTopic the account's ACL does not cover costs the
# hub 10 s to prove (item 6: the round trip of its own $state). These fields are mutated
# only in ways the validation must refuse.
RESTRICTED = {
    "hidden": ["control", "overlong", "huge", "unicode", "field", "wrong-type"],
    "rootTopic": ["control", "newline", "overlong", "huge", "field", "field"],
    # and a valid host name that does not resolve costs [hotspot] connect_timeout (30 s):
    # DNS failures are retried for the attempt's time, the network may have just come up
    "host": ["control", "newline", "overlong", "huge", "spaces", "unicode", "special",
             "field", "field", "missing"],
    "mqtts_port": ["control", "overlong", "huge", "unicode", "wrong-type", "wrong-type"],
}
ALWAYS_VALID = {"hidden": {"true", "0", "-0"}, "mqtts_port": {"0"}, "brport": set()}
KINDS = ["empty", "overlong", "huge", "control", "newline", "spaces", "unicode", "bad-utf8",
         "wrong-type", "special", "field", "field", "field", "missing"]


def mutate(rng: random.Random, name: str, value: str) -> tuple[str, Value | None]:
    """One mutation of a field: (what was done, new value); None drops the field."""
    kind = rng.choice(RESTRICTED.get(name, KINDS))
    if kind == "empty":
        return kind, ""
    if kind == "overlong":
        return kind, value + "a" * rng.choice([2049, 2100, 4000])
    if kind == "huge":
        return kind, "A" * rng.choice([9000, 17000, 40000])
    if kind == "control":
        return kind, _insert(rng, value, rng.choice(CONTROL))
    if kind == "newline":
        return kind, value + rng.choice(["\n", "\r\n", "\r", "\n\n"])
    if kind == "spaces":
        return kind, rng.choice([" " + value, value + " ", value[:1] + " " + value[1:]])
    if kind == "unicode":
        return kind, _insert(rng, value or "x", rng.choice(UNICODE))
    if kind == "bad-utf8":
        return kind, value.encode("utf-8", "surrogateescape") + rng.choice(BAD_UTF8)
    if kind == "wrong-type":
        valid = ALWAYS_VALID.get(name, set())
        return kind, rng.choice([v for v in WRONG_TYPES if v not in valid])
    if kind == "special":
        return kind, _insert(rng, value, rng.choice(SPECIAL))
    if kind == "field" and name in BY_FIELD:
        return kind, rng.choice(BY_FIELD[name])
    return "missing", None


def _quote(value: Value) -> str:
    if isinstance(value, bytes):
        return urllib.parse.quote_from_bytes(value, safe="")
    return urllib.parse.quote(value, safe="", errors="surrogateescape")


def browser_headers(rng: random.Random, port: int) -> tuple[str, dict[str, str]]:
    """Usually none (apps send none); sometimes what a browser or a forger would send."""
    roll = rng.random()
    if roll < 0.85:
        return "", {}
    if roll < 0.90:
        return "origin-same", {"Origin": f"http://127.0.0.1:{port}"}
    if roll < 0.96:
        origin = rng.choice(ORIGINS)
        return f"origin {origin!r}", {"Origin": origin}
    return "cross-site", {"Sec-Fetch-Site": "cross-site"}


# Once a run has had its share of attempts, ``strict`` inputs are all invalid: a mutation
# that happens to leave a valid request gets brport=0 as well (validated after every field
# but mqtts_port and rootTopic, whose mutations are always invalid: RESTRICTED).
STRICT = ("brport", "0")


def _strictly(pairs: list[tuple[str, Value]], mutated: set[str]) -> list[tuple[str, Value]]:
    if "brport" in mutated or (mutated and mutated <= set(RESTRICTED)):
        return pairs
    return [(n, STRICT[1] if n == STRICT[0] else v) for n, v in pairs]


def pair_query(rng: random.Random, valid: dict[str, str], port: int, *,
               strict: bool = False) -> HttpInput:
    """``strict``: no request the hub may accept (no attempt starts)."""
    pairs: list[tuple[str, Value]] = list(valid.items())
    raw_tail = ""
    roll = rng.random()
    mutated: set[str] = set()
    if strict and roll < 0.025:
        roll = 0.5
    if roll < 0.005:
        label = "valid"
    elif roll < 0.025:
        name, value = rng.choice(OTHER_VALID)
        pairs = [(n, value if n == name else v) for n, v in pairs]
        label = f"other-valid {name}"
    elif roll < 0.10:
        label, pairs, raw_tail = _structural(rng, pairs)
    else:
        done = []
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            index = rng.randrange(len(FIELDS))
            name = FIELDS[index]
            current = dict(pairs).get(name, "")
            if isinstance(current, bytes):
                current = current.decode("utf-8", "surrogateescape")
            what, new = mutate(rng, name, current)
            pairs = [(n, v) for n, v in pairs if n != name]
            if new is not None:
                pairs.insert(min(index, len(pairs)), (name, new))
            if what == "field" and rng.random() < 0.2:
                pairs.append((name, new if new is not None else ""))
                what = "duplicated"
            done.append(f"{name}:{what}")
            mutated.add(name)
        label = " ".join(done)
    if strict:
        pairs = _strictly(pairs, mutated)
    query = "&".join(f"{_quote(n)}={_quote(v)}" for n, v in pairs) + raw_tail
    header_label, headers = browser_headers(rng, port)
    label = f"{label} {header_label}".strip()
    return HttpInput("pair", label, request("GET", f"/pair?{query}", headers),
                     mutated=frozenset(mutated))


def _structural(rng: random.Random, pairs: list[tuple[str, Value]]
                ) -> tuple[str, list[tuple[str, Value]], str]:
    kind = rng.choice(["too-many", "duplicate", "unknown-only", "empty", "no-value",
                       "percent-junk", "raw-newline", "case", "plus-space"])
    if kind == "too-many":
        extra = [(f"x{i}", str(i)) for i in range(rng.randrange(24, 80))]
        return kind, pairs + extra, ""
    if kind == "duplicate":
        name, value = rng.choice(pairs)
        return kind, [*pairs, (name, value)], ""
    if kind == "unknown-only":
        return kind, [("SSID", "HomeNet"), ("password", "x"), ("email", "a@b.com")], ""
    if kind == "empty":
        return kind, [], rng.choice(["", "&", "&&&", "=", "==", "&=&"])
    if kind == "no-value":
        name, _ = rng.choice(pairs)
        return kind, [p for p in pairs if p[0] != name], f"&{name}"
    if kind == "percent-junk":
        name, _ = rng.choice(pairs)
        return kind, [p for p in pairs if p[0] != name], f"&{name}={rng.choice(PERCENT_JUNK)}"
    if kind == "raw-newline":
        name, value = rng.choice(pairs)
        rest = [p for p in pairs if p[0] != name]
        return kind, rest, f"&{name}={_quote(value)}%0A"
    if kind == "case":
        return kind, [(n.upper(), v) for n, v in pairs], ""
    name, value = rng.choice(pairs)
    rest = [p for p in pairs if p[0] != name]
    return kind, rest, f"&{name}=+{_quote(value)}+"


# ---- JSON bodies ---------------------------------------------------------------------------------

JSON_VALUES: list[object] = [0, -1, 1.5, 1e308, True, False, None, [], {}, ["HomeNet"],
                             {"ssid": "HomeNet"}, 10 ** 40, "", " ", "\u0000"]
MEDIA = ["text/plain", "application/json; charset=latin-1", "application/x-www-form-urlencoded",
         "APPLICATION/JSON", "application/jsonx", "multipart/form-data; boundary=x",
         "application/json, text/plain", "", "application/merge-patch+json"]
BROKEN = [b"{", b"}", b"", b" ", b"{\"ssid\": \"HomeNet\",}", b"{'ssid': 'HomeNet'}",
          b"{ssid: 1}", b"{\"a\": 1} trailing", b"{\"a\": 1}{\"b\": 2}", b"// c\n{}",
          b"\xef\xbb\xbf{}", b"\x00", b"{\"a\": NaN}", b"{\"a\": -Infinity}", b"{\"a\": 1e999}",
          b"[1, 2", b"\"unterminated", b"{\"a\": \"\\ud800\"}", b"{\"a\": \"\\u00\"}",
          b"nul", b"tru", b"{\"a\" 1}", b"{\"a\":01}", b"{\"\\u0000\": 1}"]


def _nested(rng: random.Random, depth: int) -> bytes:
    if rng.random() < 0.5:
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def json_body(rng: random.Random, valid: dict[str, str], port: int, *,
              strict: bool = False) -> HttpInput:
    """``strict``: no request the hub may accept (every object has brport 0 unless a
    mutation of brport replaced it)."""
    fields: dict[str, object] = dict(valid)
    if strict:
        fields[STRICT[0]] = STRICT[1]
    headers = {"Content-Type": "application/json"}
    roll = rng.random()
    if roll < 0.45:
        done = []
        for _ in range(rng.choice([1, 1, 2, 3])):
            name = rng.choice(FIELDS)
            if rng.random() < 0.5:
                fields[name] = rng.choice(JSON_VALUES)
                done.append(f"{name}:json-type")
            else:
                what, new = mutate(rng, name, str(fields.get(name, "")))
                if new is None:
                    fields.pop(name, None)
                else:
                    fields[name] = new.decode("utf-8", "surrogateescape") \
                        if isinstance(new, bytes) else new
                done.append(f"{name}:{what}")
        label = "fields " + " ".join(done)
        body = json.dumps(fields, ensure_ascii=rng.random() < 0.5).encode("utf-8",
                                                                           "surrogateescape")
    elif roll < 0.55:
        label, body = "not-an-object", json.dumps(rng.choice(
            [[], [fields], "HomeNet", 1883, None, True, 1.5, [[[]]]])).encode()
    elif roll < 0.63:
        depth = rng.choice([33, 100, 1000, 3000, 8000])
        label, body = f"nested {depth}", _nested(rng, depth)
    elif roll < 0.75:
        label, body = "broken", rng.choice(BROKEN)
    elif roll < 0.81:
        name = rng.choice(FIELDS)
        label = f"bad-utf8 {name}"
        body = json.dumps(fields).replace(f'"{name}": "', f'"{name}": "\udcff', 1) \
            .encode("utf-8", "surrogateescape") if name in fields else b'{"\xff": 1}'
    elif roll < 0.85:
        extra = ", ".join(f'"x{i}": {i}' for i in range(rng.randrange(30, 70)))
        label, body = "too-many-keys", json.dumps(fields)[:-1].encode() + b", " + \
            extra.encode() + b"}"
    elif roll < 0.88:
        name = rng.choice(FIELDS)
        label = f"duplicate-key {name}"
        body = json.dumps(fields)[:-1].encode() + f', "{name}": "x\\u0000"}}'.encode()
    elif roll < 0.91:
        size = rng.choice([16385, 20000, 100000])
        label, body = f"too-big {size}", json.dumps({"ssid": "a" * size}).encode()
    elif roll < 0.93:
        digits = rng.choice([4301, 5000, 9000])
        label, body = f"long-number {digits}", b'{"brport": ' + b"9" * digits + b"}"
    else:
        headers["Content-Type"] = rng.choice(MEDIA)
        if not headers["Content-Type"]:
            del headers["Content-Type"]
        label, body = f"media-type {headers.get('Content-Type', 'none')!r}", \
            json.dumps(fields).encode()
    header_label, extra_headers = browser_headers(rng, port)
    headers.update(extra_headers)
    if rng.random() < 0.05:
        headers["X-Requested-By"] = "gatewayd-panel"
    return HttpInput("json", f"{label} {header_label}".strip(),
                     request("POST", "/api/v1/pair", headers, body))


# ---- raw bytes -----------------------------------------------------------------------------------

TARGETS = ["/pair", "/api/v1/pair", "/healthcheck", "/", "/setup", "/login",
           "/api/v1/progress", "/generate_204", "/static/portal.css"]


def raw_request(rng: random.Random, port: int) -> HttpInput:
    target = rng.choice(TARGETS)
    host = f"Host: 127.0.0.1:{port}\r\n"
    kind = rng.choice(["request-line", "request-line", "header", "header", "length",
                       "truncated", "huge-header", "many-headers", "pipelined", "garbage",
                       "chunked"])
    if kind == "request-line":
        line = rng.choice([
            b"GET\r\n", b"GET " + target.encode() + b"\r\n", b"GET / HTTP/9.9\r\n",
            b"FOO " + target.encode() + b" HTTP/1.1\r\n", b"GET  /  HTTP/1.1\r\n",
            b"GET /%00 HTTP/1.1\r\n", b"GET http://evil.example/pair HTTP/1.1\r\n",
            b"get / http/1.1\r\n", b"G" * 5000 + b" / HTTP/1.1\r\n",
            b"GET /pair?ssid=%ZZ HTTP/1.1\r\n", b"GET /\x00\x01 HTTP/1.1\r\n",
            b"GET /\xff\xfe HTTP/1.1\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n",
            b"GET / HTTP/1.1 extra\r\n", b"\r\n\r\n\r\nGET / HTTP/1.1\r\n",
            b"CONNECT 127.0.0.1:22 HTTP/1.1\r\n", b"GET ../../etc/passwd HTTP/1.1\r\n",
            b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n", b"OPTIONS * HTTP/1.1\r\n",
            b"GET / HTTP/1.0\r\n", b"GET /pair?" + b"&" * 4000 + b" HTTP/1.1\r\n"])
        return HttpInput("raw", f"request-line {line[:40]!r}",
                         line + host.encode() + b"Connection: close\r\n\r\n")
    start = f"GET {target} HTTP/1.1\r\n{host}Connection: close\r\n".encode()
    if kind == "header":
        bad = rng.choice([
            b"NoColonHere\r\n", b"Space Before : x\r\n", b"X-Nul: a\x00b\r\n",
            b"X-Fold: a\r\n  continued\r\n", b": empty-name\r\n", b"X-\xff: 1\r\n",
            b"Host: a\r\nHost: b\r\n", b"X-Bare: lf\nX-Other: 1\n", b"Expect: 100-continue\r\n",
            b"Content-Type: application/json\r\nContent-Type: text/plain\r\n",
            b"Cookie: gatewayd_session=" + b"A" * 3000 + b"\r\n",
            b"Cookie: gatewayd_session=not.a.session\r\n", b"Authorization: Basic !!!\r\n",
            b"Authorization: Basic " + b"QQ==" * 10 + b"\r\n", b"X-Forwarded-For: 1.2.3.4\r\n",
            b"Origin: http://[::1\r\n", b"Range: bytes=0-0,-1\r\n", b"Accept-Encoding: \xff\r\n"])
        return HttpInput("raw", f"header {bad[:40]!r}", start + bad + b"\r\n")
    if kind == "length":
        post = f"POST {rng.choice(['/api/v1/pair', '/setup', '/login'])} HTTP/1.1\r\n{host}" \
            "Connection: close\r\nContent-Type: application/json\r\n".encode()
        bad = rng.choice([
            b"Content-Length: -1\r\n\r\n{}", b"Content-Length: abc\r\n\r\n{}",
            b"Content-Length: 2\r\nContent-Length: 5\r\n\r\n{}",
            b"Content-Length: 99999999999999999999\r\n\r\n{}",
            b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"Transfer-Encoding: gzip\r\n\r\n{}", b"Content-Length: +2\r\n\r\n{}",
            b"Content-Length: 0x2\r\n\r\n{}", b"Content-Length: 2 2\r\n\r\n{}"])
        allowed = (501,) if b"gzip" in bad else ()
        return HttpInput("raw", f"length {bad[:40]!r}", post + bad, allowed)
    if kind == "truncated":
        body = rng.choice([b'{"ssid": "Ho', b"", b"{", b'{"a": ' + b"1" * 100])
        declared = len(body) + rng.choice([1, 10, 1000, 16000])
        data = (f"POST /api/v1/pair HTTP/1.1\r\n{host}Content-Type: application/json\r\n"
                f"Content-Length: {declared}\r\n\r\n").encode() + body
        if rng.random() < 0.3:
            data = data[:rng.randrange(5, len(data))]  # cut inside the head
        return HttpInput("raw", f"truncated {len(data)} bytes", data)
    if kind == "huge-header":
        size = rng.choice([16385, 20000, 65536, 300000])
        return HttpInput("raw", f"huge-header {size}",
                         start + b"X-Big: " + b"b" * size + b"\r\n\r\n")
    if kind == "many-headers":
        count = rng.choice([100, 500, 2000])
        headers = b"".join(b"X-H%d: %d\r\n" % (i, i) for i in range(count))
        return HttpInput("raw", f"many-headers {count}", start + headers + b"\r\n")
    if kind == "pipelined":
        ok = f"GET /healthcheck HTTP/1.1\r\n{host}\r\n".encode()
        bad = rng.choice([b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
                          b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"])
        return HttpInput("raw", f"pipelined {bad[:20]!r}", ok * rng.randrange(1, 4) + bad)
    if kind == "chunked":
        chunks = rng.choice([b"5\r\n{}\r\n0\r\n\r\n", b"zz\r\n{}\r\n0\r\n\r\n",
                             b"2\r\n{}\r\n", b"-1\r\n\r\n", b"1;ext=" + b"x" * 20000 + b"\r\n",
                             b"FFFFFFFFFFFFFFFF\r\n{}\r\n0\r\n\r\n"])
        data = (f"POST /api/v1/pair HTTP/1.1\r\n{host}Content-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode() + chunks
        return HttpInput("raw", f"chunked {chunks[:20]!r}", data)
    size = rng.choice([1, 16, 300, 4000])
    return HttpInput("raw", f"garbage {size} bytes", rng.randbytes(size))
