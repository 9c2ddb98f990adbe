"""The "Wi-Fi first, cloud later" path seen from HTTP: ``/pair`` keeps requiring the cloud
fields (a Wi-Fi-only request is Improv's privilege), and a hub that joined Wi-Fi without
a cloud account is paired over the LAN with the "No Wi-Fi" variant of ``/pair``.

The second test runs the daemon's arrangement for real: Onboarding on the NetworkManager
mock on a private bus, on a core loop in its own thread, the portal in waitress.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from gatewayd.ap import NetworkManagerControl
from gatewayd.hub import Hub
from gatewayd.onboarding.machine import Onboarding
from gatewayd.onboarding.pairing import PairingService
from gatewayd.onboarding.progress import Progress
from gatewayd.onboarding.table import State
from gatewayd.portal.app import create_portal_app
from gatewayd.runtime.logsetup import Redactor
from gatewayd.runtime.sdnotify import Notifier
from gatewayd.runtime.webserver import WebServer
from gatewayd.simulator.dbus_daemon import PrivateBus
from gatewayd.simulator.nm_mock import NetworkManagerMock
from gatewayd.state import StateStore
from tests.fakes import StubCloud
from tests.portal_helpers import (
    Client,
    LoopThread,
    csrf_from,
    fast_stopping,
    make_config,
    running_portal,
)
from tests.test_onboarding import IDENTITY, active_ids, bus, nm

T = TypeVar("T")
__all__ = ["bus", "nm"]  # fixtures shared with test_onboarding
WIFI_ONLY = {"ssid": "HomeNet", "psk": "supersecret"}
CLOUD_ONLY = {"wsp": "user@example.com", "token": "t0k-secret-value", "host": "127.0.0.1",
              "brport": "1883"}
STEP = 10.0


def test_pair_over_http_still_requires_the_cloud_fields(tmp_path: Path) -> None:
    with running_portal(tmp_path) as portal:  # no cloud presets
        before = portal.state_file.read_bytes()
        client = portal.client()
        reply = client.pair(WIFI_ONLY)
        assert reply.status == 400 and reply.body.startswith("wsp: "), reply.body
        api = client.post_json("/api/v1/pair", WIFI_ONLY)
        assert api.status == 400 and api.json["error"]["field"] == "wsp"
        assert portal.fake.begun == [] and portal.state_file.read_bytes() == before


def test_hub_on_wifi_without_account_is_paired_over_the_lan(nm: NetworkManagerMock,
                                                            tmp_path: Path) -> None:
    config = make_config(tmp_path, hotspot={"connect_timeout": 5.0})
    store = StateStore(config.state_dir)
    store.open(device_id=IDENTITY.device_id, mac=IDENTITY.mac)
    core = LoopThread()

    def on_core(coro: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, core.loop).result(30)  # type: ignore[arg-type]

    def until(predicate: Callable[[], bool]) -> None:
        on_core(onboarding.wait_for(predicate, STEP))

    hub = Hub(config, store, IDENTITY, Notifier(), Redactor())
    onboarding = Onboarding(config, store, NetworkManagerControl(config, IDENTITY),
                            StubCloud())
    pairing = PairingService(onboarding, config.cloud)
    server: WebServer | None = None
    try:
        on_core(onboarding.start())
        server = fast_stopping(WebServer(
            create_portal_app(hub, core.call, pairing=pairing, onboarding=onboarding),
            name="portal", host="127.0.0.1", port=0))
        client = Client(server.port)

        async def improv_like() -> Progress:
            return await pairing.submit(WIFI_ONLY, "ble-improv", allow_wifi_only=True)

        on_core(improv_like())
        until(lambda: onboarding.state == State.UNPAIRED and onboarding.pairing_open
              and onboarding.progress().network == "wifi")
        progress = client.get("/api/v1/progress").json
        assert progress["state"] == "unpaired" and progress["network"] == "wifi"
        assert progress["pairing_open"] and not progress["hotspot"]
        assert client.get("/").status == 200  # the pairing form, no sign-in needed

        # Still a 400 over HTTP: Wi-Fi only is not for /pair, even on a hub on Wi-Fi.
        refused = client.pair(WIFI_ONLY)
        assert refused.status == 400 and refused.body.startswith("wsp: ")
        assert onboarding.state == State.UNPAIRED and store.state.cloud is None

        accepted = client.pair(CLOUD_ONLY)
        assert (accepted.status, accepted.body) == (200, "OK")
        until(lambda: onboarding.state == State.ONLINE)
        assert store.state.paired and store.state.wifi is not None
        assert store.state.wifi.ssid == "HomeNet"
        assert active_ids(nm) == ["gatewayd-client-HomeNet"]
        assert client.pair(CLOUD_ONLY).status == 403  # paired: refused until a reset
    finally:
        if server is not None:
            server.stop()
        on_core(onboarding.stop())
        core.stop()


def test_the_panel_of_a_wifi_hub_on_its_cable_pairs_it_cloud_only(
        bus: PrivateBus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review: on its cable, the panel insisted on a Wi-Fi network (a 400 without one),
    accepted a made-up one, and then said the hub had joined it while it had no Wi-Fi.
    Now it offers the cable (cloud only); an attempt that did not apply a network names
    none."""
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)
    config = make_config(tmp_path, hotspot={"connect_timeout": 5.0})
    store = StateStore(config.state_dir)
    store.open(device_id=IDENTITY.device_id, mac=IDENTITY.mac)
    core = LoopThread()

    def on_core(coro: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, core.loop).result(30)  # type: ignore[arg-type]

    hub = Hub(config, store, IDENTITY, Notifier(), Redactor())
    server: WebServer | None = None
    with NetworkManagerMock(bus, tmp_path / "nm", ethernet_connected=True) as nm:
        onboarding = Onboarding(config, store, NetworkManagerControl(config, IDENTITY),
                                StubCloud())
        pairing = PairingService(onboarding, config.cloud)
        try:
            on_core(onboarding.start())
            server = fast_stopping(WebServer(
                create_portal_app(hub, core.call, pairing=pairing, onboarding=onboarding),
                name="portal", host="127.0.0.1", port=0))
            client = Client(server.port)
            page = client.get("/")
            assert page.status == 200 and 'data-wifi="no"' in page.body
            assert "on its network cable" in page.body and "Other network" not in page.body
            # The form as the page posts it: no network, the cloud account only.
            accepted = client.post_form("/setup", {"csrf_token": csrf_from(page.body),
                                                   **CLOUD_ONLY})
            assert accepted.status == 303, accepted.body
            on_core(onboarding.wait_for(lambda: onboarding.state == State.ONLINE, STEP))
            progress = client.get("/api/v1/progress").json
            assert progress["attempt"]["ssid"] is None and progress["network"] is None
            assert store.state.paired and store.state.wifi is None

            # A made-up network over the API (a stale page, a script): not applied, and
            # progress does not name it.
            store.reset()
            on_core(onboarding.reset())
            made_up = client.post_json("/api/v1/pair", {**CLOUD_ONLY, "ssid": "DoesNotExist",
                                                        "psk": "whatever-pass"})
            assert made_up.status in (200, 202), made_up.body
            on_core(onboarding.wait_for(lambda: onboarding.state == State.ONLINE, STEP))
            progress = client.get("/api/v1/progress").json
            assert progress["attempt"]["ssid"] is None, progress
            assert store.state.wifi is None
            assert not [i for i in active_ids(nm) if i.startswith("gatewayd-")]
        finally:
            if server is not None:
                server.stop()
            on_core(onboarding.stop())
            core.stop()
