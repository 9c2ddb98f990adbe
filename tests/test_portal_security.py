"""Captive portal, rate limits, CSRF, security headers, admin login, no secret leaks."""

from __future__ import annotations

import base64
import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewayd.portal.captive import foreign_host
from gatewayd.portal.security import SESSION_LIFETIME, RateLimiter, Sessions
from tests.portal_helpers import VALID, Client, Portal, csrf_from, running_portal

SECRETS = ("supersecret", "t0k-secret-value")


@pytest.fixture
def portal(tmp_path: Path) -> Iterator[Portal]:
    with running_portal(tmp_path) as p:
        yield p


def paired(portal: Portal) -> None:
    assert portal.client().pair(VALID).status == 200
    portal.core(portal.fake.succeed)


def basic(password: str, user: str = "admin") -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


# ---- captive portal ---------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "host"), [
    ("/generate_204", "connectivitycheck.gstatic.com"),
    ("/gen_204", "clients3.google.com"),
    ("/hotspot-detect.html", "captive.apple.com"),
    ("/connecttest.txt", "www.msftconnecttest.com"),
    ("/ncsi.txt", "www.msftncsi.com"),
    ("/", "example.com"),
    ("/some/page?q=1", "www.example.org:80"),
    ("/generate_204", "127.0.0.1"),  # the probe path alone is enough
])
def test_captive_probes_and_foreign_hosts_lead_to_the_panel(portal: Portal, path: str,
                                                            host: str) -> None:
    reply = portal.client().get(path, {"Host": host})
    assert reply.status == 302
    assert reply.header("Location") == f"http://192.168.4.1:{portal.port}/"
    assert reply.header("Cache-Control") == "no-store"


def test_healthcheck_answers_and_pair_and_api_refuse_a_foreign_host(portal: Portal) -> None:
    client = portal.client()
    host = {"Host": "connectivitycheck.gstatic.com"}
    assert (client.get("/healthcheck", host).status, client.get("/healthcheck", host).body) == (
        200, "OK")
    pair = client.pair(VALID, host)
    assert pair.status == 421 and pair.header("Content-Type").startswith("text/plain")
    assert "another site" in pair.body and "IP address" in pair.body
    progress = client.get("/api/v1/progress", host)
    assert progress.status == 421 and progress.json["error"]["code"] == "foreign-host"
    assert portal.fake.begun == []


def test_names_the_vendor_adds_are_the_hubs_own(tmp_path: Path) -> None:
    """A router's DNS name for the hub ([portal] host_names) is served like .local."""
    with running_portal(tmp_path, hotspot={"enabled": False},
                        portal={"host_names": ["Hub.Fritz.Box."]}) as p:
        client = p.client()
        assert client.get("/api/v1/progress", {"Host": f"hub.fritz.box:{p.port}"}).status == 200
        assert client.get("/api/v1/progress", {"Host": "other.fritz.box"}).status == 421


def rebound(port: int) -> dict[str, str]:
    """What a browser sends once attacker.example resolves to the hub (DNS rebinding):
    the page and the hub are "same-origin" as far as the browser can tell."""
    return {"Host": f"attacker.example:{port}", "Origin": f"http://attacker.example:{port}",
            "Sec-Fetch-Site": "same-origin"}


def test_dns_rebinding_cannot_pair_or_read_the_hub(tmp_path: Path) -> None:
    # A hub on the LAN, not on its hotspot: no captive portal to redirect to.
    with running_portal(tmp_path, hotspot={"enabled": False}) as p:
        client, evil = p.client(), rebound(p.port)
        api = client.post_json("/api/v1/pair", {k: v for k, v in VALID.items()
                                                 if k not in ("ssid", "psk")}, evil)
        assert api.status == 421
        assert api.json["error"]["code"] == "foreign-host"
        assert "another site" in api.json["error"]["message"]
        pair = client.pair(VALID, evil)
        assert pair.status == 421 and "another site" in pair.body
        for path in ("/", "/login", "/api/v1/status", "/api/v1/networks"):
            assert client.get(path, evil).status == 421, path
        page = client.post_form("/setup", form_for("x"), evil)
        assert page.status == 421 and page.header("Content-Type").startswith("text/html")
        assert 'id="refused"' in page.body and "another site" in page.body
        assert "Set-Cookie" not in page.headers  # no session, no CSRF token for the page
        assert p.fake.begun == []
        # The hub's own names and addresses still work.
        for host in (f"127.0.0.1:{p.port}", f"[::1]:{p.port}", "localhost",
                     f"{socket.gethostname()}.local"):
            assert client.get("/api/v1/progress", {"Host": host}).status == 200, host
        assert client.get("/static/portal.css", evil).status == 200
        assert client.get("/healthcheck", evil).body == "OK"


