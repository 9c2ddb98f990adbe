"""The portal under test: a real waitress server on 127.0.0.1, an asyncio core in a
thread (like the daemon), and a scripted onboarding state machine."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from gatewayd.config import Config, parse_config
from gatewayd.hub import Hub
from gatewayd.identity import Identity
from gatewayd.onboarding.pairing import PairingRequest, PairingService
from gatewayd.onboarding.progress import Attempt, LastFailure, Progress
from gatewayd.portal import refusals
from gatewayd.portal.app import create_portal_app
from gatewayd.runtime.corecall import CoreCall
from gatewayd.runtime.logsetup import Redactor
from gatewayd.runtime.sdnotify import Notifier
from gatewayd.runtime.webserver import WebServer
from gatewayd.state import StateStore
from tests.fakes import NoOnboarding

NETWORKS = [
    {"ssid": "HomeNet", "signal": 88, "security": "wpa2"},
    {"ssid": "Cafe Guest", "signal": 61, "security": "open"},
    {"ssid": "Flat 3B", "signal": 42, "security": "wpa2/wpa3"},
    {"ssid": "<b>Neighbour</b>", "signal": 17, "security": "wpa3"},
]

VALID = {"ssid": "HomeNet", "psk": "supersecret", "wsp": "user@example.com",
         "token": "t0k-secret-value", "host": "127.0.0.1", "brport": "1883"}

REASONS = {
    "wrong-password": "The Wi-Fi password was not accepted by “{ssid}”. Check it and try again.",
    "network-not-found": "The hub cannot see “{ssid}”. Move it closer to the router.",
    "dhcp-failed": "“{ssid}” did not give the hub an address.",
    "broker-refused": "The cloud refused the account: check the e-mail and token.",
    "broker-unreachable": "The hub cannot reach the cloud broker.",
    "timeout": "The hub did not get online in time.",
}


class FakeOnboarding:
    """Scripted stand-in for gatewayd.onboarding.machine: begin() moves to "connecting"; the test
    then calls :meth:`to_cloud`, :meth:`succeed` or :meth:`fail` (through ``Portal.core``)."""

    def __init__(self, hub: Hub, networks: list[dict[str, Any]]) -> None:
        self.hub = hub
        self._networks = networks
        self.pairing_open = True
        self.repairable = False  # paired, offline on its hotspot: an admin may re-pair
        self.window_seconds: float | None = 600.0
        button = hub.config.button  # like the machine's: the button's, when there is one
        self.long_press_seconds = button.long_press_seconds if button.enabled else None
        self.state = "unpaired"
        self.network: str | None = None  # "wifi": on Wi-Fi without a cloud account
        self.step: str | None = None
        self.attempt: Attempt | None = None
        self.last_failure: LastFailure | None = None
        self.begun: list[PairingRequest] = []
        self.hotspot: bool | None = None  # None: not reported (the portal then assumes)
        self.activity = 0
        self._current: PairingRequest | None = None

    @property
    def busy(self) -> bool:
        return self.state == "connecting"

    async def begin(self, request: PairingRequest) -> None:
        self.begun.append(request)
        self._current = request
        self.last_failure = None  # like the real one: it describes the latest attempt
        self.state = "connecting"
        self.pairing_open = False  # like the real one: closed while an attempt runs
        self.step = "wifi" if request.wifi else "cloud"
        self.attempt = Attempt(id=uuid.uuid4().hex[:8], source=request.source,
                               ssid=request.wifi.ssid if request.wifi else None,
                               cloud=request.cloud is not None, started=time.time())

    def progress(self) -> Progress:
        wifi = self.hub.config.hotspot.enabled
        # Not set by the test: the hotspot is up while pairing is open (if the hub has Wi-Fi).
        hotspot = self.hotspot if self.hotspot is not None else self.pairing_open and wifi
        return Progress(state=self.state, step=self.step, attempt=self.attempt,
                        last_failure=self.last_failure, pairing_open=self.pairing_open,
                        hotspot=hotspot, wifi=wifi, network=self.network)

    def networks(self) -> list[dict[str, Any]]:
        return list(self._networks)

    async def settle(self, timeout: float) -> None:
        pass

    async def has_uplink(self) -> bool:
        # The portal tests pair "No Wi-Fi" hubs that are on a network (the LAN).
        return self.uplink

    uplink = True
    ethernet = False  # a Wi-Fi hub on its cable: the panel pairs it cloud only

    async def on_ethernet(self) -> bool:
        return self.ethernet

    def note_activity(self) -> None:
        self.activity += 1

    # ---- the test's script (run these on the core loop) -----------------------------------

    async def to_cloud(self) -> None:
        self.step = "cloud"

    async def succeed(self) -> None:
        request = self._current
        assert request is not None and self.state == "connecting"
        self.hub.store.commit_pairing(request.wifi, request.cloud)
        self.hub.register_secrets(self.hub.state)
        self.state, self.step, self.attempt = "online", None, None
        self.pairing_open = False

    async def fail(self, code: str) -> None:
        assert self.state == "connecting"
        ssid = self.attempt.ssid if self.attempt else ""
        self.last_failure = LastFailure(code=code, reason=REASONS[code].format(ssid=ssid),
                                        at=time.time(),
                                        attempt=self.attempt.id if self.attempt else None)
        self.state, self.step, self.attempt = "unpaired", None, None
        self.pairing_open = True

    async def reset(self) -> None:
        await self.hub.reset()
        self.state, self.step, self.attempt, self.last_failure = "unpaired", None, None, None
        self.pairing_open = True


class LoopThread:
    """The daemon's arrangement: one asyncio loop in its own thread, reached via CoreCall."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="core", daemon=True)
        self._thread.start()
        self.call = CoreCall(self.loop, timeout=10.0)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: str

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str:
        return self.headers.get(name, "")


