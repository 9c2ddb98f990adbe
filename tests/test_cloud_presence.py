"""What an online hub shows while its cloud link is down (review: LED, panel and systemd all
said "online" for as long as the broker was gone).

The daemon runs here with a real cloud link to a real mosquitto, which the test stops and
starts again; the test reads what a person reads: ``gatewayctl status``, the admin panel's
badge, and the STATUS= lines systemd gets on its notify socket.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gatewayd.config import load_config
from gatewayd.daemon import Daemon
from gatewayd.identity import Identity
from gatewayd.onboarding.table import State
from gatewayd.runtime.logsetup import Redactor
from gatewayd.state import StateStore
from tests.cloud_helpers import creds_for, make_broker
from tests.helpers import ctl_json, ethernet_config, run_async, write_config
from tests.portal_helpers import Client, csrf_from
from tests.test_hardware import until
from tests.test_sdnotify import NotifySocket

pytestmark = pytest.mark.timeout(120)
IDENTITY = Identity("dc-a6-32-12-34-56", "dc:a6:32:12:34:56", "Acme Hub")
UNREACHABLE = "online: cloud unreachable, reconnecting"


class PairedHub:
    """A paired Ethernet hub with an LED, on a real broker; :meth:`run` runs the daemon on
    this (the main) thread, with ``scenario`` beside it."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grace: float) -> None:
        self.notify = NotifySocket(tmp_path / "notify.sock")
        monkeypatch.setenv("NOTIFY_SOCKET", str(self.notify.path))
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
        self.broker = make_broker(tmp_path / "broker")
        self.config_file = write_config(tmp_path / "g.toml", ethernet_config(tmp_path, (
            "[cloud]\nreconnect_min = 0.05\nreconnect_max = 0.3\n[led]\nenabled = true\n")))
        config = load_config(self.config_file)
        store = StateStore(config.state_dir)
        store.open(device_id=IDENTITY.device_id, mac=IDENTITY.mac)
        store.commit_pairing(None, creds_for(self.broker))
        self.setup_code = store.state.setup_code
        self.daemon = Daemon(config, store, IDENTITY, Redactor(), simulate=True,
                             cloud_grace=grace)

    def run(self, scenario: Callable[[], Awaitable[None]]) -> None:
        async def both() -> None:
            daemon = asyncio.create_task(self.daemon.run())
            try:
                await asyncio.wait_for(self.daemon.ready.wait(), 30)
                assert self.daemon.onboarding is not None
                await self.daemon.onboarding.wait_for(
                    lambda: self.daemon.onboarding is not None
                    and self.daemon.onboarding.state == State.ONLINE, 30)
                await scenario()
            finally:
                if self.daemon.hub is not None:
                    self.daemon.hub.stop_requested.set()
                await daemon

        try:
            run_async(both(), timeout=100)
        finally:
            self.notify.close()
            self.broker.stop()

    async def status(self) -> dict[str, Any]:
        """What `gatewayctl status --json` prints."""
        status: dict[str, Any] = await asyncio.to_thread(
            ctl_json, "--config", str(self.config_file), "status")
        return status

    async def link(self, connected: bool) -> None:
        """Wait until the cloud link is (or is not) connected."""
        link = self.daemon.cloud_link
        assert link is not None
        await until(lambda: link.connected is connected, 30, "the cloud link")

    async def badge(self) -> str:
        """The admin panel's state badge, signed in."""
        def read() -> str:
            assert self.daemon.portal_url is not None
            client = Client(int(self.daemon.portal_url.rpartition(":")[2]))
            token = csrf_from(client.get("/login").body)
            client.post_form("/login", {"csrf_token": token, "password": self.setup_code})
            match = re.search(r'id="state-badge">([^<]*)<', client.get("/").body)
            assert match, "no badge on the dashboard"
            return match.group(1)
        return await asyncio.to_thread(read)

    def statuses(self) -> list[str]:
        """Every STATUS= systemd got, in order."""
        return [field.removeprefix("STATUS=") for _, message in list(self.notify.log)
                for field in message.split("\n") if field.startswith("STATUS=")]

    async def status_line(self, wanted: str) -> None:
        """Wait until systemd's latest STATUS= is ``wanted``."""
        await until(lambda: self.statuses() and self.statuses()[-1] == wanted, 30,
                    f"STATUS={wanted}")

    def led_history(self) -> list[bool]:
        """The LED line's levels, as they were written."""
        assert self.daemon.hardware is not None
        cfg = self.daemon.config.led
        backend: Any = self.daemon.hardware.backend
        return [lit for _, lit in backend.output_line(cfg.chip, cfg.line).history]


def test_an_online_hub_whose_cloud_link_is_down_shows_it_on_the_led_panel_and_status(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = PairedHub(tmp_path, monkeypatch, grace=0.2)

    async def scenario() -> None:
        await hub.status_line("online")
        status = await hub.status()
        assert status["hardware"]["led"]["pattern"] == "online"
        assert status["cloud_link"]["reachable"] is True
        assert await hub.badge() == "Online"

        await asyncio.to_thread(hub.broker.stop)  # the cloud is gone
        await hub.status_line(UNREACHABLE)
        status = await hub.status()
        assert status["state"] == "online"  # onboarding's state: its Wi-Fi logic is unmoved
        assert status["cloud_link"]["connected"] is False
        assert status["cloud_link"]["reachable"] is False
        assert status["hardware"]["led"]["pattern"] == "offline"
        assert status["status_text"] == UNREACHABLE
        assert await hub.badge() == "Cloud unreachable (reconnecting)"

        await asyncio.to_thread(hub.broker.start)  # back, on the same port
        await hub.status_line("online")
        status = await hub.status()
        assert status["cloud_link"]["connected"] is True
        assert status["hardware"]["led"]["pattern"] == "online"
        assert await hub.badge() == "Online"

    hub.run(scenario)


def test_a_reconnect_within_the_grace_shows_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A broker restarted, a hiccup: the link is back within the grace, nobody is told."""
    hub = PairedHub(tmp_path, monkeypatch, grace=60.0)

    async def scenario() -> None:
        await hub.status_line("online")
        shown = len(hub.led_history())
        assert hub.led_history()[-1] is True  # steady on
        await asyncio.to_thread(hub.broker.stop)
        await hub.link(connected=False)
        lost = await hub.status()
        assert lost["cloud_link"]["connected"] is False
        assert lost["hardware"]["led"]["pattern"] == "online"
        assert lost["status_text"] == "online"
        await asyncio.to_thread(hub.broker.start)
        await hub.link(connected=True)
        back = await hub.status()
        assert back["cloud_link"]["connects"] == 2
        assert hub.led_history()[shown:] == []  # not one blink
        assert UNREACHABLE not in hub.statuses() and hub.statuses()[-1] == "online"

    hub.run(scenario)