def test_own_host_names_reach_the_panel(portal: Portal) -> None:
    for host in (f"127.0.0.1:{portal.port}", "localhost", "192.168.4.1", "[::1]:80"):
        reply = portal.client().get("/", {"Host": host})
        assert reply.status == 200, host
        assert 'id="pair-form"' in reply.body


def test_no_captive_redirects_once_paired(portal: Portal) -> None:
    paired(portal)
    client = portal.client()
    probe = client.get("/generate_204", {"Host": "connectivitycheck.gstatic.com"})
    assert probe.status == 204
    assert client.get("/ncsi.txt").body == "Microsoft NCSI"
    foreign = client.get("/", {"Host": "example.com"})
    assert "192.168.4.1" not in foreign.header("Location")


def test_a_paired_offline_hubs_hotspot_leads_phones_to_the_sign_in(portal: Portal) -> None:
    """Paired, offline, its hotspot back and pairing closed: a phone that joins the hotspot
    is led to the panel, which asks for the sign-in (docs/portal.md, "Captive portal").
    Answering "no portal here" would tell the phone the hotspot reaches the Internet."""
    paired(portal)
    portal.fake.state, portal.fake.pairing_open, portal.fake.hotspot = "offline", False, True
    client = portal.client()
    probe = client.get("/generate_204", {"Host": "connectivitycheck.gstatic.com"})
    assert probe.status == 302
    assert probe.header("Location") == f"http://192.168.4.1:{portal.port}/"
    panel = client.get("/", {"Host": "192.168.4.1"})
    assert (panel.status, panel.header("Location")) == (302, "/login")
    page = client.get("/login", {"Host": "192.168.4.1"})
    assert page.status == 200 and 'id="password"' in page.body
    assert 'name="network"' not in page.body  # no pairing form without the sign-in


def test_captive_portal_follows_the_hotspot_onboarding_reports(portal: Portal) -> None:
    portal.fake.hotspot = False  # e.g. NetworkManager could not start it yet
    assert portal.client().get("/generate_204").status == 204
    portal.fake.hotspot = True
    assert portal.client().get("/generate_204").status == 302


def test_people_at_the_portal_count_as_activity(portal: Portal) -> None:
    before = portal.fake.activity
    portal.client().get("/")
    portal.client().get("/api/v1/progress")
    assert portal.fake.activity > before


def test_ethernet_hub_has_no_captive_portal(tmp_path: Path) -> None:
    with running_portal(tmp_path, hotspot={"enabled": False}) as p:
        assert p.client().get("/generate_204").status == 204
        # Not redirected; and refused, since a foreign name may be a rebinding web page.
        assert p.client().get("/", {"Host": "example.com"}).status == 421


def test_foreign_host_rules() -> None:
    names = frozenset({"localhost", "hub", "hub.local"})
    assert not foreign_host("10.0.0.7:8080", names)
    assert not foreign_host("[fe80::1]", names)
    assert not foreign_host("HUB.local.", names)
    assert not foreign_host("hub:8080", names)
    assert foreign_host("captive.apple.com", names)
    assert foreign_host("hub.local.evil.com", names)
    # Empty, missing or unparseable: never taken for the hub's own (werkzeug gives "").
    for host in ("", "  ", "x_y.attacker.example", "hub.local:", "hub.local:http",
                 "hub:80:80", "[hub.local]", "[::1", "[::1]x", "hub, attacker.example"):
        assert foreign_host(host, names), host


