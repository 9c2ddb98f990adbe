"""The admin panel as its admin sees it, on a real portal: what the dashboard and the
refusals say, what the panel's pairing form takes, how it keeps itself current."""

from __future__ import annotations

import contextlib
import html
import re
import signal
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gatewayd.config import Config
from gatewayd.credentials import CloudCredentials, WifiCredentials
from gatewayd.hub import Hub
from gatewayd.identity import Identity
from gatewayd.onboarding.machine import Onboarding
from gatewayd.onboarding.pairing import PairingService
from gatewayd.onboarding.table import State
from gatewayd.portal.app import create_portal_app
from gatewayd.runtime.logsetup import Redactor
from gatewayd.runtime.sdnotify import Notifier
from gatewayd.runtime.webserver import WebServer
from gatewayd.state import StateStore
from tests.fakes import FakeWifi, StubCloud
from tests.helpers import ctl_json, wait_for
from tests.portal_helpers import (
    VALID,
    Client,
    LoopThread,
    csrf_from,
    fast_stopping,
    make_config,
    running_portal,
)
from tests.test_e2e_simulator import Sim, http_get

pytestmark = pytest.mark.timeout(60)

IDENTITY = Identity("dc-a6-32-12-34-56", "dc:a6:32:12:34:56", "Acme Hub")
CODE = "60032738"


def text_of(page: str) -> str:
    """What a person reads: the page's text without tags, entities decoded."""
    body = page.split("<main>", 1)[-1]
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def sign_in(client: Client, password: str = CODE) -> None:
    token = csrf_from(client.get("/login").body)
    reply = client.post_form("/login", {"csrf_token": token, "password": password})
    assert reply.status == 303, reply.body


@dataclass
class PairedHub:
    """A paired, online hub: the real onboarding state machine (on a fake Wi-Fi control and
    cloud step) behind the real portal."""

    config: Config
    store: StateStore
    onboarding: Onboarding
    port: int
    hub: Hub
    pairing: PairingService
    core: LoopThread

    def client(self) -> Client:
        return Client(self.port)


@contextlib.contextmanager
def paired_hub(tmp_path: Path, *, code: str = CODE,
               **sections: Mapping[str, Any]) -> Iterator[PairedHub]:
    config = make_config(tmp_path, hotspot={"offline_grace": 3600.0}, **sections)
    store = StateStore(config.state_dir, code)
    store.open(device_id=IDENTITY.device_id, mac=IDENTITY.mac)
    store.commit_pairing(WifiCredentials("HomeNet", "supersecret"),
                         CloudCredentials("user@example.com", "t0k", "127.0.0.1", 1883))
    core = LoopThread()
    hub = Hub(config, store, IDENTITY, Notifier(), Redactor())
    onboarding = Onboarding(config, store, FakeWifi({"HomeNet": "supersecret"}), StubCloud())
    pairing = PairingService(onboarding, config.cloud)

    async def boot() -> None:
        await onboarding.start()
        await onboarding.wait_for(lambda: onboarding.state == State.ONLINE
                                  and not onboarding.busy, 10)
    core.call(boot)
    server = fast_stopping(WebServer(
        create_portal_app(hub, core.call, pairing=pairing, onboarding=onboarding),
        name="portal", host="127.0.0.1", port=0))
    try:
        yield PairedHub(config, store, onboarding, server.port, hub, pairing, core)
    finally:
        server.stop()

        async def stop() -> None:
            await onboarding.stop()
        core.call(stop)
        core.stop()


# ---- how to reset: the hub's own button, or none ------------------------------------------

@pytest.mark.parametrize(("button", "hint"), [
    ({"enabled": True, "long_press_seconds": 4.0},
     "To pair it again, hold the hub's button for 4 seconds or run 'gatewayctl reset' on "
     "the hub."),
    ({}, "To pair it again, run 'gatewayctl reset' on the hub."),
], ids=["4-second-button", "no-button"])
def test_the_reset_hint_is_the_hubs_own_button_or_none(
        tmp_path: Path, button: dict[str, Any], hint: str) -> None:
    """Before: the dashboard and every 403 said "hold the hub's button for 10 seconds",
    whatever [button] long_press_seconds was, and on hubs without a button at all."""
    with paired_hub(tmp_path, button=button) as hub:
        client = hub.client()
        refused = client.pair(VALID)
        assert (refused.status, refused.body) == (403, f"This hub is already paired. {hint}")
        api = client.post_json("/api/v1/pair", VALID)
        assert api.json["error"]["message"] == f"This hub is already paired. {hint}"
        sign_in(client)
        dashboard = text_of(client.get("/").body)
        assert f"Pair again {hint}" in dashboard
        assert "10 seconds" not in dashboard


