"""The admin panel as its admin sees it, on a real portal: what the dashboard and the
refusals say, what the panel's pairing form takes, how it keeps itself current."""

from __future__ import annotations

import contextlib
import html
import re
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
from tests.portal_helpers import (
    VALID,
    Client,
    LoopThread,
    csrf_from,
    fast_stopping,
    make_config,
    running_portal,
)

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

    def client(self) -> Client:
        return Client(self.port)


@contextlib.contextmanager
def paired_hub(tmp_path: Path, **sections: Mapping[str, Any]) -> Iterator[PairedHub]:
    config = make_config(tmp_path, hotspot={"offline_grace": 3600.0}, **sections)
    store = StateStore(config.state_dir, CODE)
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
        yield PairedHub(config, store, onboarding, server.port)
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