def test_a_host_name_werkzeug_cannot_parse_is_refused(tmp_path: Path) -> None:
    """Before: a rebinding page on x_y.attacker.example (browsers resolve names with "_")
    read the networks and paired an unpaired hub: werkzeug's request.host is "" for such
    a name, and an empty host was taken for the hub's own."""
    with running_portal(tmp_path, hotspot={"enabled": False}) as p:
        client = p.client()
        for name in ("x_y.attacker.example", "", "attacker.example:80:80"):
            evil = {"Host": f"{name}", "Sec-Fetch-Site": "same-origin"}
            networks = client.get("/api/v1/networks", evil)
            assert networks.status == 421, name
            assert networks.json["error"]["code"] == "foreign-host"
            pair = client.pair(VALID, evil)
            assert pair.status == 421 and "another site" in pair.body, name
            assert client.get("/", evil).status == 421, name
        # No Host at all (HTTP/1.0): no browser sends that; refused like a foreign one.
        with socket.create_connection(("127.0.0.1", p.port), timeout=10) as sock:
            sock.sendall(b"GET /api/v1/progress HTTP/1.0\r\n\r\n")
            assert sock.makefile("rb").readline().split()[1] == b"421"
        assert p.fake.begun == []
        assert client.get("/api/v1/progress", {"Host": f"localhost:{p.port}"}).status == 200


# ---- rate limits ------------------------------------------------------------------------------

def test_pair_is_rate_limited_per_client(tmp_path: Path) -> None:
    with running_portal(tmp_path, portal={"pair_rate_per_minute": 3}) as p:
        client = p.client()
        for _ in range(3):
            assert client.pair({**VALID, "psk": "short"}).status == 400
        limited = client.pair(VALID)
        assert limited.status == 429 and "try again" in limited.body
        assert int(limited.header("Retry-After")) >= 1
        api = client.post_json("/api/v1/pair", VALID)  # the same budget
        assert api.status == 429 and api.json["error"]["code"] == "rate-limited"
        assert p.fake.begun == []
        assert client.get("/healthcheck").status == 200  # only pairing is limited