@pytest.mark.parametrize(("button", "said", "unsaid"), [
    ({"enabled": True, "long_press_seconds": 4.0},
     "To pair it again, press the hub's button briefly (or run 'gatewayctl button short' on "
     "it) and pair within 10 minutes, or sign in to its panel as admin and pair there; or "
     "reset it: hold the hub's button for 4 seconds or run 'gatewayctl reset' on the hub.",
     "10 seconds"),
    ({}, "To pair it again, run 'gatewayctl button short' on the hub and pair within 10 "
         "minutes, or sign in to its panel as admin and pair there; or reset it: run "
         "'gatewayctl reset' on the hub.", "button briefly"),
], ids=["4-second-button", "no-button"])
def test_a_repairable_hub_says_how_with_its_own_button_or_none(
        tmp_path: Path, button: dict[str, Any], said: str, unsaid: str) -> None:
    with running_portal(tmp_path, button=button) as portal:
        assert portal.client().pair(VALID).status == 200
        portal.core(portal.fake.succeed)
        portal.fake.state, portal.fake.repairable = "offline", True  # offline on its hotspot
        refused = portal.client().pair(VALID)
        assert (refused.status, refused.body) == (403, f"This hub is already paired. {said}")
        assert unsaid not in refused.body


# ---- a new router, the same account -------------------------------------------------------

NEW_ROUTER = {"ssid": "Flat 3B", "psk": "new-router-pass"}


def test_its_admin_gives_a_paired_hub_a_network_only_and_nobody_else(tmp_path: Path) -> None:
    """The panel's script posts to /api/v1/pair with the admin's session: the front door
    keeps the stored account for a network alone, even where the vendor preset a whole
    account; anyone else must give an account (none preset here: refused)."""
    with running_portal(tmp_path) as portal:
        assert portal.client().pair(VALID).status == 200
        portal.core(portal.fake.succeed)
        portal.fake.state, portal.fake.repairable = "offline", True  # offline on its hotspot
        admin = portal.client()
        sign_in(admin, portal.setup_code)
        reply = admin.post_json("/api/v1/pair", NEW_ROUTER, {"X-Requested-By": "gatewayd-panel"})
        assert reply.status == 200, reply.body
        request = portal.fake.begun[-1]
        assert request.admin and request.cloud is None and request.wifi is not None
        assert request.wifi.ssid == "Flat 3B"
        portal.core(lambda: portal.fake.fail("wrong-password"))
        # Another account, given: taken as given.
        other = {**NEW_ROUTER, "wsp": "new@example.com", "token": "new-token",
                 "host": "127.0.0.1", "brport": "1883"}
        assert admin.post_json("/api/v1/pair", other).status == 200
        assert portal.fake.begun[-1].cloud is not None
        assert portal.fake.begun[-1].cloud.wsp == "new@example.com"
        portal.core(lambda: portal.fake.fail("wrong-password"))
        # Part of an account is not "keep mine": refused as incomplete.
        reply = admin.post_json("/api/v1/pair", {**NEW_ROUTER, "host": "127.0.0.1"})
        assert (reply.status, reply.json["error"]["field"]) == (400, "wsp")

        portal.fake.state, portal.fake.pairing_open = "offline", True  # a short press
        stranger = portal.client().post_json("/api/v1/pair", NEW_ROUTER)
        assert stranger.status == 400
        assert stranger.json["error"]["message"] == "wsp: is required: the account e-mail"
        assert len(portal.fake.begun) == 3


