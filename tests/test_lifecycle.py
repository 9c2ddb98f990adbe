"""Starting and stopping within systemd's limits: a SIGTERM during the start stops the
daemon there (no READY=1, nothing more started), and the whole stop shares one budget that
fits inside the unit's TimeoutStopSec, whatever a component or a factory reset does."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
from pathlib import Path

import pytest

from gatewayd.config import Config, load_config
from gatewayd.daemon import Daemon
from gatewayd.hub import Hub
from gatewayd.identity import Identity
from gatewayd.runtime.corecall import CoreUnavailable
from gatewayd.runtime.lifecycle import STOP_BUDGET, Lifecycle
from gatewayd.runtime.logsetup import Redactor
from gatewayd.state import StateStore
from tests.fakes import StubCloud
from tests.helpers import (
    Gatewayd,
    ctl_json,
    ethernet_config,
    run_async,
    wait_for,
    write_config,
)
from tests.test_hardware import until
from tests.test_reset import paired_hub
from tests.test_sdnotify import NotifySocket

IDENTITY = Identity("dc-a6-32-12-34-56", "dc:a6:32:12:34:56", "Acme Hub")
SERVICE = Path(__file__).resolve().parent.parent / "systemd" / "gatewayd.service"


class Recorder:
    """A component that notes its start and stop in a shared journal."""

    def __init__(self, name: str, journal: list[str]) -> None:
        self.name = name
        self.journal = journal

    async def start(self) -> None:
        self.journal.append(f"start {self.name}")

    async def stop(self) -> None:
        self.journal.append(f"stop {self.name}")


class SigtermWhileStarting(Recorder):
    """Its start is slow (a hotspot coming up on a Pi): SIGTERM arrives meanwhile, from
    outside, and the start finishes once the daemon has taken it in."""

    def __init__(self, journal: list[str], stop_requested: asyncio.Event) -> None:
        super().__init__("slow", journal)
        self.stop_requested = stop_requested

    async def start(self) -> None:
        await super().start()
        os.kill(os.getpid(), signal.SIGTERM)
        await self.stop_requested.wait()


def ethernet_hub(tmp_path: Path) -> tuple[Config, StateStore]:
    """A hub on Ethernet (no hotspot, no BLE) with its identity stored."""
    config = load_config(write_config(tmp_path / "g.toml", ethernet_config(tmp_path)))
    store = StateStore(config.state_dir)
    store.open(device_id=IDENTITY.device_id, mac=IDENTITY.mac)
    return config, store


def test_sigterm_during_the_start_stops_there_without_ready(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        ) -> None:
    """systemd sees no READY=1, only STOPPING=1; the components after the slow one (the
    onboarding: hotspot, BLE window) never start; those before it are stopped in reverse
    order; the exit status is 0."""
    notify = NotifySocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    config, store = ethernet_hub(tmp_path)
    journal: list[str] = []

    class Slow(Daemon):
        def _build(self, loop: asyncio.AbstractEventLoop) -> Hub:
            hub = super()._build(loop)
            at = self.components.index(self.onboarding)  # type: ignore[arg-type]
            self.components[at:at] = [Recorder("early", journal),
                                      SigtermWhileStarting(journal, hub.stop_requested)]
            self.components.append(Recorder("late", journal))
            return hub

    daemon = Slow(config, store, IDENTITY, Redactor(), cloud_step=StubCloud())
    caplog.set_level(logging.INFO)
    try:
        assert run_async(daemon.run()) == 0
        notify.wait_for("STOPPING=1")
    finally:
        notify.close()
    assert not any("READY=1" in message for _, message in notify.log), notify.log
    assert journal == ["start early", "start slow", "stop slow", "stop early"]
    assert daemon.onboarding is not None and daemon.onboarding.state is None  # never started
    assert not config.control_socket.exists()  # the control server started, and stopped
    assert not any(" ready (device " in r.getMessage() for r in caplog.records)


class Hangs(Recorder):
    async def stop(self) -> None:
        await super().stop()
        await asyncio.Event().wait()  # a D-Bus peer that never answers


def test_a_component_whose_stop_hangs_leaves_the_others_time_to_stop(
        caplog: pytest.LogCaptureFixture) -> None:
    journal: list[str] = []
    components = [Recorder("first", journal), Recorder("second", journal),
                  Hangs("hangs", journal)]

    async def main() -> None:
        lifecycle = Lifecycle(components, asyncio.Event(), budget=1.0)
        assert await lifecycle.start()
        lifecycle.begin_stop()
        await lifecycle.stop()

    run_async(main())
    assert journal[3:] == ["stop hangs", "stop second", "stop first"]
    [error] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert error.startswith("stopping hangs took over ")


def test_the_daemon_stops_within_its_budget_when_a_component_hangs(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Every component is stopped and the daemon exits 0; the hung one is named in the
    journal and left behind at the deadline (not after a 10 s wait of its own)."""
    config, store = ethernet_hub(tmp_path)
    journal: list[str] = []

    class Stuck(Daemon):
        def _build(self, loop: asyncio.AbstractEventLoop) -> Hub:
            hub = super()._build(loop)
            # Stopped last: the real components before it have the budget's time.
            self.components.insert(0, Hangs("hangs", journal))
            self.components.append(Recorder("late", journal))
            return hub

        async def stop_when_ready(self) -> int:
            running = asyncio.create_task(self.run())
            await self.ready.wait()
            assert self.hub is not None
            self.hub.stop_requested.set()
            return await running

    daemon = Stuck(config, store, IDENTITY, Redactor(), cloud_step=StubCloud(),
                   stop_budget=5.0)
    assert run_async(daemon.stop_when_ready()) == 0
    assert journal == ["start hangs", "start late", "stop late", "stop hangs"]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith("stopping hangs took over ")
    assert not config.control_socket.exists()