def test_rate_limiter_refills_and_keeps_bounded_memory() -> None:
    now = [0.0]
    limiter = RateLimiter(6, max_clients=100, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(7)] == [0] * 6 + [10]
    now[0] += 10
    assert limiter.allow("a") == 0 and limiter.allow("a") == 10
    for i in range(10_000):
        limiter.allow(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(limiter) == 100
    assert limiter.allow("a") == 0  # forgotten: a flood cannot pin memory, only reset budgets


def test_admin_login_is_rate_limited(portal: Portal, caplog: pytest.LogCaptureFixture) -> None:
    paired(portal)
    client = portal.client()
    token = csrf_from(client.get("/login").body)
    statuses = [client.post_form("/login", {"csrf_token": token,
                                            "password": f"guess-{i:04d}"}).status
                for i in range(8)]
    assert statuses == [401] * 5 + [429] * 3
    right = client.post_form("/login", {"csrf_token": token, "password": portal.setup_code})
    assert right.status == 429  # even the right password waits
    assert right.header("Content-Type").startswith("text/html")
    wait = int(right.header("Retry-After"))
    assert 1 <= wait <= 60 and f"try again in {wait} seconds" in right.body
    assert client.get("/api/v1/status", basic(portal.setup_code)).status == 429
    # Before: no trace in the journal. Now one WARNING as the lockout starts (not one per
    # refused attempt), with the count and the address, never a password tried.
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(said) == 1 and re.fullmatch(
        "admin sign-in: 5 wrong passwords in a row from 127.0.0.1; its sign-ins now wait "
        "[0-9]+ s", said[0]), said
    assert "guess-" not in caplog.text and portal.setup_code not in caplog.text


# ---- CSRF and cross-site requests ---------------------------------------------------------------

def form_for(token: str | None, **extra: str) -> dict[str, str]:
    fields = {"network": "HomeNet", "psk": "supersecret", "wsp": "user@example.com",
              "token": "t0k-secret-value", "host": "127.0.0.1", "brport": "1883", **extra}
    if token is not None:
        fields["csrf_token"] = token
    return fields


def test_the_form_needs_its_csrf_token(portal: Portal) -> None:
    client = portal.client()
    token = csrf_from(client.get("/").body)
    missing = client.post_form("/setup", form_for(None))
    assert missing.status == 403 and "expired" in missing.body
    wrong = client.post_form("/setup", form_for("forged"))
    assert wrong.status == 403
    stranger = portal.client()  # a cross-site post carries no session cookie
    assert stranger.post_form("/setup", form_for(token)).status == 403
    foreign = client.post_form("/setup", form_for(token), {"Origin": "http://evil.example"})
    assert foreign.status == 403
    assert portal.fake.begun == []
    for secret in SECRETS:  # a refused form is shown again without its secrets
        assert secret not in missing.body

    accepted = client.post_form("/setup", form_for(token))
    assert accepted.status == 303 and accepted.header("Location") == "/setup"
    [request] = portal.fake.begun
    assert request.source == "panel" and request.wifi is not None
    assert request.wifi.ssid == "HomeNet"
    progress_page = client.get("/setup")
    assert "Joining the Wi-Fi network" in progress_page.body
    assert 'http-equiv="refresh"' in progress_page.body


def test_the_form_without_javascript_is_rate_limited_with_retry_after(tmp_path: Path) -> None:
    with running_portal(tmp_path, portal={"pair_rate_per_minute": 2}) as p:
        client = p.client()
        token = csrf_from(client.get("/").body)
        bad = form_for(token, psk="short")
        assert [client.post_form("/setup", bad).status for _ in range(2)] == [400, 400]
        limited = client.post_form("/setup", form_for(token))
        assert limited.status == 429 and limited.header("Content-Type").startswith("text/html")
        wait = int(limited.header("Retry-After"))
        assert 1 <= wait <= 60 and f"try again in {wait} seconds" in limited.body
        assert p.fake.begun == []


def test_a_paired_hub_shows_no_form_to_a_post_without_sign_in(portal: Portal) -> None:
    paired(portal)
    stranger = portal.client()
    for fields in (form_for(None), form_for("forged")):
        reply = stranger.post_form("/setup", fields)
        assert reply.status == 303 and reply.header("Location") == "/"
        assert "HomeNet" not in reply.body and "Flat 3B" not in reply.body  # no scanned list
        assert 'id="pair-form"' not in reply.body
    assert stranger.get("/").header("Location") == "/login"
    assert len(portal.fake.begun) == 1  # only the pairing itself


def test_the_form_without_javascript_reports_the_bad_field(portal: Portal) -> None:
    client = portal.client()
    token = csrf_from(client.get("/").body)
    reply = client.post_form("/setup", form_for(token, network="", hidden_ssid="s" * 33))
    assert reply.status == 400
    assert "ssid: must be 1-32 bytes" in reply.body
    assert 'value="' + "s" * 33 + '"' in reply.body  # kept for correction
    no_network = form_for(token)
    del no_network["network"]
    assert "choose a Wi-Fi network" in client.post_form("/setup", no_network).body
    assert portal.fake.begun == []


def test_cross_site_browser_requests_cannot_pair(portal: Portal) -> None:
    client = portal.client()
    cross = client.pair(VALID, {"Sec-Fetch-Site": "cross-site"})
    assert cross.status == 403 and "other web sites" in cross.body
    api = client.post_json("/api/v1/pair", VALID, {"Origin": "http://evil.example"})
    assert api.status == 403 and api.json["error"]["code"] == "cross-site"
    sandboxed = client.post_json("/api/v1/pair", VALID, {"Origin": "null"})
    assert sandboxed.status == 403
    assert portal.fake.begun == []
    same = client.post_json("/api/v1/pair", VALID,
                            {"Origin": f"http://127.0.0.1:{portal.port}",
                             "Sec-Fetch-Site": "same-origin"})
    assert same.status == 200


# ---- headers ------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/pair", "/healthcheck", "/api/v1/status",
                                  "/api/v1/openapi.json", "/no-such-page"])
def test_security_headers_everywhere(portal: Portal, path: str) -> None:
    reply = portal.client().get(path)
    assert reply.header("X-Content-Type-Options") == "nosniff"
    assert reply.header("X-Frame-Options") == "DENY"
    assert reply.header("Referrer-Policy") == "same-origin"
    csp = reply.header("Content-Security-Policy")
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert reply.header("Cache-Control") == "no-store"
    assert reply.header("Server") == "gatewayd"