def test_with_a_whole_account_preset_the_admin_still_keeps_the_hubs_own(
        tmp_path: Path) -> None:
    presets = {"host": "127.0.0.1", "port": 1883, "wsp": "vendor@example.com",
               "token": "vendor-token"}
    with running_portal(tmp_path, cloud=presets) as portal:
        assert portal.client().pair(VALID).status == 200  # the owner's account, not the preset
        portal.core(portal.fake.succeed)
        portal.fake.state, portal.fake.repairable = "offline", True
        admin = portal.client()
        sign_in(admin, portal.setup_code)
        form = admin.get("/").body
        assert "Leave these empty to keep the current account (u***@example.com)" in form
        assert 'value="127.0.0.1"' not in form  # no preset filled in: it would be an account
        reply = admin.post_form("/setup", {"csrf_token": csrf_from(form), "network": "Flat 3B",
                                           "psk": "new-router-pass", "wsp": "", "token": "",
                                           "host": "", "brport": "", "mqtts_port": "",
                                           "rootTopic": ""})
        assert reply.status == 303, reply.body
        assert portal.fake.begun[-1].cloud is None  # the hub's own account runs


# ---- sessions and the wall clock ----------------------------------------------------------

def test_a_wall_clock_step_does_not_sign_the_admin_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Pi without a real-time clock steps its wall clock when NTP first answers. Before:
    a step back voided the session cookie (its signature's time was "in the future"), and
    a step forward past 12 h ended the sign-in: both signed the admin out."""
    with running_portal(tmp_path) as portal:
        assert portal.client().pair(VALID).status == 200
        portal.core(portal.fake.succeed)
        admin = portal.client()
        sign_in(admin, portal.setup_code)
        assert "dc-a6-32-01-02-03" in admin.get("/").body  # the dashboard
        wall = time.time
        try:
            for step in (-6 * 3600, 13 * 3600):  # NTP puts the clock back, then forward
                monkeypatch.setattr(time, "time", lambda step=step: wall() + step)
                page = admin.get("/")
                assert page.status == 200 and "dc-a6-32-01-02-03" in page.body, step
                assert admin.get("/api/v1/status").status == 200
                # ... and its forms have not "expired": signing out works.
                token = csrf_from(page.body)
            assert admin.post_form("/logout", {"csrf_token": token}).status == 303
            assert admin.get("/").status == 302  # signed out for real
        finally:
            monkeypatch.undo()


# ---- failed sign-ins: in the journal and in gatewayctl status ------------------------------

def test_failed_sign_ins_and_lockouts_show_in_the_journal_and_gatewayctl_status(
        tmp_path: Path) -> None:
    """Before: eight wrong passwords (five 401s, then 429s, the right one refused too) left
    no journal line and no counter anywhere."""
    sim = Sim(tmp_path / "sim")
    try:
        zero = {"succeeded": 0, "failed": 0, "refused": 0, "lockouts": 0}
        assert sim.status()["admin_sign_in"] == zero  # before the portal's first request
        account, mqtt = sim.info["account"], sim.info["mqtt"]
        assert http_get(sim.pair_url(ssid="HomeNet", psk="supersecret", wsp=account["wsp"],
                                     token=account["token"], host=mqtt["host"],
                                     brport=str(mqtt["port"]))) == (200, "OK")
        wait_for(lambda: sim.status()["state"] == "online", 30, "the hub to go online")
        client = Client(int(sim.portal.rsplit(":", 1)[1]))
        token = csrf_from(client.get("/login").body)
        answers = [client.post_form("/login", {"csrf_token": token,
                                               "password": f"guess-{i:04d}"}).status
                   for i in range(8)]
        assert answers == [401] * 5 + [429] * 3
        setup_code = ctl_json("--sim", str(sim.workdir), "setup-code")["setup_code"]
        assert client.post_form("/login", {"csrf_token": token,
                                           "password": setup_code}).status == 429
        assert sim.status()["admin_sign_in"] == {"succeeded": 0, "failed": 5, "refused": 4,
                                                 "lockouts": 1}
        log = sim.proc.output()
        assert log.count("admin sign-in: 5 wrong passwords in a row from 127.0.0.1; its "
                         "sign-ins now wait") == 1, log
        assert "guess-" not in log and setup_code not in log
    finally:
        assert sim.proc.stop(signal.SIGINT, timeout=30) == 0, sim.proc.output()
