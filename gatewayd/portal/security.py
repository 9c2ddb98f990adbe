"""Abuse resistance for the portal: rate limits, CSRF, security headers, admin login."""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import Flask, Request, Response, session
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from itsdangerous import BadSignature

from gatewayd.portal.core import PortalCore
from gatewayd.portal.refusals import SECURITY_HEADERS
from gatewayd.portal.signins import SignIns

LOGIN_RATE_PER_MINUTE = 5
SESSION_LIFETIME = 12 * 3600.0
MAX_TRACKED_CLIENTS = 1024
MAX_SESSIONS = 32  # signed-in panels at once; a new sign-in beyond ends the oldest


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Token buckets per client address, in bounded memory.

    At most ``max_clients`` buckets are kept; the least recently seen client is
    forgotten first, so a flood of spoofed addresses costs memory only up to the cap
    (a forgotten client simply starts with a full bucket again).
    """

    def __init__(self, per_minute: int, *, burst: int | None = None,
                 max_clients: int = MAX_TRACKED_CLIENTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(burst if burst is not None else per_minute)
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def _bucket(self, key: str) -> _Bucket:
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(self.capacity, now)
            self._buckets[key] = bucket
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        else:
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            self._buckets.move_to_end(key)
        return bucket

    def retry_after(self, key: str) -> int:
        """Seconds until ``key`` may try again; 0 when it may now. Consumes nothing."""
        with self._lock:
            bucket = self._bucket(key)
            if bucket.tokens >= 1.0:
                return 0
            return max(1, math.ceil((1.0 - bucket.tokens) / self.rate))

    def refund(self, key: str) -> None:
        """Gives back a token :meth:`allow` took (an attempt that turned out to cost nothing)."""
        with self._lock:
            bucket = self._bucket(key)
            bucket.tokens = min(self.capacity, bucket.tokens + 1.0)

    def allow(self, key: str) -> int:
        """Consume one token; returns 0 if allowed, else the seconds to wait."""
        with self._lock:
            bucket = self._bucket(key)
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0
            return max(1, math.ceil((1.0 - bucket.tokens) / self.rate))


def client_key(request: Request) -> str:
    # waitress runs with clear_untrusted_proxy_headers: remote_addr is the real peer.
    return request.remote_addr or "unknown"


def in_network(address: str | None, network: ipaddress.IPv4Network) -> bool:
    """Whether a client's address (``request.remote_addr``) is in ``network``. An
    IPv4-mapped IPv6 address (``::ffff:192.168.4.7``: a dual-stack socket's) is its IPv4
    one; anything else IPv6, and an address that is not one, is not in it."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return isinstance(ip, ipaddress.IPv4Address) and ip in network


# ---- CSRF ---------------------------------------------------------------------------------

def csrf_token() -> str:
    """The session's form token (created on first use); templates embed it."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


class MalformedOrigin(ValueError):
    """An Origin header no browser would send (the message is for the client)."""


def same_origin(request: Request, *, allow_null: bool = False) -> bool:
    """False when a browser says the request comes from another site.

    Browsers send Origin on POSTs and Sec-Fetch-Site on everything; apps send neither,
    so a missing header is not a reason to refuse. ``Origin: null`` (sandboxed frames,
    some privacy settings) is refused unless a CSRF token already vouches for the form.
    """
    if request.headers.get("Sec-Fetch-Site", "") == "cross-site":
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    if origin == "null":
        return allow_null
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:  # "http://[::1": not an origin a browser sends
        raise MalformedOrigin("the Origin header is not a valid origin") from None
    return netloc.lower() == request.host.lower()


def csrf_ok(request: Request) -> bool:
    expected = session.get("csrf")
    given = request.form.get("csrf_token", "")
    if not isinstance(expected, str) or not given:
        return False
    try:
        return hmac.compare_digest(expected.encode(), given.encode()) and same_origin(
            request, allow_null=True)
    except MalformedOrigin:
        return False


# ---- security headers ---------------------------------------------------------------------

def add_security_headers(response: Response) -> Response:
    """Every answer's (the web server's own refusals carry them too: refusals.py)."""
    for name, value in SECURITY_HEADERS:
        response.headers.setdefault(name, value)
    return response


# ---- admin authentication -----------------------------------------------------------------

class LoginBudget:
    """Sign-in attempts from all addresses together: ``free`` failures, then backoff.

    The per-address limiter forgets addresses (it is bounded), so an attacker with many
    addresses would be limited by nothing else. After ``free`` failures each further attempt
    waits twice as long after the last failure (1 s, 2 s, 4 s... up to ``max_wait``). An
    attempt is taken (:meth:`take`) before its password is checked, so parallel requests
    cannot all pass the same look at the count; a right password gives it back
    (:meth:`refund`). One failure is forgiven every ``max_wait`` seconds; the count never
    starts over at once (it did after an hour without failures: "burst, stay quiet an hour,
    burst again" got 414 guesses a day).

    So the count never passes ``free + ceil(log2(max_wait))`` (20: once the wait is
    ``max_wait``, one is forgiven for each one taken), and as each attempt adds one and
    each forgiveness takes one, in any ``T`` seconds at most 20 + ``T / max_wait`` + 1 are
    tried: 165 a day for the defaults, and the 10^8 setup codes take on average
    10^8 / 2 / 165 days, more than 800 years (docs/portal.md). The cost: while someone
    guesses, the owner waits too (at most ``max_wait``); the button and ``gatewayctl`` on
    the hub are never limited.
    """

    def __init__(self, *, free: int = 10, max_wait: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.free = free
        self.max_wait = max_wait
        self.clock = clock
        self.failures = 0  # taken and not refunded nor forgiven
        self._last = -math.inf  # the last attempt taken
        self._forgiven = 0.0  # the last forgiveness, or when the count began
        self._said = False  # the waits' start was told (:meth:`take`) in this run
        self._lock = threading.Lock()

    def _forgive(self, now: float) -> None:
        if self.failures > 0:
            steps = max(0, int((now - self._forgiven) // self.max_wait))
            self.failures = max(0, self.failures - steps)
            self._forgiven += steps * self.max_wait
        if self.failures == 0:
            self._forgiven = now
            self._said = False

    def _wait(self, now: float) -> float:
        self._forgive(now)
        if self.failures < self.free:
            return 0.0
        # The exponent is capped: 2.0 ** 1024 overflows, and 2 ** 30 s is past any max_wait.
        delay = min(self.max_wait, 2.0 ** min(self.failures - self.free, 30))
        return max(0.0, self._last + delay - now)

    def retry_after(self) -> int:
        """Seconds until anyone may try again; 0 when a sign-in may be tried now."""
        with self._lock:
            wait = self._wait(self.clock())
            return max(1, math.ceil(wait)) if wait > 0 else 0

    def take(self) -> tuple[int, bool]:
        """Takes an attempt, counted as a failure unless refunded: ``(0, starts)``, where
        ``starts`` says it is the one that starts the waits (once per run of failures, a
        run ending when all are forgiven); or ``(seconds to wait, False)``, nothing taken."""
        with self._lock:
            now = self.clock()
            wait = self._wait(now)
            if wait > 0:
                return max(1, math.ceil(wait)), False
            self.failures += 1
            self._last = now
            starts = self.failures >= self.free and not self._said
            self._said = self._said or starts
            return 0, starts

    def refund(self) -> None:
        """The attempt taken was a right password: it costs nothing."""
        with self._lock:
            self.failures = max(0, self.failures - 1)


@dataclass(frozen=True)
class _Live:
    since: float
    paired_at: float | None  # the pairing it was signed in to (a re-pairing ends it)


class Sessions:
    """The sign-ins the hub itself remembers, by random id, in bounded memory.

    Flask's session is a signed cookie: a copy of it would stay good for its whole
    lifetime whatever the hub does. A session therefore counts only while its id is here;
    signing out, a factory reset or a re-pairing removes it. At most ``limit`` are kept:
    past that the oldest sign-in is ended first (its panel asks for the password again).
    """

    def __init__(self, limit: int = MAX_SESSIONS) -> None:
        self.limit = limit
        self._live: OrderedDict[str, _Live] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._live)

    def start(self, now: float, paired_at: float | None) -> str:
        sid = secrets.token_urlsafe(24)
        with self._lock:
            for old in [k for k, v in self._live.items() if now - v.since >= SESSION_LIFETIME]:
                del self._live[old]
            self._live[sid] = _Live(now, paired_at)
            while len(self._live) > self.limit:
                self._live.popitem(last=False)
        return sid

    def alive(self, sid: object, now: float, paired_at: float | None) -> bool:
        with self._lock:
            live = self._live.get(sid) if isinstance(sid, str) else None
            return live is not None and live.paired_at == paired_at \
                and 0 <= now - live.since < SESSION_LIFETIME

    def end(self, sid: object) -> None:
        with self._lock:
            if isinstance(sid, str):
                self._live.pop(sid, None)

    def end_all(self) -> None:
        with self._lock:
            self._live.clear()


def session_clock() -> float:
    """What sign-ins age by: the monotonic clock. A Pi without a real-time clock steps its
    wall clock when NTP first answers (by hours, either way), which must not sign its admin
    out; a sign-in does not outlive the process anyway (the cookie's key is made at each
    start, :func:`configure_session`). Read at each call."""
    return time.monotonic()


class AdminAuth:
    """The LAN admin password (configured, or the setup code): session or HTTP Basic.

    Every check goes through :meth:`_check`: it takes an attempt from the per-address
    limiter and the global :class:`LoginBudget`, then checks the password (a right one gives
    both back); ``sign_ins`` counts them and says lockouts
    (:mod:`~gatewayd.portal.signins`). A panel session is good while :class:`Sessions`
    holds it; a factory reset ends them all.
    """

    def __init__(self, core: PortalCore, limiter: RateLimiter,
                 budget: LoginBudget | None = None,
                 clock: Callable[[], float] = session_clock,
                 sign_ins: SignIns | None = None) -> None:
        self.core = core
        self.limiter = limiter
        self.budget = budget or LoginBudget()
        self.sign_ins = sign_ins or SignIns()
        self.clock = clock
        self.sessions = Sessions()
        core.hub.on_reset(self._reset)

    async def _reset(self, full: bool) -> None:
        self.sessions.end_all()

    def _paired_at(self) -> float | None:
        """When the hub was paired (None: it is not): a session is for that pairing only."""
        async def _read() -> float | None:
            return self.core.hub.state.paired_at
        return self.core.call(_read)

    def _check(self, request: Request, password: str) -> int | bool:
        """True when right, False when wrong, or the seconds to wait before trying."""
        key = client_key(request)
        # Both limits are taken before the password is checked (and given back for a right
        # one): checked first and counted after, parallel requests all got through.
        wait = self.limiter.allow(key)
        started = False
        if wait:
            wait = max(wait, self.budget.retry_after())
        else:
            wait, started = self.budget.take()
            if wait:
                self.limiter.refund(key)
        if wait:
            self.sign_ins.refusal()
            return wait
        try:
            right = bool(password) and self.core.check_admin_password(password)
        except BaseException:  # not checked (the hub not ready): it costs nothing
            self.budget.refund()
            self.limiter.refund(key)
            raise
        if right:
            self.budget.refund()
            self.limiter.refund(key)
            self.sign_ins.success(key)
            return True
        self.sign_ins.failure(key, address_wait=self.limiter.retry_after(key),
                              budget_failures=self.budget.free if started else 0,
                              budget_wait=self.budget.retry_after() if started else 0)
        return False

    def session_valid(self) -> bool:
        sid = session.get("admin")
        return isinstance(sid, str) and self.sessions.alive(sid, self.clock(), self._paired_at())

    def login(self, request: Request, password: str) -> int | bool:
        """True on success, False on a wrong password, or seconds to wait when rate-limited."""
        result = self._check(request, password)
        if result is True:
            session.clear()
            session["admin"] = self.sessions.start(self.clock(), self._paired_at())
        return result

    def logout(self) -> None:
        """Ends the session on the hub too: a kept copy of the cookie is worth nothing."""
        self.sessions.end(session.get("admin"))
        session.clear()

    def basic_auth(self, request: Request) -> int | bool:
        """Checks an ``Authorization: Basic`` header (user ``admin``) for API clients."""
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic" or not value:
            return False
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user, password = "", ""
        return self._check(request, password if user == "admin" else "")


class _ClockFreeCookies(SecureCookieSessionInterface):
    """Flask's signed session cookie without its wall-clock age check. The signature carries
    the wall time the cookie was made at, and a clock stepped back (NTP, above) made every
    cookie "from the future", so void: the admin signed out, every open form "expired". How
    long a sign-in lasts is :class:`Sessions`' business, on the monotonic clock; the key is
    new at each start, so no cookie outlives the process either way."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        serializer = self.get_signing_serializer(app)
        if serializer is None:
            return None
        value = request.cookies.get(self.get_cookie_name(app))
        if not value:
            return self.session_class()
        try:
            return self.session_class(serializer.loads(value))
        except BadSignature:
            return self.session_class()


def configure_session(app: Flask) -> None:
    # A fresh key per start: a restart logs everyone out, and no key sits on disk.
    app.secret_key = secrets.token_bytes(32)
    app.session_interface = _ClockFreeCookies()
    app.config.update(SESSION_COOKIE_NAME="gatewayd_session", SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Strict")