def test_session_cookie_is_http_only_and_same_site(portal: Portal) -> None:
    reply = portal.client().get("/")
    cookie = reply.header("Set-Cookie")
    assert cookie.startswith("gatewayd_session=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_errors_are_plain_and_json_under_api(portal: Portal) -> None:
    client = portal.client()
    page = client.get("/nope")
    assert page.status == 404 and page.header("Content-Type").startswith("text/plain")
    api = client.get("/api/v1/nope")
    assert api.status == 404 and api.json["error"]["code"] == "not-found"
    assert client.request("DELETE", "/api/v1/pair").status == 405


def test_what_the_web_framework_refuses_is_said_in_the_hubs_words(portal: Portal) -> None:
    """Before: werkzeug's text, "Not Found: The requested URL was not found on the server.
    If you entered the URL manually please check your spelling and try again." and
    "Method Not Allowed: The method is not allowed for the requested URL."."""
    client = portal.client()
    page = client.get("/nosuch")
    assert (page.status, page.body) == (404, "This hub has nothing at this address.")
    page = client.get("/logout")  # a form's address, opened in the browser
    assert (page.status, page.body) == (
        405, "This address does not take GET requests (only POST).")
    api = client.get("/api/v1/nope")
    assert (api.status, api.json) == (404, {"error": {
        "code": "not-found", "message": "This hub has nothing at this address."}})
    api = client.request("DELETE", "/api/v1/pair")
    assert (api.status, api.json) == (405, {"error": {
        "code": "method-not-allowed",
        "message": "This address does not take DELETE requests (only POST)."}})


# ---- admin panel after pairing ------------------------------------------------------------------

def test_after_pairing_the_panel_and_api_need_the_admin_password(portal: Portal) -> None:
    paired(portal)
    client = portal.client()
    index = client.get("/")
    assert index.status == 302 and index.header("Location") == "/login"
    status = client.get("/api/v1/status")
    assert status.status == 401 and "Basic" in status.header("WWW-Authenticate")
    assert client.get("/api/v1/networks").status == 401
    assert client.get("/api/v1/progress").status == 200  # public: no secret in it
    assert client.get("/api/v1/status", basic(portal.setup_code, "root")).status == 401

    authed = client.get("/api/v1/status", basic(portal.setup_code))
    assert authed.status == 200 and authed.json["paired"] is True

    token = csrf_from(client.get("/login").body)
    code = portal.setup_code
    login = client.post_form("/login", {"csrf_token": token,
                                        "password": f"{code[:4]}-{code[4:]}"})
    assert login.status == 303
    dashboard = client.get("/")
    assert dashboard.status == 200 and "dc-a6-32-01-02-03" in dashboard.body
    assert client.get("/api/v1/status").status == 200  # the session works for the API too

    logout_token = csrf_from(dashboard.body)
    assert client.post_form("/logout", {"csrf_token": logout_token}).status == 303
    assert client.get("/").status == 302


def test_the_panel_stays_open_while_the_first_attempt_runs(portal: Portal) -> None:
    client = portal.client()
    assert client.pair(VALID).status == 200  # pairing is now closed, the hub not yet paired
    page = client.get("/")
    assert page.status == 200 and 'data-state="connecting"' in page.body
    assert client.get("/api/v1/status").status == 200
    assert client.get("/login").status == 302


def test_a_paired_hub_back_on_its_hotspot_is_paired_again_by_its_owner_only(
        portal: Portal) -> None:
    """Before: a paired hub back on its (open) hotspot took /pair from anyone in range, and
    its panel needed no sign-in. Now: a signed-in admin, or the window a short press opens."""
    paired(portal)
    portal.fake.state, portal.fake.repairable = "offline", True  # offline on its hotspot
    stranger = portal.client()
    assert stranger.get("/").status == 302 and stranger.get("/api/v1/status").status == 401
    refused = stranger.pair(VALID)
    assert refused.status == 403 and "'gatewayctl button short'" in refused.body
    refused = stranger.post_json("/api/v1/pair", VALID)
    assert refused.status == 403 and refused.json["error"]["code"] == "not-in-pairing-mode"
    assert "within 10 minutes" in refused.json["error"]["message"]
    assert portal.fake.begun == [portal.fake.begun[0]], "only the first pairing began"

    admin = portal.client()
    token = csrf_from(admin.get("/login").body)
    assert admin.post_form("/login", {"csrf_token": token,
                                      "password": portal.setup_code}).status == 303
    form = admin.get("/")  # the pairing form, not the dashboard: the admin re-pairs here
    assert form.status == 200 and 'name="network"' in form.body
    reply = admin.post_json("/api/v1/pair", VALID, {"X-Requested-By": "gatewayd-panel"})
    assert reply.status == 200 and portal.fake.begun[-1].admin
    portal.core(lambda: portal.fake.fail("wrong-password"))
    portal.fake.state, portal.fake.pairing_open = "offline", False
    reply = admin.post_form("/setup", {**VALID, "network": "HomeNet",
                                       "csrf_token": csrf_from(form.body)})
    assert reply.status == 303 and portal.fake.begun[-1].admin

    portal.core(lambda: portal.fake.fail("wrong-password"))
    portal.fake.state = "offline"
    portal.fake.pairing_open = True  # a short press: the window is open, to anyone near
    assert stranger.get("/").status == 200
    assert stranger.pair(VALID).status == 200 and not portal.fake.begun[-1].admin


def test_a_configured_admin_password_replaces_the_setup_code(tmp_path: Path) -> None:
    with running_portal(tmp_path, portal={"admin_password": "correct horse"}) as p:
        paired(p)
        client = p.client()
        assert client.get("/api/v1/status", basic(p.setup_code)).status == 401
        assert client.get("/api/v1/status", basic("correct horse")).status == 200
        assert "setup code" not in client.get("/login").body


def test_no_secret_in_any_response_or_log_line(portal: Portal,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = portal.client()
    assert client.pair({**VALID, "psk": "short"}).status == 400
    accepted = client.post_json("/api/v1/pair", VALID)
    portal.core(portal.fake.succeed)
    answers = [accepted.body, client.get("/api/v1/progress").body]
    client.get("/login")
    token = csrf_from(client.get("/login").body)
    client.post_form("/login", {"csrf_token": token, "password": portal.setup_code})
    answers += [client.get("/").body, client.get("/api/v1/status").body]
    assert "dc-a6-32-01-02-03" in answers[-1]
    for text in [*answers, caplog.text]:
        for secret in (*SECRETS, portal.setup_code):
            assert secret not in text


# ---- sessions end on the hub, not only in the browser -------------------------------------------

def signed_in(portal: Portal) -> Client:
    client = portal.client()
    token = csrf_from(client.get("/login").body)
    login = client.post_form("/login", {"csrf_token": token, "password": portal.setup_code})
    assert login.status == 303
    assert client.get("/api/v1/status").status == 200
    return client


def test_a_copy_of_the_cookie_is_worthless_after_logging_out(portal: Portal) -> None:
    paired(portal)
    client = signed_in(portal)
    thief = portal.client()
    thief.cookies = dict(client.cookies)  # e.g. copied off a shared computer
    assert thief.get("/api/v1/status").status == 200

    dashboard = client.get("/")
    assert client.post_form("/logout", {"csrf_token": csrf_from(dashboard.body)}).status == 303
    replay = thief.get("/api/v1/status")
    assert replay.status == 401 and replay.json["error"]["code"] == "unauthorized"
    page = thief.get("/")
    assert page.status == 302 and page.header("Location") == "/login"
    assert signed_in(portal).get("/").status == 200  # signing in again works


def test_a_reset_or_a_new_pairing_ends_every_session(portal: Portal) -> None:
    paired(portal)
    before_reset = signed_in(portal)
    portal.core(portal.fake.reset)
    paired(portal)
    assert before_reset.get("/api/v1/status").status == 401
    assert before_reset.get("/").status == 302

    before_repairing = signed_in(portal)
    portal.fake.pairing_open = True  # offline long enough: the hotspot is back for re-pairing
    paired(portal)
    assert before_repairing.get("/api/v1/status").status == 401
    assert signed_in(portal).get("/api/v1/status").json["paired"] is True


def test_the_hub_remembers_a_bounded_number_of_sessions() -> None:
    sessions = Sessions(limit=3)
    ids = [sessions.start(1000.0 + i, 5.0) for i in range(4)]
    assert len(sessions) == 3
    assert not sessions.alive(ids[0], 1010.0, 5.0)  # the oldest sign-in was ended
    assert all(sessions.alive(sid, 1010.0, 5.0) for sid in ids[1:])
    assert not sessions.alive(ids[1], 1010.0, 6.0)  # signed in to an earlier pairing
    assert not sessions.alive(ids[1], 1001.0 + SESSION_LIFETIME, 5.0)  # expired
    sessions.start(1003.0 + SESSION_LIFETIME, 5.0)  # expired ones are dropped
    assert len(sessions) == 1