def test_the_stop_budget_fits_inside_the_units_stop_timeout() -> None:
    """The daemon's one deadline for its whole stop, with a margin for the loop's end."""
    unit = SERVICE.read_text()
    timeout = re.search(r"^TimeoutStopSec=(\d+)s$", unit, re.MULTILINE)
    assert timeout is not None
    assert STOP_BUDGET + 5 <= int(timeout.group(1))


class Radio(Recorder):
    """A component a factory reset stops and starts again, as the Zigbee bridge's full reset
    does (and the onboarding's the hotspot)."""

    def __init__(self, journal: list[str]) -> None:
        super().__init__("radio", journal)
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def reset(self, full: bool) -> None:
        await self.stop()
        self.holding.set()
        await self.release.wait()  # a new network forming
        await self.start()


def test_a_reset_still_running_at_the_stop_does_not_start_again_what_is_stopped(
        tmp_path: Path) -> None:
    hub = paired_hub(tmp_path)
    journal: list[str] = []
    radio = Radio(journal)
    hub.on_reset(radio.reset)

    async def main() -> BaseException | None:
        resetting = asyncio.create_task(hub.reset(True))  # `gatewayctl reset --full`
        await until(radio.holding.is_set, what="the reset's radio hook")
        hub.stop_requested.set()
        await hub.finish_resets(timeout=0.0)  # its share of the stop is spent
        await radio.stop()  # the daemon stops its components
        radio.release.set()  # what the reset waited for comes: nothing is left to go on
        for _ in range(20):  # turns of the loop enough for a reset to start the radio
            await asyncio.sleep(0)
        return resetting.exception() if resetting.done() else None

    refused = run_async(main())
    assert journal == ["stop radio", "stop radio"]
    assert isinstance(refused, CoreUnavailable)  # what `gatewayctl reset` answers: 503
    assert str(refused) == ("the hub stopped before the factory reset finished; reset it "
                            "again after it has started again")


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2])
def test_a_reload_or_user_signal_is_logged_and_the_hub_keeps_running(
        tmp_path: Path, sig: signal.Signals) -> None:
    """Before: `kill -HUP` (an admin's reload) ended the daemon with status 129 and no log
    line, which systemd counts as a clean exit and does not restart (systemd.service(5));
    SIGUSR1 and SIGUSR2, button presses in the simulator only, ended it too."""
    cfg = write_config(tmp_path / "g.toml", ethernet_config(tmp_path))
    gw = Gatewayd(["--config", str(cfg)])
    sock = tmp_path / "run" / "control.sock"
    try:
        gw.wait_socket(sock)
        wait_for(lambda: " ready (device " in gw.output(), 20, "the daemon to be ready")
        gw.proc.send_signal(sig)
        line = (f"{sig.name} ignored: gatewayd has no reload (its configuration is read at "
                "start); use systemctl restart gatewayd" if sig == signal.SIGHUP else
                f"{sig.name} ignored: it is a button press only in the simulator (on a hub: "
                "gatewayctl button short|long)")
        wait_for(lambda: line in gw.output() or gw.proc.poll() is not None, 10,
                 f"the daemon to log or die of {sig.name}")
        assert gw.proc.poll() is None, (gw.proc.returncode, gw.output())
        assert ctl_json("--socket", str(sock), "status")["state"] == "unpaired"
    finally:
        assert gw.stop() == 0, gw.output()


def test_a_sighup_while_a_first_start_waits_for_its_mac_is_ignored_too(
        tmp_path: Path) -> None:
    """The first start waits up to 30 s for the MAC the identity is made from, before the
    daemon's event loop exists."""
    cfg = write_config(tmp_path / "g.toml",
                       ethernet_config(tmp_path).replace("[hub]\n", '[hub]\ninterface = '
                                                                     '"gwtest-none0"\n'))
    gw = Gatewayd(["--config", str(cfg)])
    try:
        # Held from before the wait for the MAC, after the signal handlers are set.
        wait_for(lambda: (tmp_path / "state" / ".lock").exists() or gw.proc.poll() is not None,
                 10, "the state directory to be claimed")
        gw.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "SIGHUP ignored" in gw.output() or gw.proc.poll() is not None, 10,
                 "the daemon to log or die of SIGHUP")
        assert gw.proc.poll() is None, (gw.proc.returncode, gw.output())
        assert "cannot start" not in gw.output()  # still waiting for the interface
    finally:
        assert gw.stop() == -signal.SIGTERM, gw.output()  # no handler yet: SIGTERM's own end