@dataclass
class Client:
    """A tiny HTTP client over a real socket that keeps cookies (no redirects followed)."""

    port: int
    cookies: dict[str, str] = field(default_factory=dict)
    source: str | None = None  # the client's own address (a loopback one: 127.x.y.z)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> Reply:
        conn = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=10,
            source_address=(self.source, 0) if self.source else None)
        all_headers = dict(headers or {})
        if self.cookies:
            all_headers.setdefault("Cookie", "; ".join(f"{k}={v}" for k, v in
                                                       self.cookies.items()))
        try:
            conn.request(method, path, body=body, headers=all_headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        for cookie in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = cookie.partition("=")
            self.cookies[name] = rest.partition(";")[0]
        return Reply(response.status, response.headers, raw.decode("utf-8", "replace"))

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Reply:
        return self.request("GET", path, headers=headers)

    def pair(self, fields: Mapping[str, str], headers: Mapping[str, str] | None = None) -> Reply:
        return self.get("/pair?" + urlencode(fields), headers)

    def post_json(self, path: str, body: Any, headers: Mapping[str, str] | None = None) -> Reply:
        return self.request("POST", path, json.dumps(body).encode(),
                            {"Content-Type": "application/json", **(headers or {})})

    def post_form(self, path: str, fields: Mapping[str, Any],
                  headers: Mapping[str, str] | None = None) -> Reply:
        return self.request("POST", path, urlencode(fields).encode(),
                            {"Content-Type": "application/x-www-form-urlencoded",
                             **(headers or {})})


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


@dataclass
class Portal:
    url: str
    port: int
    hub: Hub
    fake: FakeOnboarding
    core: CoreCall
    server: WebServer
    state_file: Path
    pairing: PairingService

    def client(self, source: str | None = None) -> Client:
        """``source``: the client's address, such as 127.0.0.2 (default 127.0.0.1)."""
        return Client(self.port, source=source)

    @property
    def setup_code(self) -> str:
        return self.hub.state.setup_code


def make_config(tmp: Path, **sections: Mapping[str, Any]) -> Config:
    data: dict[str, Any] = {
        "hub": {"state_dir": str(tmp / "state"), "runtime_dir": str(tmp / "run"),
                "product": "Acme Hub"},
        "portal": {"listen": "127.0.0.1", "port": 0},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return parse_config(data)


def fast_stopping(server: WebServer) -> WebServer:
    """Start ``server`` with a short waitress loop timeout.

    waitress' loop only notices WebServer.stop() at its next select() timeout (1 s by
    default): with a hundred servers per run that second dominated the suite.
    """
    server._server.adj.asyncore_loop_timeout = 0.05
    return server.start()


@contextlib.contextmanager
def running_portal(tmp: Path, *, networks: list[dict[str, Any]] | None = None,
                   with_onboarding: bool = True, bridge: Any = None,
                   **sections: Mapping[str, Any]) -> Iterator[Portal]:
    """``bridge``: a ZigbeeBridge for the portal's Zigbee routes (none without)."""
    config = make_config(tmp, **sections)
    store = StateStore(config.state_dir, config.hub.setup_code)
    store.open(device_id="dc-a6-32-01-02-03", mac="dc:a6:32:01:02:03")
    identity = Identity(device_id="dc-a6-32-01-02-03", mac="dc:a6:32:01:02:03",
                        product=config.hub.product)
    core = LoopThread()
    hub = Hub(config, store, identity, Notifier(), Redactor())
    fake = FakeOnboarding(hub, NETWORKS if networks is None else networks)
    behind: FakeOnboarding | NoOnboarding = fake if with_onboarding else NoOnboarding(hub)
    pairing = PairingService(behind, config.cloud, wifi_enabled=config.hotspot.enabled)
    app = create_portal_app(hub, core.call, pairing=pairing, onboarding=behind, zigbee=bridge)
    server = fast_stopping(WebServer(app, name="portal", host="127.0.0.1", port=0,
                                     max_request_bytes=config.portal.max_request_bytes,
                                     error_page=refusals.error_page))
    try:
        yield Portal(url=f"http://127.0.0.1:{server.port}", port=server.port, hub=hub,
                     fake=fake, core=core.call, server=server, state_file=store.path,
                     pairing=pairing)
    finally:
        server.stop()
        core.stop()
