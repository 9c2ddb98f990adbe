"""The onboarding state machine on a fake Wi-Fi control: the transition table, fast.

NetworkManager's own behaviour (profiles, the hotspot's settings, scan quirks) is tested
against the mock on a private bus in test_onboarding.py; here the machine runs on
:class:`tests.fakes.FakeWifi`, so each scenario takes milliseconds.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gatewayd.config import Config, with_overrides
from gatewayd.credentials import CloudCredentials, WifiCredentials
from gatewayd.onboarding import conclusion
from gatewayd.onboarding.conclusion import CRASHED, STORAGE_FAILED_REASON
from gatewayd.onboarding.hotspot_watch import WATCH_CABLE
from gatewayd.onboarding.machine import Onboarding
from gatewayd.onboarding.pairing import (
    BUSY_MESSAGE,
    InvalidRequest,
    NotInPairingMode,
    PairingBusy,
    PairingRequest,
    PairingService,
)
from gatewayd.onboarding.progress import describe
from gatewayd.onboarding.steps import Failure, StepResult
from gatewayd.onboarding.table import TRANSITIONS, Event, State
from gatewayd.state import StateStore
from tests.fakes import FakeClock, FakeWifi, StubCloud, first_of
from tests.helpers import run_async

pytestmark = pytest.mark.timeout(30)
run = functools.partial(run_async, timeout=20.0)

CLOUD = CloudCredentials("user@example.com", "t0k", "127.0.0.1", 1883)
HOME = WifiCredentials("HomeNet", "supersecret")
PAIR = {"ssid": "HomeNet", "psk": "supersecret", "wsp": "user@example.com", "token": "t0k",
        "host": "127.0.0.1", "brport": "1883"}
CLOUD_ONLY = {k: v for k, v in PAIR.items() if k not in ("ssid", "psk")}


def config(tmp_path: Path, **hotspot: Any) -> Config:
    cfg = with_overrides(Config(), hub={"state_dir": str(tmp_path / "state")})
    return with_overrides(cfg, hotspot={"connect_timeout": 5.0, "offline_grace": 0.05,
                                        "retry_interval": 3600.0, **hotspot})


def store(cfg: Config) -> StateStore:
    s = StateStore(cfg.state_dir)
    s.open(device_id="dc-a6-32-12-34-56", mac="dc:a6:32:12:34:56")
    return s


@asynccontextmanager
async def machine(cfg: Config, st: StateStore, wifi: FakeWifi | None,
                  cloud: StubCloud | None = None) -> AsyncIterator[Onboarding]:
    ob = Onboarding(cfg, st, wifi, cloud or StubCloud())
    await ob.start()
    try:
        yield ob
    finally:
        await ob.stop()


async def until(ob: Onboarding, predicate: Callable[[], bool]) -> None:
    await ob.wait_for(predicate, 5.0)


def settled(ob: Onboarding, state: State) -> Callable[[], bool]:
    return lambda: ob.state == state and not ob.busy


def press_button(ob: Onboarding) -> None:
    """A short press, as the machine sees it: the window it opens is open (the daemon wires
    the BLE commissioning window here). A paired hub offline on its hotspot takes pairing
    requests only while it is (or from a signed-in admin)."""
    ob.window = lambda: True


@asynccontextmanager
async def offline_on_a_fake_clock(tmp_path: Path, wifi: FakeWifi, cloud: StubCloud | None = None,
                                  *, saved: WifiCredentials = HOME, **hotspot: Any
                                  ) -> AsyncIterator[tuple[Onboarding, FakeClock]]:
    """A hub paired on ``saved``, which ``wifi`` does not offer at boot, with time on a
    FakeClock: it is offline and waits out its grace (30 s; then a retry every 60 s)."""
    cfg = config(tmp_path, offline_grace=30.0, retry_interval=60.0, **hotspot)
    st = store(cfg)
    st.commit_pairing(saved, CLOUD)
    clock = FakeClock()
    ob = Onboarding(cfg, st, wifi, cloud or StubCloud(), clock=clock, sleep=clock.sleep)
    await ob.start()
    try:
        # The boot attempt's end, wherever it settles (a wrong state fails here at once).
        await until(ob, lambda: ob.state != State.CONNECTING and not ob.busy)
        assert ob.state == State.OFFLINE, ob.state
        await clock.sleeps(1)  # the grace period
        yield ob, clock
    finally:
        await ob.stop()


async def grace_over(clock: FakeClock) -> None:
    """The grace is over: the hotspot comes up (or is refused), the first retry interval
    runs."""
    clock.advance(30.0)
    await clock.sleeps(2)


def test_unpaired_boot_opens_the_hotspot_and_pairing(tmp_path: Path) -> None:
    async def scenario() -> None:
        wifi = FakeWifi({"HomeNet": "supersecret"})
        async with machine(config(tmp_path), store(config(tmp_path)), wifi) as ob:
            assert ob.state == State.UNPAIRED and ob.pairing_open and wifi.hotspot
            progress = ob.progress()
            assert progress.hotspot and progress.wifi and progress.network is None
            assert wifi.calls == ["scan", "hotspot-up"]  # scan first: NM cannot scan in AP mode

    run(scenario())


def test_unpaired_boot_on_ethernet_raises_no_hotspot(tmp_path: Path) -> None:
    async def scenario() -> None:
        wifi = FakeWifi(ethernet=True)
        async with machine(config(tmp_path), store(config(tmp_path)), wifi) as ob:
            assert ob.state == State.UNPAIRED and ob.pairing_open and not wifi.hotspot

    run(scenario())


def test_pairing_goes_online_commits_and_keeps_the_radio_order(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    st = store(cfg)

    async def scenario() -> None:
        wifi, cloud = FakeWifi({"HomeNet": "supersecret"}), StubCloud()
        async with machine(cfg, st, wifi, cloud) as ob:
            progress = await PairingService(ob, cfg.cloud).submit(PAIR, "test")
            assert progress.state == "connecting" and progress.attempt is not None
            assert progress.attempt.ssid == "HomeNet" and progress.attempt.source == "test"
            await until(ob, settled(ob, State.ONLINE))
            calls = wifi.calls
            assert calls.index("hotspot-down") < calls.index("connect HomeNet")
            assert not wifi.hotspot and wifi.active == "HomeNet"
            assert st.state.wifi == HOME and st.state.cloud == CLOUD
            assert cloud.connected == CLOUD and not ob.pairing_open

    run(scenario())


def test_listeners_hear_each_step_of_an_attempt(tmp_path: Path) -> None:
    """Before: systemd's status line (a listener) said "connecting (starting)" for a whole
    attempt: the step changed without telling the listeners, only those waiting on the
    condition (the BLE progress) saw it."""
    cfg = config(tmp_path)
    st = store(cfg)
    heard: list[str] = []

    async def scenario() -> None:
        wifi, cloud = FakeWifi({"HomeNet": "supersecret"}), StubCloud()
        async with machine(cfg, st, wifi, cloud) as ob:
            ob.subscribe(lambda state, p: heard.append(describe(p)))
            await PairingService(ob, cfg.cloud).submit(PAIR, "test")
            await until(ob, settled(ob, State.ONLINE))
        connecting = [text for text in heard if text.startswith("connecting")]
        assert "connecting (wifi)" in connecting and "connecting (cloud)" in connecting
        assert connecting.index("connecting (wifi)") < connecting.index("connecting (cloud)")

    run(scenario())


def test_wrong_password_returns_to_the_hotspot_with_the_reason(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    st = store(cfg)

    async def scenario() -> None:
        wifi = FakeWifi({"HomeNet": "supersecret"})
        async with machine(cfg, st, wifi) as ob:
            await PairingService(ob, cfg.cloud).submit({**PAIR, "psk": "wrong-password"},
                                                       "test")
            await until(ob, lambda: ob.last_failure is not None and ob.pairing_open)
            assert ob.state == State.UNPAIRED and wifi.hotspot
            assert ob.last_failure is not None
            assert ob.last_failure.code == Failure.WRONG_PASSWORD
            assert ob.attempt is not None and ob.last_failure.attempt == ob.attempt.id
            assert "HomeNet" not in wifi.profiles, "an unproven profile must not linger"
            assert st.state.wifi is None and st.state.cloud is None

    run(scenario())


def test_cloud_refusal_is_reported_and_nothing_is_committed(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    st = store(cfg)

    async def scenario() -> None:
        wifi, cloud = FakeWifi({"HomeNet": "supersecret"}), StubCloud()
        cloud.next_failure = StepResult(False, Failure.BROKER_REFUSED, "bad token")
        async with machine(cfg, st, wifi, cloud) as ob:
            await PairingService(ob, cfg.cloud).submit(PAIR, "test")
            await until(ob, lambda: ob.last_failure is not None and ob.pairing_open)
            assert ob.last_failure is not None and ob.last_failure.code == "broker-refused"
            assert ob.state == State.UNPAIRED and wifi.hotspot
            assert not st.state.paired

    run(scenario())


def test_paired_boot_rejoins_without_a_hotspot(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    st = store(cfg)
    st.commit_pairing(HOME, CLOUD)

    async def scenario() -> None:
        wifi = FakeWifi({"HomeNet": "supersecret"})
        async with machine(cfg, st, wifi) as ob:
            await until(ob, settled(ob, State.ONLINE))
            assert "hotspot-up" not in wifi.calls and "reconnect HomeNet" in wifi.calls
            assert ob.attempt is not None and ob.attempt.source == "boot"

    run(scenario())


def test_lost_network_goes_offline_then_the_hotspot_returns_for_re_pairing(
        tmp_path: Path) -> None:
    cfg = config(tmp_path)
    st = store(cfg)
    st.commit_pairing(HOME, CLOUD)

    async def scenario() -> None:
        wifi = FakeWifi({"HomeNet": "supersecret"})
        async with machine(cfg, st, wifi) as ob:
            await until(ob, settled(ob, State.ONLINE))
            wifi.drop_link()
            await until(ob, lambda: ob.state == State.OFFLINE)
            # After offline_grace the hotspot comes back, for re-pairing by the owner only:
            # pairing stays closed until a short press (or to a signed-in admin).
            await until(ob, lambda: ob.repairable and wifi.hotspot)
            assert not ob.pairing_open
            press_button(ob)
            assert ob.pairing_open
            assert st.state.paired, "going offline forgets nothing"
            assert not ob._link_tasks, "a link task that ended is let go"

    run(scenario())


def test_link_back_while_offline_reconnects_the_cloud(tmp_path: Path) -> None:
    cfg = config(tmp_path, offline_grace=3600.0)
    st = store(cfg)
    st.commit_pairing(HOME, CLOUD)

    async def scenario() -> None:
        wifi, cloud = FakeWifi({"HomeNet": "supersecret"}), StubCloud()
        async with machine(cfg, st, wifi, cloud) as ob:
            await until(ob, settled(ob, State.ONLINE))
            wifi.drop_link()
            await until(ob, lambda: ob.state == State.OFFLINE)
            cloud.connected = None
            wifi.restore_link("HomeNet")
            await until(ob, settled(ob, State.ONLINE))
            assert cloud.connected == CLOUD and ob.attempt is not None
            assert ob.attempt.source == "reconnect"

    run(scenario())


def test_reset_forgets_the_network_and_reopens_pairing(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    st = store(cfg)
    st.commit_pairing(HOME, CLOUD)

    async def scenario() -> None:
        wifi = FakeWifi({"HomeNet": "supersecret"})
        async with machine(cfg, st, wifi) as ob:
            await until(ob, settled(ob, State.ONLINE))
            st.reset()
            await ob.reset()
            assert ob.state == State.UNPAIRED and ob.pairing_open and wifi.hotspot
            assert "forget-clients" in wifi.calls and not wifi.profiles
            assert ob.last_failure is None and ob.attempt is None

    run(scenario())


def test_a_failed_re_pairing_puts_the_working_network_back(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    st = store(cfg)
    st.commit_pairing(HOME, CLOUD)

    async def scenario() -> None:
        wifi = FakeWifi({"HomeNet": "supersecret", "Office": "office-pass"})
        async with machine(cfg, st, wifi) as ob:
            await until(ob, settled(ob, State.ONLINE))
            wifi.drop_link()
            await until(ob, lambda: ob.repairable and wifi.hotspot)
            press_button(ob)
            await PairingService(ob, cfg.cloud).submit(
                {**PAIR, "ssid": "Office", "psk": "not-the-password"}, "test")
            await until(ob, lambda: ob.last_failure is not None and not ob.busy)
            assert ob.last_failure is not None and ob.last_failure.code == "wrong-password"
            assert st.state.wifi == HOME and st.state.cloud == CLOUD
            assert "Office" not in wifi.profiles
            assert "reconnect HomeNet" in wifi.calls[wifi.calls.index("connect Office"):]

    run(scenario())


def test_wifi_first_then_cloud_keeps_the_network(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    st = store(cfg)

    async def scenario() -> None:
        wifi = FakeWifi({"HomeNet": "supersecret"})
        async with machine(cfg, st, wifi) as ob:
            service = PairingService(ob, cfg.cloud)
            progress = await service.submit({"ssid": "HomeNet", "psk": "supersecret"},
                                            "ble-improv", allow_wifi_only=True)
            assert progress.attempt is not None and not progress.attempt.cloud
            await until(ob, lambda: settled(ob, State.UNPAIRED)() and ob.on_wifi)
            assert ob.progress().network == "wifi" and not wifi.hotspot and ob.pairing_open
            assert st.state.wifi == HOME and st.state.cloud is None
            await service.submit(CLOUD_ONLY, "http")
            await until(ob, settled(ob, State.ONLINE))
            assert st.state.wifi == HOME and st.state.cloud == CLOUD

    run(scenario())


def test_front_door_checks_busy_then_open_then_valid(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    st = store(cfg)

    async def scenario() -> None:
        wifi, cloud = FakeWifi({"HomeNet": "supersecret"}), StubCloud()
        async with machine(cfg, st, wifi, cloud) as ob:
            service = PairingService(ob, cfg.cloud)
            with pytest.raises(InvalidRequest):  # open, not busy: validation decides
                await service.submit({**PAIR, "psk": "short"}, "test")
            assert ob.state == State.UNPAIRED and ob.attempt is None, "a refusal changes nothing"
            await service.submit(PAIR, "test")
            assert ob.busy
            with pytest.raises(PairingBusy):  # during an attempt, even with bad fields
                await service.submit({**PAIR, "psk": "short"}, "test")
            await until(ob, settled(ob, State.ONLINE))
            with pytest.raises(NotInPairingMode):  # paired, with bad fields too
                await service.submit({**PAIR, "psk": "short"}, "test")
            assert dict(service.refusals) == {"invalid": 1, "busy": 1,
                                              "not-in-pairing-mode": 1}

    run(scenario())


def test_events_a_state_does_not_expect_are_ignored(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    st = store(cfg)

    async def scenario() -> None:
        async with machine(cfg, st, FakeWifi()) as ob:
            assert (State.UNPAIRED, Event.SUCCEEDED) not in TRANSITIONS
            assert await ob._fire(Event.SUCCEEDED) == State.UNPAIRED
            assert ob.state == State.UNPAIRED

    run(scenario())


def test_ethernet_only_hub_pairs_cloud_only(tmp_path: Path) -> None:
    cfg = config(tmp_path, enabled=False)
    st = store(cfg)

    async def scenario() -> None:
        async with machine(cfg, st, None) as ob:
            assert ob.state == State.UNPAIRED and ob.pairing_open
            assert not ob.progress().wifi and not ob.progress().hotspot
            service = PairingService(ob, cfg.cloud, wifi_enabled=False)
            await service.submit(PAIR, "http")  # Wi-Fi fields are ignored on such a hub
            await until(ob, settled(ob, State.ONLINE))
            assert st.state.cloud == CLOUD and st.state.wifi is None

    run(scenario())


def test_periodic_retry_waits_while_someone_uses_the_portal(tmp_path: Path) -> None:
    """A person typing in the hotspot's panel keeps the hotspot: the periodic client retry
    (which takes the hotspot down) waits until the portal has been quiet for a whole
    ``retry_interval``. Time is a FakeClock: no test waits for the interval."""

    async def scenario() -> None:
        wifi = FakeWifi({})  # the saved network is out of range at boot
        async with offline_on_a_fake_clock(tmp_path, wifi) as (ob, clock):
            await grace_over(clock)
            assert wifi.hotspot and ob.repairable
            wifi.aps["HomeNet"] = "supersecret"  # the network is back: a retry would succeed
            mark = len(wifi.calls)
            clock.advance(30.0)
            ob.note_activity()  # someone is in the panel half-way through the interval
            clock.advance(30.0)  # the interval is over, but the portal was used 30 s ago
            # The loop looks: it waits for the next interval (a third sleep) or, wrongly,
            # retries at once (busy).
            await first_of(clock.sleeps(3), until(ob, lambda: ob.busy))
            assert ob.state == State.OFFLINE and wifi.hotspot
            assert wifi.calls[mark:] == [], "the hotspot must stay while the portal is in use"
            clock.advance(60.0)  # a whole quiet interval: now the retry runs
            await until(ob, settled(ob, State.ONLINE))
            assert wifi.calls[mark:mark + 2] == ["hotspot-down", "scan"]
            assert ob.attempt is not None and ob.attempt.source == "retry"

    run(scenario())


def test_offline_hub_retries_its_network_every_interval_without_anyone_on_the_portal(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        wifi = FakeWifi({})
        async with offline_on_a_fake_clock(tmp_path, wifi) as (ob, clock):
            assert clock.slept == [30.0] and not wifi.hotspot  # the grace: no hotspot yet
            await grace_over(clock)
            # The first retry after a jittered half to all of the interval.
            assert clock.slept[0] == 30.0 and 30.0 <= clock.slept[1] <= 60.0 and wifi.hotspot
            mark = len(wifi.calls)
            clock.advance(60.0)  # still out of range: hotspot down, scan, hotspot back
            # then it waits for the next interval, or, wrongly, settles elsewhere
            await first_of(clock.sleeps(3),
                           until(ob, lambda: ob.state != State.OFFLINE and not ob.busy))
            assert wifi.calls[mark:] == ["hotspot-down", "scan", "hotspot-up"]
            assert ob.state == State.OFFLINE and wifi.hotspot

    run(scenario())


class WifiWhoseScanFails(FakeWifi):
    """NetworkManager failing the scan (a D-Bus error) for the first ``failures``."""

    def __init__(self, failures: int) -> None:
        super().__init__({})
        self.failures = failures

    async def scan(self, ssid: str | None = None) -> None:
        await super().scan(ssid)
        if self.failures:
            self.failures -= 1
            raise RuntimeError("org.freedesktop.NetworkManager.Device.NotAllowed")


def test_a_periodic_retry_that_fails_brings_the_hotspot_back_and_the_retries_go_on(
        tmp_path: Path) -> None:
    """Before: the failed scan ended the offline task with the hotspot down: no way in to
    re-pair and no more retries, until the hub was restarted."""

    async def scenario() -> None:
        wifi = WifiWhoseScanFails(failures=0)
        async with offline_on_a_fake_clock(tmp_path, wifi) as (ob, clock):
            await grace_over(clock)
            assert wifi.hotspot
            mark = len(wifi.calls)
            wifi.failures = 1
            clock.advance(60.0)  # the scan fails: the hotspot comes back all the same
            await clock.sleeps(3)
            assert wifi.calls[mark:] == ["hotspot-down", "scan", "hotspot-up"]
            assert ob.state == State.OFFLINE and wifi.hotspot and ob.repairable
            mark = len(wifi.calls)
            wifi.aps["HomeNet"] = "supersecret"  # the next round finds the network
            clock.advance(60.0)
            await until(ob, lambda: ob.state == State.ONLINE)
            assert wifi.calls[mark:mark + 2] == ["hotspot-down", "scan"]

    run(scenario())


class WifiWhoseHotspotFails(FakeWifi):
    """NetworkManager refusing to start the hotspot for the first ``failures`` times."""

    def __init__(self, failures: int) -> None:
        super().__init__({})
        self.failures = failures

    async def start_hotspot(self) -> None:
        if self.failures:
            self.failures -= 1
            self.calls.append("hotspot-refused")
            raise RuntimeError("org.freedesktop.NetworkManager.Device.NotAllowed")
        await super().start_hotspot()


def test_a_hotspot_that_fails_to_come_back_is_retried_with_the_network(
        tmp_path: Path) -> None:
    """Before: the failure ended the offline task after the grace period: no hotspot and
    no more retries until the hub was restarted."""

    async def scenario() -> None:
        wifi = WifiWhoseHotspotFails(failures=1)
        async with offline_on_a_fake_clock(tmp_path, wifi) as (ob, clock):
            await grace_over(clock)  # the hotspot is refused
            assert "hotspot-refused" in wifi.calls and not wifi.hotspot
            mark = len(wifi.calls)
            clock.advance(60.0)  # the next retry: still out of range, the hotspot comes up
            await clock.sleeps(3)
            assert wifi.calls[mark:] == ["hotspot-down", "scan", "hotspot-up"]
            assert ob.state == State.OFFLINE and wifi.hotspot and ob.repairable

    run(scenario())


def test_a_hotspot_refused_after_a_failed_retry_leaves_the_retries_running(
        tmp_path: Path) -> None:
    """Entering offline after a failed retry brings the hotspot back at once; before, a
    refusal there came before the retries were scheduled, and there were none."""

    async def scenario() -> None:
        wifi, cloud = WifiWhoseHotspotFails(failures=0), StubCloud()
        async with offline_on_a_fake_clock(tmp_path, wifi, cloud) as (ob, clock):
            await grace_over(clock)
            assert wifi.hotspot
            wifi.aps["HomeNet"] = "supersecret"  # back in range, but the cloud refuses
            cloud.next_failure = StepResult(False, Failure.BROKER_REFUSED, "bad token")
            wifi.failures = 1  # and the hotspot that should come back at once is refused
            clock.advance(60.0)
            await until(ob, lambda: ob.state == State.OFFLINE and not ob.busy
                        and ob.attempt is not None and ob.attempt.source == "retry")
            assert not wifi.hotspot and wifi.calls[-1] == "hotspot-refused"
            first = ob.attempt
            await clock.sleeps(3)  # the next retry is scheduled all the same
            clock.advance(60.0)
            await until(ob, lambda: ob.attempt is not first and not ob.busy and wifi.hotspot)
            assert ob.state == State.OFFLINE and ob.repairable

    run(scenario())


class FailingStore(StateStore):
    """A state store whose commit of a pairing raises ``exc``: a full card (OSError), or
    a bug (anything else)."""

    def __init__(self, path: Path, exc: Exception) -> None:
        super().__init__(path)
        self.exc = exc

    def commit_pairing(self, wifi: WifiCredentials | None, cloud: CloudCredentials) -> Any:
        raise self.exc


def failing_store(cfg: Config, exc: Exception) -> FailingStore:
    s = FailingStore(cfg.state_dir, exc)
    s.open(device_id="dc-a6-32-12-34-56", mac="dc:a6:32:12:34:56")
    return s


def test_credentials_the_store_cannot_write_end_the_attempt_as_storage_failed(
        tmp_path: Path) -> None:
    cfg = config(tmp_path)
    st = failing_store(cfg, OSError(errno.ENOSPC, "No space left on device"))

    async def scenario() -> None:
        wifi, cloud = FakeWifi({"HomeNet": "supersecret"}), StubCloud()
        async with machine(cfg, st, wifi, cloud) as ob:
            await ob.begin(PairingRequest(cloud=CLOUD, wifi=HOME))
            await until(ob, lambda: ob.last_failure is not None and not ob.busy)
            assert ob.last_failure is not None
            assert (ob.last_failure.code, ob.last_failure.reason) == (
                "storage-failed", STORAGE_FAILED_REASON)
            assert ob.state == State.UNPAIRED and wifi.hotspot and ob.pairing_open
            assert cloud.connected is None and "HomeNet" not in wifi.profiles
            assert not st.state.paired

    run(scenario())


@pytest.mark.parametrize("paired", [False, True])
def test_an_outcome_that_crashes_while_applied_still_ends_the_attempt(
        tmp_path: Path, paired: bool) -> None:
    """The last resort: a bug while an attempt's outcome is applied (here the store's
    commit raising something unexpected) ends the attempt as an internal error where a
    failure would have: unpaired, or offline with the old credentials of a paired hub."""
    cfg = config(tmp_path, offline_grace=3600.0)
    st = failing_store(cfg, RuntimeError("a bug"))
    if paired:
        StateStore.commit_pairing(st, HOME, CLOUD)

    async def scenario() -> None:
        wifi, cloud = FakeWifi({"Office": "officepass"}), StubCloud()
        async with machine(cfg, st, wifi, cloud) as ob:
            if paired:  # offline (its network gone), the hotspot back for re-pairing
                await until(ob, lambda: ob.state == State.OFFLINE and not ob.busy)
                assert await ob.reopen_hotspot()
                press_button(ob)
                await until(ob, lambda: ob.pairing_open)
            await ob.begin(PairingRequest(cloud=CLOUD, wifi=WifiCredentials("Office",
                                                                            "officepass")))
            attempt = ob.attempt
            await until(ob, lambda: ob.last_failure is not None and not ob.busy)
            assert ob.last_failure is not None and attempt is not None
            assert (ob.last_failure.code, ob.last_failure.reason) == (
                "wifi-failed", CRASHED.reason)
            assert ob.last_failure.attempt == attempt.id and ob.last_failure.at > 0
            assert ob.state == (State.OFFLINE if paired else State.UNPAIRED)
            assert cloud.connected is None and wifi.hotspot
            assert st.state.paired == paired

    run(scenario())


class WifiThatCannotSee(FakeWifi):
    """NetworkManager failing to say whether a network is in range."""

    def visible(self, ssid: str) -> bool:
        raise RuntimeError("org.freedesktop.DBus.Error.NoReply")


def test_a_crash_whose_undo_fails_too_still_ends_the_attempt(tmp_path: Path) -> None:
    """The fallback after the fallback: the undo of the crashed success raises as well
    (asking whether the old network is in range); the attempt still ends offline, the
    cloud link stopped, the internal error shown."""
    cfg = config(tmp_path, offline_grace=3600.0)
    st = failing_store(cfg, RuntimeError("a bug"))
    StateStore.commit_pairing(st, HOME, CLOUD)

    async def scenario() -> None:
        wifi, cloud = WifiThatCannotSee({"Office": "officepass"}), StubCloud()
        async with machine(cfg, st, wifi, cloud) as ob:
            await until(ob, lambda: ob.state == State.OFFLINE and not ob.busy)
            assert await ob.reopen_hotspot()
            press_button(ob)
            await ob.begin(PairingRequest(cloud=CLOUD, wifi=WifiCredentials("Office",
                                                                            "officepass")))
            await until(ob, lambda: ob.last_failure is not None and not ob.busy)
            assert ob.last_failure is not None and ob.last_failure.reason == CRASHED.reason
            assert ob.state == State.OFFLINE and cloud.connected is None and wifi.hotspot
            assert st.state.paired and st.state.wifi == HOME

    run(scenario())


def test_a_wifi_first_hub_whose_crash_and_undo_both_fail_lands_where_a_failure_would(
        tmp_path: Path) -> None:
    """The fallback after the fallback on a hub that joined Wi-Fi but has no account yet:
    as after any failure of such a hub, it is offline with its saved network (whose
    retries bring it back; unpaired, nothing would retry it) and its hotspot is back at
    once with the reason, not after ``offline_grace``: a hub without an account has no
    cloud duty to wait for."""
    cfg = config(tmp_path, offline_grace=3600.0)
    st = failing_store(cfg, RuntimeError("a bug"))
    st.commit_wifi(HOME)

    async def scenario() -> None:
        wifi = WifiThatCannotSee({"HomeNet": "supersecret", "Office": "officepass"})
        cloud = StubCloud()
        async with machine(cfg, st, wifi, cloud) as ob:
            await until(ob, lambda: settled(ob, State.UNPAIRED)()
                        and ob.progress().network == "wifi")
            await ob.begin(PairingRequest(cloud=CLOUD, wifi=WifiCredentials("Office",
                                                                            "officepass")))
            await until(ob, lambda: ob.last_failure is not None and not ob.busy)
            assert ob.last_failure is not None and ob.last_failure.reason == CRASHED.reason
            assert ob.state == State.OFFLINE and cloud.connected is None
            assert wifi.hotspot and ob.pairing_open
            assert st.state.wifi == HOME and not st.state.paired
            assert "Office" not in wifi.profiles

    run(scenario())


def test_an_ethernet_hub_that_cannot_read_its_uplink_postpones_its_cloud_retry(
        tmp_path: Path) -> None:
    """NetworkManager failing the carrier check is not an uplink: the retry waits."""
    cfg = config(tmp_path, offline_grace=3600.0, retry_interval=60.0)
    st = store(cfg)
    st.commit_pairing(None, CLOUD)
    clock = FakeClock()
    cloud = StubCloud()
    cloud.next_failure = StepResult(False, Failure.BROKER_UNREACHABLE, "broker down")

    class UnreadableCarrier(FakeWifi):
        async def ethernet_connected(self) -> bool:
            if self.unreadable:
                raise RuntimeError("org.freedesktop.DBus.Error.NoReply")
            return True

    wifi = UnreadableCarrier(ethernet=True)
    wifi.unreadable = False  # type: ignore[attr-defined]

    async def scenario() -> None:
        ob = Onboarding(cfg, st, wifi, cloud, clock=clock, sleep=clock.sleep,
                        rng=random.Random(7))
        await ob.start()
        try:
            await until(ob, settled(ob, State.OFFLINE))
            await clock.sleeps(1)
            wifi.unreadable = True  # type: ignore[attr-defined]
            clock.advance(clock.slept[-1])
            await clock.sleeps(2)  # the loop waits again: it asked nothing of the cloud
            assert len(cloud.timeouts) == 1 and ob.state == State.OFFLINE
        finally:
            await ob.stop()

    run(scenario())


def test_a_failed_cloud_step_on_the_hubs_own_network_touches_no_network(
        tmp_path: Path) -> None:
    """Wi-Fi first, then a cloud account that fails: nothing was applied, so nothing is
    forgotten and there is no network to go back to."""
    cfg = config(tmp_path)
    st = store(cfg)

    async def scenario() -> None:
        wifi, cloud = FakeWifi({"HomeNet": "supersecret"}), StubCloud()
        async with machine(cfg, st, wifi, cloud) as ob:
            await ob.begin(PairingRequest(cloud=None, wifi=HOME))
            await until(ob, lambda: ob.state == State.UNPAIRED and not ob.busy and ob.on_wifi)
            mark = len(wifi.calls)
            cloud.next_failure = StepResult(False, Failure.BROKER_REFUSED, "bad token")
            await ob.begin(PairingRequest(cloud=CLOUD, wifi=None))
            await until(ob, lambda: ob.last_failure is not None and not ob.busy)
            assert ob.state == State.UNPAIRED and ob.on_wifi and not wifi.hotspot
            assert not [c for c in wifi.calls[mark:] if c.startswith(("forget", "reconnect"))]

    run(scenario())


def test_a_new_network_that_fails_when_the_old_one_does_not_come_back_goes_offline(
        tmp_path: Path) -> None:
    """A hub on its Wi-Fi (no account yet) asked to move to another network that refuses
    the passphrase: the old network is tried again; when that fails too, the hub is off
    its saved network: offline, with the hotspot."""
    cfg = config(tmp_path, offline_grace=3600.0)
    st = store(cfg)

    async def scenario() -> None:
        wifi = FakeWifi({"HomeNet": "supersecret", "Office": "officepass"})
        async with machine(cfg, st, wifi, StubCloud()) as ob:
            await ob.begin(PairingRequest(cloud=None, wifi=HOME))
            await until(ob, lambda: ob.state == State.UNPAIRED and not ob.busy and ob.on_wifi)
            wifi.aps["HomeNet"] = "changed-by-the-owner"  # the way back fails too
            await ob.begin(PairingRequest(cloud=None,
                                          wifi=WifiCredentials("Office", "wrong-pass")))
            await until(ob, lambda: ob.last_failure is not None and not ob.busy)
            assert "reconnect HomeNet" in wifi.calls
            assert ob.state == State.OFFLINE and wifi.hotspot

    run(scenario())


def test_no_passphrase_or_token_reaches_the_log_of_a_pairing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """What is logged about an attempt, its request and the committed state is the redacted
    form: the network's name and the account's domain, never the passphrase or the token
    (the journal of a real hub is read by whoever has the box)."""
    cfg = config(tmp_path)
    st = store(cfg)
    secret_psk, secret_token = "pass-phrase-9f3a", "token-7c41e2"
    fields = {**PAIR, "psk": secret_psk, "token": secret_token}

    async def scenario() -> None:
        wifi = FakeWifi({"HomeNet": secret_psk, "Office": "office-pass"})
        async with machine(cfg, st, wifi) as ob:
            service = PairingService(ob, cfg.cloud)
            await service.submit({**fields, "ssid": "Office"}, "test")  # wrong passphrase
            await until(ob, lambda: ob.last_failure is not None and ob.pairing_open)
            await service.submit(fields, "test")
            await until(ob, settled(ob, State.ONLINE))
            assert st.state.wifi is not None and st.state.wifi.psk == secret_psk

    with caplog.at_level(logging.DEBUG):
        run(scenario())
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "paired: " in text and "u***@example.com" in text and "HomeNet" in text
    assert secret_psk not in text and secret_token not in text
    assert "user@example.com" not in text  # the account is shown as u***@example.com


# ---- the attempt, its record and its failure ------------------------------------------------

def test_an_attempt_is_recorded_with_its_steps_and_uses_the_connect_timeout(
        tmp_path: Path) -> None:
    cfg = config(tmp_path, connect_timeout=7.5)
    st = store(cfg)
    seen: list[tuple[State, str | None, str]] = []

    async def scenario() -> None:
        wifi, cloud = FakeWifi({"HomeNet": "supersecret"}), StubCloud()
        cloud.gate = asyncio.Event()
        async with machine(cfg, st, wifi, cloud) as ob:
            ob.subscribe(lambda state, p: seen.append((state, p.step, p.state)))
            before = time.time()
            await PairingService(ob, cfg.cloud).submit(PAIR, "test")
            await until(ob, lambda: ob.step == "cloud")
            assert ob.progress().step == "cloud" and ob.busy and not ob.pairing_open
            attempt = ob.attempt
            assert attempt is not None and len(attempt.id) == 8
            int(attempt.id, 16)  # hex
            assert (attempt.source, attempt.ssid, attempt.cloud) == ("test", "HomeNet", True)
            assert before <= attempt.started <= time.time()
            cloud.gate.set()
            await until(ob, settled(ob, State.ONLINE))
            assert wifi.timeouts == [7.5] and cloud.timeouts == [7.5]
            assert cloud.typed_in == [True]  # a person's account: a closed port is an answer
            assert ob.step is None and ob.progress().step is None
    run(scenario())
    assert (State.CONNECTING, None, "connecting") in seen
    assert seen[-1][0] == State.ONLINE


def test_a_failure_says_what_when_and_which_attempt(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    st = store(cfg)

    async def scenario() -> None:
        wifi = FakeWifi({"HomeNet": "supersecret"})
        async with machine(cfg, st, wifi) as ob:
            before = time.time()
            await PairingService(ob, cfg.cloud).submit({**PAIR, "ssid": "Elsewhere"}, "test")
            await until(ob, lambda: ob.last_failure is not None and ob.pairing_open)
            failure = ob.last_failure
            assert failure is not None and ob.attempt is not None
            assert failure.code == "network-not-found" and "'Elsewhere'" in failure.reason
            assert failure.attempt == ob.attempt.id and before <= failure.at <= time.time()
            assert ob.progress().last_failure == failure  # what the portal and apps read
            # The next attempt starts with a clean slate.
            await PairingService(ob, cfg.cloud).submit(PAIR, "test")
            assert ob.last_failure is None
            await until(ob, settled(ob, State.ONLINE))
            assert ob.last_failure is None

    run(scenario())


class CrashingCloud(StubCloud):
    async def connect(self, creds: CloudCredentials, timeout: float, *,
                      typed_in: bool = False) -> StepResult:
        raise RuntimeError("the cloud step broke")


def test_a_crashed_attempt_ends_as_a_failure_not_a_hang(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    st = store(cfg)

    async def scenario() -> None:
        wifi = FakeWifi({"HomeNet": "supersecret"})
        async with machine(cfg, st, wifi, CrashingCloud()) as ob:
            await PairingService(ob, cfg.cloud).submit(PAIR, "test")
            await until(ob, lambda: ob.last_failure is not None and ob.pairing_open)
            assert ob.last_failure is not None
            assert ob.last_failure.code == Failure.WIFI_FAILED
            # Said for a user; the exception's own text stays in the log.
            assert ob.last_failure.reason.startswith("The hub hit an internal error")
            assert "the cloud step broke" not in ob.last_failure.reason
            assert ob.state == State.UNPAIRED and not st.state.paired

    run(scenario())


def test_the_machine_refuses_attempts_it_cannot_take(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    st = store(cfg)

    async def scenario() -> None:
        cloud = StubCloud()
        cloud.gate = asyncio.Event()
        async with machine(cfg, st, FakeWifi({"HomeNet": "supersecret"}), cloud) as ob:
            request = PairingRequest(cloud=CLOUD, wifi=HOME)
            await ob.begin(request)
            with pytest.raises(PairingBusy) as busy:
                await ob.begin(request)
            assert str(busy.value) == BUSY_MESSAGE
            cloud.gate.set()
            await until(ob, settled(ob, State.ONLINE))
            with pytest.raises(NotInPairingMode, match="already paired"):
                await ob.begin(request)

    run(scenario())


class SlowEthernet(FakeWifi):
    """A Wi-Fi hub on Ethernet whose carrier check (D-Bus calls) takes until released."""

    def __init__(self, aps: dict[str, str]) -> None:
        super().__init__(aps, ethernet=True)
        self.holding = False
        self.asked = asyncio.Event()
        self.release = asyncio.Event()

    async def ethernet_connected(self) -> bool:
        if self.holding:
            self.asked.set()
            await self.release.wait()
        return await super().ethernet_connected()


def test_a_request_that_waited_for_the_uplink_is_refused_busy_if_another_began(
        tmp_path: Path) -> None:
    """A cloud-only request awaits the uplink's state between its checks and the attempt;
    a request that began meanwhile makes it a refusal with the front door's code (409
    busy), not an error (before: a RuntimeError, an HTTP 500 on the portal)."""
    cfg = config(tmp_path)
    st = store(cfg)

    async def scenario() -> None:
        cloud = StubCloud()
        cloud.gate = asyncio.Event()
        wifi = SlowEthernet({"HomeNet": "supersecret"})
        async with machine(cfg, st, wifi, cloud) as ob:
            await until(ob, settled(ob, State.UNPAIRED))
            wifi.holding = True
            service = PairingService(ob, cfg.cloud)
            first = asyncio.create_task(service.submit(CLOUD_ONLY, "portal"))
            await asyncio.wait_for(wifi.asked.wait(), 5)
            # the first request is waiting on the uplink: this one gets in before it
            await service.submit(PAIR, "ble-secure")
            assert ob.state == State.CONNECTING
            wifi.release.set()
            with pytest.raises(PairingBusy):
                await asyncio.wait_for(first, 5)
            assert service.refusals["busy"] == 1 and service.accepted == 1
            cloud.gate.set()
            await until(ob, settled(ob, State.ONLINE))
            assert ob.attempt is not None and ob.attempt.source == "ble-secure"

    run(scenario())


def test_wifi_first_needs_a_hub_with_wifi(tmp_path: Path) -> None:
    cfg = config(tmp_path, enabled=False)
    st = store(cfg)

    async def scenario() -> None:
        async with machine(cfg, st, None) as ob:
            with pytest.raises(InvalidRequest) as refused:
                await ob.begin(PairingRequest(cloud=None, wifi=HOME))
            assert str(refused.value) == ("ssid: a Wi-Fi-only pairing request needs a hub "
                                          "with Wi-Fi") and refused.value.field == "ssid"
            assert ob.state == State.UNPAIRED and ob.attempt is None
            assert ob.networks() == []

    run(scenario())


def test_a_wifi_only_request_on_a_paired_hub_keeps_its_account(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    st = store(cfg)
    st.commit_pairing(HOME, CLOUD)

    async def scenario() -> None:
        wifi, cloud = FakeWifi({"Office": "office-pass"}), StubCloud()
        async with machine(cfg, st, wifi, cloud) as ob:
            await until(ob, lambda: ob.repairable and wifi.hotspot)  # HomeNet is gone
            press_button(ob)  # Improv's authorization: the window is open
            assert ob.networks() == [{"ssid": "Office", "signal": 70, "security": "wpa2"}]
            await ob.begin(PairingRequest(cloud=None, wifi=WifiCredentials("Office",
                                                                           "office-pass")))
            await until(ob, settled(ob, State.ONLINE))
            assert cloud.connected == CLOUD and st.state.wifi == WifiCredentials(
                "Office", "office-pass")
            assert ob.attempt is not None and ob.attempt.cloud

    run(scenario())


def test_with_ethernet_up_wifi_credentials_are_not_applied(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    st = store(cfg)

    async def scenario() -> None:
        wifi = FakeWifi({"HomeNet": "supersecret"})
        async with machine(cfg, st, wifi) as ob:
            wifi.ethernet = True  # the cable went in after boot
            await PairingService(ob, cfg.cloud).submit(PAIR, "test")
            await until(ob, settled(ob, State.ONLINE))
            assert not [c for c in wifi.calls if c.startswith("connect")]
            assert st.state.paired and st.state.wifi is None, "an unproven network is not kept"

    run(scenario())


# ---- links, resets and the button --------------------------------------------------------------

def test_a_reset_during_an_attempt_cancels_it(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    st = store(cfg)

    async def scenario() -> None:
        cloud = StubCloud()
        cloud.gate = asyncio.Event()
        wifi = FakeWifi({"HomeNet": "supersecret"})
        async with machine(cfg, st, wifi, cloud) as ob:
            await PairingService(ob, cfg.cloud).submit(PAIR, "test")
            await until(ob, lambda: ob.step == "cloud")
            task = ob._attempt_task
            st.reset()
            await ob.reset()
            assert task is not None and task.cancelled()
            assert ob.state == State.UNPAIRED and ob.pairing_open and wifi.hotspot
            assert ob.attempt is None and ob.last_failure is None and not ob.on_wifi
            assert ob.offline_since is None
            cloud.gate.set()
            assert not st.state.paired, "the cancelled attempt committed nothing"

    run(scenario())


def test_the_button_brings_the_hotspot_back_only_while_offline(tmp_path: Path) -> None:
    cfg = config(tmp_path, offline_grace=3600.0)
    st = store(cfg)
    st.commit_pairing(HOME, CLOUD)
    changes: list[bool] = []

    async def scenario() -> None:
        wifi = FakeWifi({"HomeNet": "supersecret"})
        async with machine(cfg, st, wifi) as ob:
            await until(ob, settled(ob, State.ONLINE))
            assert await ob.reopen_hotspot() is False and not wifi.hotspot  # online: nothing
            ob.subscribe(lambda state, p: changes.append(p.hotspot))
            wifi.drop_link()
            await until(ob, lambda: ob.state == State.OFFLINE and not ob.busy)
            assert not wifi.hotspot and not ob.pairing_open  # within the grace period
            assert await ob.reopen_hotspot() is True
            assert wifi.hotspot and ob.repairable and changes[-1] is True
            # Up for its owner: open to pairing only with the window the press opens
            # (the daemon's part) or to a signed-in admin.
            assert not ob.pairing_open
            assert await ob.reopen_hotspot() is True  # again: still up, nothing new
            assert wifi.calls.count("hotspot-up") == 1

    run(scenario())


def test_the_button_on_an_ethernet_only_hub_changes_nothing(tmp_path: Path) -> None:
    cfg = config(tmp_path, enabled=False)
    st = store(cfg)

    async def scenario() -> None:
        async with machine(cfg, st, None) as ob:
            assert await ob.reopen_hotspot() is False
            assert ob.state == State.UNPAIRED

    run(scenario())


def test_a_link_that_drops_and_returns_at_once_changes_nothing(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    st = store(cfg)
    st.commit_pairing(HOME, CLOUD)

    async def scenario() -> None:
        wifi = FakeWifi({"HomeNet": "supersecret"})
        async with machine(cfg, st, wifi) as ob:
            await until(ob, settled(ob, State.ONLINE))
            wifi.drop_link()
            wifi.restore_link("HomeNet")  # before the loop ran the loss: still online
            await ob.wait_for(lambda: True, 1.0)
            await asyncio.sleep(0)  # let the link-down task run (and find the link back)
            await asyncio.sleep(0)
            assert ob.state == State.ONLINE

    run(scenario())


def test_link_changes_during_an_attempt_are_the_attempts_business(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    st = store(cfg)

    async def scenario() -> None:
        cloud = StubCloud()
        cloud.gate = asyncio.Event()
        wifi = FakeWifi({"HomeNet": "supersecret"})
        async with machine(cfg, st, wifi, cloud) as ob:
            await PairingService(ob, cfg.cloud).submit(PAIR, "test")
            await until(ob, lambda: ob.step == "cloud")
            wifi.drop_link()
            assert ob.state == State.CONNECTING and not ob.on_wifi
            wifi.restore_link("HomeNet")
            cloud.gate.set()
            await until(ob, settled(ob, State.ONLINE))

    run(scenario())


def test_a_wifi_only_hub_that_loses_and_regains_its_network(tmp_path: Path) -> None:
    cfg = config(tmp_path, offline_grace=3600.0)
    st = store(cfg)

    async def scenario() -> None:
        wifi, cloud = FakeWifi({"HomeNet": "supersecret"}), StubCloud()
        async with machine(cfg, st, wifi, cloud) as ob:
            await ob.begin(PairingRequest(cloud=None, wifi=HOME, source="ble-improv"))
            await until(ob, lambda: settled(ob, State.UNPAIRED)() and ob.on_wifi)
            wifi.drop_link()
            await until(ob, lambda: ob.state == State.OFFLINE)
            assert ob.progress().network is None and st.state.wifi == HOME
            wifi.restore_link("HomeNet")
            await until(ob, lambda: settled(ob, State.UNPAIRED)() and ob.on_wifi)
            assert ob.attempt is not None and ob.attempt.source == "reconnect"
            assert cloud.connected is None and not st.state.paired
            assert "reconnect HomeNet" not in wifi.calls[1:], "the link is back by itself"

    run(scenario())


def test_an_unpaired_hub_whose_saved_network_fails_shows_the_hotspot_at_once(
        tmp_path: Path) -> None:
    cfg = config(tmp_path, offline_grace=3600.0)
    st = store(cfg)
    st.commit_wifi(HOME)

    async def scenario() -> None:
        wifi = FakeWifi({})
        async with machine(cfg, st, wifi) as ob:
            await until(ob, lambda: ob.state == State.OFFLINE and not ob.busy)
            assert wifi.hotspot and ob.pairing_open, "no grace period: nothing to wait for"
            assert ob.last_failure is not None and ob.last_failure.code == "network-not-found"
            assert st.state.wifi == HOME

    run(scenario())


def test_a_hidden_saved_network_is_scanned_for_by_name(tmp_path: Path) -> None:
    hidden = WifiCredentials("Secret", "supersecret", hidden=True)

    async def scenario() -> None:
        wifi = FakeWifi({})
        async with offline_on_a_fake_clock(tmp_path, wifi, saved=hidden) as (ob, clock):
            await grace_over(clock)
            wifi.aps["Secret"] = "supersecret"
            clock.advance(60.0)
            await until(ob, settled(ob, State.ONLINE))
            assert wifi.scans[-1] == "Secret"
            assert wifi.calls[-1] == "reconnect Secret"

    run(scenario())


def test_offline_since_marks_when_the_hub_went_offline(tmp_path: Path) -> None:
    cfg = config(tmp_path, offline_grace=3600.0)
    st = store(cfg)
    st.commit_pairing(HOME, CLOUD)
    clock = FakeClock(5000.0)

    async def scenario() -> None:
        wifi = FakeWifi({"HomeNet": "supersecret"})
        ob = Onboarding(cfg, st, wifi, StubCloud(), clock=clock, sleep=clock.sleep)
        await ob.start()
        try:
            await until(ob, settled(ob, State.ONLINE))
            assert ob.offline_since is None
            wifi.drop_link()
            await until(ob, lambda: ob.state == State.OFFLINE and not ob.busy)
            assert ob.offline_since == 5000.0
            clock.advance(10.0)
            wifi.restore_link("HomeNet")
            await until(ob, settled(ob, State.ONLINE))
            assert ob.offline_since is None
        finally:
            await ob.stop()

    run(scenario())


# ---- details a user would notice ---------------------------------------------------------------

class JoiningWifi(FakeWifi):
    """connect() says it has begun (the hotspot is down by then), then waits at its gate."""

    def __init__(self, aps: dict[str, str]) -> None:
        super().__init__(aps)
        self.joining = asyncio.Event()
        self.connect_gate = asyncio.Event()

    async def connect(self, wifi: WifiCredentials, timeout: float) -> StepResult:
        self.joining.set()
        return await super().connect(wifi, timeout)


def test_the_wifi_step_shows_while_the_hub_joins(tmp_path: Path) -> None:
    """While NetworkManager joins the network, progress says so: the step is ``wifi``, the
    hotspot is down, and the hub is on no network yet (not ``network: wifi`` before the join
    succeeded)."""
    cfg = config(tmp_path)
    st = store(cfg)

    async def scenario() -> None:
        wifi = JoiningWifi({"HomeNet": "supersecret"})
        async with machine(cfg, st, wifi) as ob:
            await PairingService(ob, cfg.cloud).submit(PAIR, "test")
            await until(ob, lambda: ob.step == "wifi")
            assert ob.progress().step == "wifi" and ob.progress().network is None
            await asyncio.wait_for(wifi.joining.wait(), 10)
            progress = ob.progress()
            assert progress.step == "wifi" and not progress.hotspot
            assert progress.network is None
            wifi.connect_gate.set()
            await until(ob, settled(ob, State.ONLINE))
            assert ob.progress().network == "wifi"

    run(scenario())


def test_listeners_hear_of_the_hotspot_a_state_raised(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    st = store(cfg)
    heard: list[tuple[State, bool, bool]] = []

    async def scenario() -> None:
        wifi = FakeWifi({"HomeNet": "supersecret"})
        ob = Onboarding(cfg, st, wifi, StubCloud())
        ob.subscribe(lambda state, p: heard.append((state, p.hotspot, p.pairing_open)))
        await ob.start()
        try:
            assert heard[-1] == (State.UNPAIRED, True, True)
            assert ob.progress().last_failure is None and ob.progress().state == "unpaired"
        finally:
            await ob.stop()

    run(scenario())


def test_a_reset_of_a_hub_that_never_paired(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    st = store(cfg)

    async def scenario() -> None:
        wifi = FakeWifi({"HomeNet": "supersecret"})
        async with machine(cfg, st, wifi) as ob:
            assert await ob.reopen_hotspot() is True  # unpaired: the hotspot is up already
            st.reset()
            await ob.reset()
            assert ob.state == State.UNPAIRED and wifi.hotspot and ob.pairing_open

    run(scenario())


def test_an_offline_hub_takes_no_pairing_before_its_hotspot_is_back(tmp_path: Path) -> None:
    cfg = config(tmp_path, offline_grace=3600.0)
    st = store(cfg)
    st.commit_pairing(HOME, CLOUD)

    async def scenario() -> None:
        wifi = FakeWifi({"HomeNet": "supersecret"})
        async with machine(cfg, st, wifi) as ob:
            await until(ob, settled(ob, State.ONLINE))
            wifi.drop_link()
            await until(ob, lambda: ob.state == State.OFFLINE and not ob.busy)
            with pytest.raises(NotInPairingMode):
                await ob.begin(PairingRequest(cloud=CLOUD, wifi=HOME))

    run(scenario())


def test_a_failed_periodic_retry_brings_the_hotspot_back_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        wifi, cloud = FakeWifi({}), StubCloud()
        async with offline_on_a_fake_clock(tmp_path, wifi, cloud,
                                           connect_timeout=9.0) as (ob, clock):
            await grace_over(clock)
            assert wifi.hotspot
            wifi.aps["HomeNet"] = "supersecret"  # back in range, but the cloud refuses
            cloud.next_failure = StepResult(False, Failure.BROKER_REFUSED, "bad token")
            mark = len(wifi.calls)
            clock.advance(60.0)
            await until(ob, lambda: ob.state == State.OFFLINE and not ob.busy
                        and ob.attempt is not None and ob.attempt.source == "retry")
            assert wifi.hotspot, "no second grace period: the hotspot is back at once"
            # the retry joined once; what failed is not tried again at once
            assert wifi.calls[mark:].count("reconnect HomeNet") == 1
            assert wifi.scans[-1] is None  # a visible network: an ordinary scan
            assert set(wifi.timeouts) == {9.0} and set(cloud.timeouts) == {9.0}
            assert set(cloud.typed_in) == {False}  # the boot and the retry: a broker starting

    run(scenario())


def test_retries_run_once_the_portal_was_quiet_for_exactly_one_interval(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        wifi = FakeWifi({})
        async with offline_on_a_fake_clock(tmp_path, wifi) as (ob, clock):
            await grace_over(clock)
            ob.note_activity()  # as the interval starts
            wifi.aps["HomeNet"] = "supersecret"
            clock.advance(60.0)  # exactly one quiet interval later
            await until(ob, settled(ob, State.ONLINE))

    run(scenario())


def test_only_an_account_a_person_typed_in_may_end_early_on_a_closed_port(
        tmp_path: Path) -> None:
    """The cloud step is told which accounts a closed port can be a typo in: a pairing
    request's new account, not the stored one (the boot, a Wi-Fi-only request on a
    paired hub, a request that sends the same account again)."""
    async def scenario() -> None:
        wifi, cloud = FakeWifi({"Office": "office-pass"}), StubCloud()
        office = WifiCredentials("Office", "office-pass")
        other = CloudCredentials("other@example.com", "t1k", "127.0.0.1", 1884)
        async with offline_on_a_fake_clock(tmp_path, wifi, cloud) as (ob, clock):
            assert cloud.typed_in == []  # HomeNet is out of range: no cloud step at boot
            await grace_over(clock)
            press_button(ob)
            for request, typed_in in ((PairingRequest(cloud=None, wifi=office), False),
                                      (PairingRequest(cloud=CLOUD, wifi=office), False),
                                      (PairingRequest(cloud=other, wifi=office), True)):
                cloud.next_failure = StepResult(False, Failure.BROKER_UNREACHABLE, "closed")
                tries = len(cloud.typed_in)
                await ob.begin(request)
                await until(ob, lambda tries=tries: len(cloud.typed_in) == tries + 1
                            and not ob.busy and ob.pairing_open)
                assert cloud.typed_in[-1] is typed_in, request

    run(scenario())


def test_a_wifi_only_hub_whose_new_network_fails_stays_on_its_old_one(
        tmp_path: Path) -> None:
    cfg = config(tmp_path, connect_timeout=8.0)
    st = store(cfg)
    st.commit_wifi(HOME)

    async def scenario() -> None:
        wifi = FakeWifi({"HomeNet": "supersecret", "Office": "office-pass"})
        async with machine(cfg, st, wifi) as ob:
            await until(ob, lambda: settled(ob, State.UNPAIRED)() and ob.on_wifi)
            await ob.begin(PairingRequest(cloud=None, wifi=WifiCredentials("Office", "nope-nope")))
            await until(ob, lambda: ob.last_failure is not None and not ob.busy)
            assert ob.state == State.UNPAIRED and ob.progress().network == "wifi"
            assert not wifi.hotspot and st.state.wifi == HOME
            assert set(wifi.timeouts) == {8.0}  # the boot reconnect, the try, the way back

    run(scenario())


def test_link_events_that_do_not_matter_change_nothing(tmp_path: Path) -> None:
    cfg = config(tmp_path, offline_grace=3600.0)
    st = store(cfg)

    async def scenario() -> None:
        wifi = FakeWifi({"HomeNet": "supersecret"})
        async with machine(cfg, st, wifi) as ob:
            wifi.drop_link()  # an unpaired hub with no network of its own
            await ob.wait_for(lambda: True, 1.0)
            await asyncio.sleep(0)
            assert ob.state == State.UNPAIRED and ob.attempt is None

    run(scenario())
    st.commit_pairing(HOME, CLOUD)

    async def paired() -> None:
        wifi = FakeWifi({"HomeNet": "supersecret"})
        async with machine(cfg, st, wifi) as ob:
            await until(ob, settled(ob, State.ONLINE))
            first = ob.attempt
            paired_at = st.state.paired_at
            wifi.restore_link("HomeNet")  # "up" again while online: nothing to do
            await asyncio.sleep(0)
            assert ob.attempt is first
            wifi.drop_link()
            await until(ob, lambda: ob.state == State.OFFLINE and not ob.busy)
            wifi.drop_link()  # NetworkManager reports more failures while offline
            await asyncio.sleep(0)
            assert ob.state == State.OFFLINE and ob.attempt is first
            wifi.restore_link("HomeNet")
            await until(ob, settled(ob, State.ONLINE))
            assert ob.attempt is not None and ob.attempt.source == "reconnect"
            assert st.state.paired_at == paired_at, "a reconnect is not a new pairing"

    run(paired())


def test_the_button_while_offline_starts_the_retries_without_a_grace(tmp_path: Path) -> None:
    cfg = config(tmp_path, offline_grace=3600.0, retry_interval=60.0)
    st = store(cfg)
    st.commit_pairing(HOME, CLOUD)
    clock = FakeClock()

    async def scenario() -> None:
        wifi = FakeWifi({"HomeNet": "supersecret"})
        ob = Onboarding(cfg, st, wifi, StubCloud(), clock=clock, sleep=clock.sleep)
        await ob.start()
        try:
            await until(ob, settled(ob, State.ONLINE))
            wifi.drop_link()
            await until(ob, lambda: ob.state == State.OFFLINE and not ob.busy)
            await clock.sleeps(1)
            assert clock.slept == [3600.0]
            await ob.reopen_hotspot()
            await clock.sleeps(2)
            assert clock.slept[0] == 3600.0 and 30.0 <= clock.slept[1] <= 60.0, \
                "the retry interval (jittered), not another grace"
        finally:
            await ob.stop()

    run(scenario())


@pytest.mark.parametrize("has_wifi", [True, False], ids=["ethernet-with-wifi", "no-wifi"])
def test_ethernet_hub_whose_cloud_failed_at_boot_retries_with_backoff(
        tmp_path: Path, has_wifi: bool) -> None:
    """A hub paired on Ethernet (no saved Wi-Fi) whose broker is down at boot has no hotspot
    to fall back to: it retries the cloud step after a jittered wait that doubles from
    5 s up to ``retry_interval``, skips a retry while the cable is out, and goes online once
    the broker answers."""
    cfg = config(tmp_path, offline_grace=30.0, retry_interval=60.0)
    st = store(cfg)
    st.commit_pairing(None, CLOUD)
    clock = FakeClock()
    cloud = StubCloud()
    cloud.next_failure = StepResult(False, Failure.BROKER_UNREACHABLE, "broker down")
    wifi = FakeWifi(ethernet=True) if has_wifi else None

    async def scenario() -> None:
        ob = Onboarding(cfg, st, wifi, cloud, clock=clock, sleep=clock.sleep,
                        rng=random.Random(7))
        await ob.start()
        try:
            await until(ob, settled(ob, State.OFFLINE))
            assert len(cloud.timeouts) == 1  # the boot attempt
            # On its network (a hub without Wi-Fi control is taken to be on its cable):
            # the cloud is the trouble, not the network.
            assert describe(ob.progress()) == ("offline: on Ethernet, cloud unreachable, "
                                               "retrying: broker down")
            ceilings = [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
            for n, ceiling in enumerate(ceilings, start=1):
                await clock.sleeps(n)
                delay = clock.slept[-1]
                assert ceiling / 2 <= delay <= ceiling, (n, delay, clock.slept)
                clock.advance(delay)
                await until(ob, lambda n=n: len(cloud.timeouts) == n + 1
                            and ob.state == State.OFFLINE and not ob.busy)
                assert ob.attempt is not None and ob.attempt.source == "retry"
            assert len(set(clock.slept)) == len(clock.slept), "the waits are jittered"
            assert wifi is None or not wifi.hotspot  # on Ethernet: no hotspot
            tries = len(cloud.timeouts)
            waits = len(ceilings) + 1
            await clock.sleeps(waits)
            if wifi is not None:
                wifi.ethernet = False  # the cable is out: no attempt, the loop waits again
                clock.advance(clock.slept[-1])
                waits += 1
                await clock.sleeps(waits)
                assert len(cloud.timeouts) == tries and ob.state == State.OFFLINE
                assert describe(ob.progress()) == "offline: network lost; hotspot up for " \
                    "re-pairing"
                # Offline longer than offline_grace with no uplink: the hotspot offers
                # re-pairing onto Wi-Fi; the cable's return and a retry take it down.
                assert wifi.hotspot and ob.repairable
                wifi.ethernet = True
                # The next retry finds the cable back and says so before it tries.
                heard: list[str] = []
                ob.subscribe(lambda state, p: heard.append(describe(p)))
            cloud.next_failure = None  # the broker is back
            clock.advance(60.0)
            await until(ob, settled(ob, State.ONLINE))
            if wifi is not None:
                assert heard[0] == ("offline: on Ethernet, cloud unreachable, retrying: "
                                    "broker down"), heard
            assert len(cloud.timeouts) == tries + 1 and cloud.connected == CLOUD
            assert wifi is None or not wifi.hotspot
        finally:
            await ob.stop()

    run(scenario())


class WifiThatCannotTellTheCable(FakeWifi):
    async def ethernet_connected(self) -> bool:
        raise OSError("NetworkManager did not answer")


def test_a_failure_with_a_cable_nobody_can_read_says_network_lost(tmp_path: Path) -> None:
    """A carrier NetworkManager cannot tell is taken as down: the status does not claim the
    hub is on Ethernet with only its cloud out of reach."""
    cfg = config(tmp_path, offline_grace=3600.0)
    st = store(cfg)
    st.commit_pairing(None, CLOUD)
    cloud = StubCloud()
    cloud.next_failure = StepResult(False, Failure.BROKER_UNREACHABLE, "broker down")
    clock = FakeClock()

    async def scenario() -> None:
        ob = Onboarding(cfg, st, WifiThatCannotTellTheCable(ethernet=True), cloud,
                        clock=clock, sleep=clock.sleep)
        await ob.start()
        try:
            await until(ob, settled(ob, State.OFFLINE))
            assert ob.last_failure is not None
            assert describe(ob.progress()) == "offline: network lost"
        finally:
            await ob.stop()

    run(scenario())


def test_an_ethernet_hub_shows_its_hotspot_once_offline_grace_has_passed_since_it_went_offline(
        tmp_path: Path) -> None:
    """The grace counts from when the hub went offline, not from its last failed retry; the
    hotspot comes up when the grace is reached, not before, and only once; a retry that
    succeeds after the cable's return keeps the pairing as it was stored."""
    cfg = config(tmp_path, offline_grace=30.0, retry_interval=60.0)
    st = store(cfg)
    st.commit_pairing(None, CLOUD)
    paired_at = st.state.paired_at
    clock = FakeClock()
    cloud = StubCloud()
    cloud.next_failure = StepResult(False, Failure.BROKER_UNREACHABLE, "broker down")
    wifi = FakeWifi(ethernet=True)

    async def scenario() -> None:
        ob = Onboarding(cfg, st, wifi, cloud, clock=clock, sleep=clock.sleep,
                        rng=random.Random(7))
        await ob.start()
        try:
            await until(ob, settled(ob, State.OFFLINE))
            went_offline = clock.now
            await clock.sleeps(1)
            clock.advance(clock.slept[-1])  # the first retry, which fails too
            await until(ob, lambda: len(cloud.timeouts) == 2
                        and ob.state == State.OFFLINE and not ob.busy)
            await clock.sleeps(2)
            wifi.ethernet = False  # the cable goes out
            clock.advance(clock.slept[-1])
            await clock.sleeps(3)  # no uplink, still within the grace: no hotspot
            assert clock.now - went_offline < 30.0 and not wifi.hotspot
            clock.advance(went_offline + 30.0 - clock.now)  # exactly the grace
            await clock.sleeps(4)
            assert wifi.hotspot and ob.repairable
            for n in (5, 6):  # still no cable: the hotspot stays, not raised again
                clock.advance(clock.slept[-1])
                await clock.sleeps(n)
            assert wifi.calls.count("hotspot-up") == 1 and len(cloud.timeouts) == 2
            wifi.ethernet = True
            cloud.next_failure = None
            clock.advance(clock.slept[-1])
            await until(ob, settled(ob, State.ONLINE))
            assert not wifi.hotspot
            assert st.state.cloud == CLOUD and st.state.paired_at == paired_at
        finally:
            await ob.stop()

    run(scenario())


def test_progress_before_the_machine_starts_says_starting(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    ob = Onboarding(cfg, store(cfg), FakeWifi(), StubCloud())
    progress = ob.progress()
    assert progress.state == "starting" and progress.step is None
    assert progress.last_failure is None and not progress.hotspot


def test_the_daemons_own_jitter_drives_an_ethernet_hubs_cloud_retry(tmp_path: Path) -> None:
    """Built as the daemon builds it (no ``rng``): the retry wait is still jittered within
    its first ceiling, and the retry happens."""
    cfg = config(tmp_path, retry_interval=60.0)
    st = store(cfg)
    st.commit_pairing(None, CLOUD)
    clock = FakeClock()
    cloud = StubCloud()
    cloud.next_failure = StepResult(False, Failure.BROKER_UNREACHABLE, "broker down")

    async def scenario() -> None:
        ob = Onboarding(cfg, st, None, cloud, clock=clock, sleep=clock.sleep)
        await ob.start()
        try:
            await until(ob, settled(ob, State.OFFLINE))
            await clock.sleeps(1)
            assert 2.5 <= clock.slept[-1] <= 5.0
            cloud.next_failure = None
            clock.advance(clock.slept[-1])
            await until(ob, settled(ob, State.ONLINE))
            assert len(cloud.timeouts) == 2 and ob.attempt is not None
            assert ob.attempt.source == "retry"
        finally:
            await ob.stop()

    run(scenario())


class SlowToHangUp(StubCloud):
    """A cloud link whose disconnect waits for the test: the failed attempt's ending (it
    hangs up, then fires the failure event) is held after progress shows the failure."""

    def __init__(self) -> None:
        super().__init__()
        self.hang_up = asyncio.Event()

    async def disconnect(self) -> None:
        await self.hang_up.wait()
        await super().disconnect()


def test_a_retry_while_the_failed_attempt_is_ending_is_taken_not_busy(tmp_path: Path) -> None:
    """An app retries the moment progress shows the failure: the request waits for the
    attempt's ending and is taken (issue 18), instead of answering "busy"."""
    cfg = config(tmp_path)
    st = store(cfg)

    async def scenario() -> None:
        wifi, cloud = FakeWifi({"HomeNet": "supersecret"}), SlowToHangUp()
        cloud.next_failure = StepResult(False, Failure.BROKER_REFUSED, "bad token")
        async with machine(cfg, st, wifi, cloud) as ob:
            service = PairingService(ob, cfg.cloud)
            await service.submit(PAIR, "test")
            await until(ob, lambda: ob.progress().last_failure is not None)
            assert ob.busy  # still ending: hanging up
            cloud.next_failure = None
            retry = asyncio.create_task(service.submit(PAIR, "test"))
            # Set after the retry was scheduled: the ending finishes while it waits.
            cloud.hang_up.set()
            progress = await retry
            assert progress.state == "connecting" and service.refusals == {}
            await until(ob, settled(ob, State.ONLINE))

    run(scenario())


@asynccontextmanager
async def unpaired_on_a_fake_clock(tmp_path: Path, wifi: FakeWifi
                                   ) -> AsyncIterator[tuple[Onboarding, FakeClock]]:
    """An unpaired hub with time on a FakeClock (retry_interval 60 s)."""
    cfg = config(tmp_path, retry_interval=60.0)
    clock = FakeClock()
    ob = Onboarding(cfg, store(cfg), wifi, StubCloud(), clock=clock, sleep=clock.sleep)
    await ob.start()
    try:
        assert ob.state == State.UNPAIRED
        yield ob, clock
    finally:
        await ob.stop()


def test_an_unpaired_hub_whose_hotspot_is_refused_tries_again_backing_off(
        tmp_path: Path) -> None:
    """Before: a hotspot NetworkManager refused at an unpaired boot (or reset) was not tried
    again: no hotspot until a restart. Now the watchdog tries again, 5 s doubling."""

    async def scenario() -> None:
        wifi = WifiWhoseHotspotFails(failures=3)
        async with unpaired_on_a_fake_clock(tmp_path, wifi) as (ob, clock):
            assert wifi.calls == ["scan", "hotspot-refused"] and not ob.progress().hotspot
            for looks in (1, 2, 3):
                await clock.sleeps(looks)
                clock.advance(clock.slept[-1])
            await until(ob, lambda: ob.progress().hotspot)
            assert clock.slept == [5.0, 10.0, 20.0]
            assert wifi.calls.count("hotspot-refused") == 3 and wifi.calls[-1] == "hotspot-up"
            assert ob.pairing_open

    run(scenario())


def test_a_refused_hotspot_is_logged_with_the_real_wait_and_its_traceback_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Review: each refusal was logged "trying again in 5s" with a full traceback, and the
    watchdog then waited 10 s: the message said half the real wait, the journal got the
    same traceback at every look. Now it says the wait that follows, the traceback once."""

    async def scenario() -> list[float]:
        wifi = WifiWhoseHotspotFails(failures=3)  # the boot's, then two of the watchdog's
        async with unpaired_on_a_fake_clock(tmp_path, wifi) as (ob, clock):
            for looks in (1, 2, 3):
                await clock.sleeps(looks)
                clock.advance(clock.slept[-1])
            await until(ob, lambda: ob.progress().hotspot)
            return clock.slept

    caplog.set_level(logging.WARNING, logger="gatewayd.onboarding")
    slept = run(scenario())
    said = [r for r in caplog.records if "trying again in" in r.getMessage()]
    assert [r.getMessage().rpartition(" in ")[2] for r in said] == ["10s", "20s"]
    assert slept[1:] == [10.0, 20.0]  # the waits that followed them
    assert [bool(r.exc_info) for r in said] == [True, False]
    assert all("NotAllowed" in r.getMessage() for r in said)


def test_an_unpaired_hub_raises_its_hotspot_again_after_network_manager_drops_it(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        wifi = FakeWifi({})
        async with unpaired_on_a_fake_clock(tmp_path, wifi) as (ob, clock):
            seen: list[bool] = []
            ob.subscribe(lambda state, progress: seen.append(progress.hotspot))
            wifi.drop_hotspot()
            assert seen == [False], "every front end hears the hotspot went"
            await clock.sleeps(1)
            clock.advance(clock.slept[-1])
            await until(ob, lambda: ob.progress().hotspot)
            assert seen == [False, True] and wifi.calls[-2:] == ["scan", "hotspot-up"]

    run(scenario())


def test_a_short_press_raises_an_unpaired_hubs_missing_hotspot_at_once(tmp_path: Path) -> None:
    """Before: a short press did nothing in ``unpaired``. With the cable in, the hub pairs
    over the LAN: no hotspot; once it is pulled, a press raises it without waiting."""

    async def scenario() -> None:
        wifi = FakeWifi({}, ethernet=True)
        async with unpaired_on_a_fake_clock(tmp_path, wifi) as (ob, clock):
            assert not wifi.hotspot and "hotspot-up" not in wifi.calls
            assert await ob.reopen_hotspot() is False  # the cable is in
            wifi.ethernet = False  # the cable is pulled
            assert await ob.reopen_hotspot() is True
            assert wifi.hotspot and ob.progress().hotspot and ob.pairing_open
            wifi.drop_hotspot()
            assert await ob.reopen_hotspot() is True and wifi.calls[-1] == "hotspot-up"
            assert clock.now == 1000.0, "the press did not wait for the watchdog"

    run(scenario())


def test_an_unpaired_hub_raises_its_hotspot_once_the_cable_is_pulled(tmp_path: Path) -> None:
    """With no word from NetworkManager (this fake sends none; tests/test_onboarding.py
    pulls the cable on the NetworkManager mock, which does): the safety net's looks, a
    minute apart while the cable is in (they were 5 s apart for as long as it was in)."""
    async def scenario() -> None:
        wifi = FakeWifi({}, ethernet=True)
        async with unpaired_on_a_fake_clock(tmp_path, wifi) as (ob, clock):
            for looks in (1, 2):  # the cable is still in: looked for again, no hotspot
                await clock.sleeps(looks)
                assert not wifi.hotspot
                clock.advance(clock.slept[-1])
            await clock.sleeps(3)  # the second look found the cable too: a third wait
            wifi.ethernet = False
            clock.advance(clock.slept[-1])
            await until(ob, lambda: ob.progress().hotspot)
            assert clock.slept == [5.0, WATCH_CABLE, WATCH_CABLE] and ob.pairing_open

    run(scenario())


def test_an_unpaired_hub_raises_its_hotspot_when_networkmanager_says_the_cable_went(
        tmp_path: Path) -> None:
    """The watchdog's word from NetworkManager (the start hands it ``on_wired``): the hotspot
    comes at once, not at the next safety look a minute later."""
    async def scenario() -> None:
        wifi = FakeWifi({}, ethernet=True)
        async with unpaired_on_a_fake_clock(tmp_path, wifi) as (ob, clock):
            await clock.sleeps(1)
            clock.advance(clock.slept[-1])  # the first look: the cable is in
            await clock.sleeps(2)  # waiting a minute, or for NetworkManager's word
            wifi.ethernet = False
            wifi.wired_changed()
            await until(ob, lambda: ob.progress().hotspot)
            assert clock.slept == [5.0, WATCH_CABLE] and ob.pairing_open

    run(scenario())


def test_portal_activity_postpones_a_retry_by_at_most_five_intervals(tmp_path: Path) -> None:
    """Review: anyone on the open hotspot who polled a public endpoint more often than
    ``retry_interval`` held a paired hub offline for as long as they polled, its network
    back long since. Now the retry runs at the latest 5 intervals after the last one."""

    async def scenario() -> None:
        wifi = FakeWifi({})
        async with offline_on_a_fake_clock(tmp_path, wifi) as (ob, clock):
            await grace_over(clock)
            assert wifi.hotspot
            wifi.aps["HomeNet"] = "supersecret"  # back in range: a retry would succeed
            mark = len(wifi.calls)
            for rounds in range(1, 6):
                clock.advance(30.0)
                ob.note_activity()  # polled every 30 s, half the interval
                clock.advance(30.0)
                if rounds == 5:
                    break
                # Postponed: the loop waits again (or, wrongly, retries: busy).
                await first_of(clock.sleeps(2 + rounds), until(ob, lambda: ob.busy))
                assert ob.state == State.OFFLINE and wifi.calls[mark:] == [], rounds
            await until(ob, settled(ob, State.ONLINE))
            assert wifi.calls[mark:mark + 2] == ["hotspot-down", "scan"]
            assert ob.attempt is not None and ob.attempt.source == "retry"

    run(scenario())


def test_an_attempt_on_the_cable_names_no_network_it_did_not_apply(tmp_path: Path) -> None:
    """Review: on its cable a hub ignores a request's Wi-Fi network, but progress kept its
    name, and the panel said the hub had joined it."""
    cfg = config(tmp_path)
    st = store(cfg)

    async def scenario() -> None:
        wifi = FakeWifi({"HomeNet": "supersecret"}, ethernet=True)
        async with machine(cfg, st, wifi) as ob:
            made_up = WifiCredentials("DoesNotExist", "whatever-pass")
            await ob.begin(PairingRequest(cloud=CLOUD, wifi=made_up))
            await until(ob, settled(ob, State.ONLINE))
            attempt = ob.progress().attempt
            assert attempt is not None and attempt.ssid is None
            assert st.state.wifi is None and "connect DoesNotExist" not in wifi.calls

    run(scenario())


class GatedHotspot(FakeWifi):
    """start_hotspot waits at a gate (NetworkManager activating takes up to 15 s on a Pi);
    ``entered`` hears each call come in, ``inside`` counts those under way."""

    def __init__(self) -> None:
        super().__init__({})
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered: asyncio.Queue[int] = asyncio.Queue()
        self.inside = 0

    async def start_hotspot(self) -> None:
        self.inside += 1
        self.entered.put_nowait(self.inside)
        try:
            await self.gate.wait()
            await super().start_hotspot()
        finally:
            self.inside -= 1


def test_a_reset_while_the_watchdog_raises_the_hotspot_activates_it_once_at_a_time(
        tmp_path: Path) -> None:
    """Review: a long press while the watchdog was activating the hotspot started a second
    activation beside it (the reset takes no pairing lock), and ap.py's two activations
    share one waiter: each could take the other's NetworkManager events."""

    async def scenario() -> None:
        wifi = GatedHotspot()
        async with unpaired_on_a_fake_clock(tmp_path, wifi) as (ob, clock):
            assert await wifi.entered.get() == 1  # entering unpaired raised it
            wifi.gate.clear()
            wifi.drop_hotspot()
            await clock.sleeps(1)
            clock.advance(clock.slept[-1])
            assert await asyncio.wait_for(wifi.entered.get(), 10) == 1  # the watchdog's
            reset = asyncio.create_task(ob.reset())
            # the reset's own activation: the watchdog's was ended first
            assert await asyncio.wait_for(wifi.entered.get(), 10) == 1
            wifi.gate.set()
            await asyncio.wait_for(reset, 10)
            assert ob.state == State.UNPAIRED and wifi.hotspot and ob.pairing_open

    run(scenario())


def test_a_retry_due_while_the_last_one_still_raises_the_hotspot_waits_a_round(
        tmp_path: Path) -> None:
    """NetworkManager may take 15 s to activate the hotspot, longer than a short
    ``retry_interval``. A retry that falls due while the failed one is still bringing the
    hotspot back waits for the next round, with no second attempt beside the first, and
    the retries go on after it (before this test, a loop that stopped retrying there for
    good, or that retried at once, passed the suite)."""

    async def scenario() -> None:
        wifi = GatedHotspot()
        async with offline_on_a_fake_clock(tmp_path, wifi) as (ob, clock):
            await grace_over(clock)
            assert await wifi.entered.get() == 1 and wifi.hotspot
            wifi.aps["HomeNet"] = "a-new-password"  # back, with a new password: retries fail
            wifi.gate.clear()
            clock.advance(60.0)
            # The retry failed; bringing its hotspot back is held at NetworkManager.
            assert await asyncio.wait_for(wifi.entered.get(), 10) == 1
            failed = ob.attempt
            assert failed is not None and failed.source == "retry"
            assert ob.state == State.OFFLINE and ob.last_failure is not None
            await clock.sleeps(3)  # the next round's wait began
            mark = len(wifi.calls)
            clock.advance(60.0)
            # It waits another round (or, wrongly, retries: connecting).
            await first_of(clock.sleeps(4), until(ob, lambda: ob.state != State.OFFLINE))
            assert ob.state == State.OFFLINE and ob.attempt is failed
            assert wifi.calls[mark:] == []
            wifi.gate.set()
            await until(ob, lambda: ob.state == State.OFFLINE and wifi.hotspot
                        and ob._settled())
            clock.advance(60.0)  # the round after: the retry is made
            await until(ob, lambda: ob.attempt is not failed and ob.state == State.OFFLINE
                        and wifi.hotspot and ob._settled())
            assert ob.attempt is not None and ob.attempt.source == "retry"
            assert wifi.calls[mark:] == ["hotspot-up", "hotspot-down", "scan",
                                         "reconnect HomeNet", "scan", "hotspot-up"]

    run(scenario())


def test_an_ethernet_hubs_cloud_retry_due_while_the_last_one_still_ends_waits_a_round(
        tmp_path: Path) -> None:
    """The Ethernet hub's cloud retries, as the Wi-Fi retries above: its cable came out during
    a failed retry, so the failure brings its hotspot back (slow, at NetworkManager), and the
    cable is back before that is done. The retry that falls due meanwhile waits a round, with
    no second attempt beside the first, and the retries go on after it."""
    cfg = config(tmp_path, offline_grace=30.0, retry_interval=60.0)
    st = store(cfg)
    st.commit_pairing(None, CLOUD)
    clock = FakeClock()
    cloud = StubCloud()
    cloud.next_failure = StepResult(False, Failure.BROKER_UNREACHABLE, "broker down")
    wifi = GatedHotspot()
    wifi.ethernet = True

    async def scenario() -> None:
        ob = Onboarding(cfg, st, wifi, cloud, clock=clock, sleep=clock.sleep,
                        rng=random.Random(7))
        await ob.start()
        try:
            await until(ob, settled(ob, State.OFFLINE))
            await clock.sleeps(1)
            wifi.ethernet = False  # the cable is out past the grace: the hotspot comes up
            clock.advance(clock.slept[-1])
            await clock.sleeps(2)
            clock.advance(30.0)
            assert await asyncio.wait_for(wifi.entered.get(), 10) == 1
            await clock.sleeps(3)
            assert wifi.hotspot and len(cloud.timeouts) == 1
            wifi.ethernet = True  # back: the next retry is made, and held in its cloud step
            cloud.gate = asyncio.Event()
            clock.advance(clock.slept[-1])
            await until(ob, lambda: ob.step == "cloud")
            failed = ob.attempt
            wifi.ethernet = False  # out again: the failure brings the hotspot back, slowly
            wifi.gate.clear()
            cloud.gate.set()
            assert await asyncio.wait_for(wifi.entered.get(), 10) == 1
            assert ob.state == State.OFFLINE and ob.attempt is failed
            wifi.ethernet = True  # and in again while NetworkManager activates the hotspot
            await clock.sleeps(4)  # the next round's wait began
            clock.advance(clock.slept[-1])
            # It waits another round (or, wrongly, retries: connecting).
            await first_of(clock.sleeps(5), until(ob, lambda: ob.state != State.OFFLINE))
            assert ob.state == State.OFFLINE and ob.attempt is failed
            assert len(cloud.timeouts) == 2
            cloud.next_failure = None  # the broker is back
            wifi.gate.set()
            await until(ob, lambda: ob.state == State.OFFLINE and wifi.hotspot
                        and ob._settled())
            clock.advance(clock.slept[-1])  # the round after: the retry is made
            await until(ob, settled(ob, State.ONLINE))
            assert len(cloud.timeouts) == 3 and ob.attempt is not None
            assert ob.attempt.source == "retry" and not wifi.hotspot
        finally:
            await ob.stop()

    run(scenario())


def test_a_signed_in_admin_pairs_a_paired_hub_offline_on_its_hotspot_again(
        tmp_path: Path) -> None:
    """The panel's admin needs no short press: the machine, which checks the request again
    under its lock as it begins, applies the same admin rule as the pairing service, and the
    hub joins the new network. The same request without the sign-in is refused."""
    new_net = {**PAIR, "ssid": "NewNet", "psk": "newsecret"}

    async def scenario() -> None:
        wifi = FakeWifi({"NewNet": "newsecret"})  # the old network is gone
        async with offline_on_a_fake_clock(tmp_path, wifi) as (ob, clock):
            await grace_over(clock)
            assert wifi.hotspot and ob.repairable and not ob.pairing_open
            service = PairingService(ob, ob.config.cloud)
            with pytest.raises(NotInPairingMode):
                await service.submit(new_net, "panel")
            await service.submit(new_net, "panel", admin=True)
            await until(ob, settled(ob, State.ONLINE))
            assert "connect NewNet" in wifi.calls and not wifi.hotspot
            assert ob.store.state.wifi == WifiCredentials("NewNet", "newsecret")

    run(scenario())


def test_a_cloud_only_pairing_over_the_hotspot_keeps_pairing_closed_while_it_runs(
        tmp_path: Path) -> None:
    """An unpaired hub on its hotspot whose cable goes in pairs cloud only, from the
    hotspot's portal; its hotspot stays up during the attempt. Progress says
    ``connecting`` with pairing closed (an app must not offer a second request), a short
    press reports the hotspot up and changes nothing, and success takes the hotspot down."""
    cfg = config(tmp_path)
    st = store(cfg)

    async def scenario() -> None:
        wifi, cloud = FakeWifi({}), StubCloud()
        cloud.gate = asyncio.Event()
        async with machine(cfg, st, wifi, cloud) as ob:
            assert wifi.hotspot
            wifi.ethernet = True  # the cable goes in
            await PairingService(ob, cfg.cloud).submit(CLOUD_ONLY, "test")
            await until(ob, lambda: ob.step == "cloud")
            progress = ob.progress()
            assert progress.state == "connecting" and progress.hotspot
            assert not progress.pairing_open
            calls = list(wifi.calls)
            assert await ob.reopen_hotspot() is True
            assert wifi.calls == calls and ob.state == State.CONNECTING
            cloud.gate.set()
            await until(ob, settled(ob, State.ONLINE))
            assert not wifi.hotspot and wifi.calls[-1] == "hotspot-down"
            assert st.state.paired and st.state.wifi is None

    run(scenario())


def test_the_panel_is_told_a_wifi_hub_is_on_its_cable_only_off_its_wifi(
        tmp_path: Path) -> None:
    """``on_ethernet`` is what the panel asks before it drops its Wi-Fi fields and pairs
    cloud only: a hub with Wi-Fi, its cable in, and no Wi-Fi link. A client of its Wi-Fi
    is not "on its cable" even with the cable in; a hub without Wi-Fi has no fields to
    drop."""
    cfg = config(tmp_path / "wifi")
    st = store(cfg)

    async def scenario() -> None:
        wifi = FakeWifi({"HomeNet": "supersecret"})
        async with machine(cfg, st, wifi) as ob:
            assert await ob.on_ethernet() is False  # on its hotspot, no cable
            wifi.ethernet = True
            assert await ob.on_ethernet() is True
            wifi.ethernet = False
            await PairingService(ob, cfg.cloud).submit(PAIR, "test")
            await until(ob, settled(ob, State.ONLINE))
            wifi.ethernet = True
            assert ob.progress().network == "wifi" and await ob.on_ethernet() is False
        no_wifi = config(tmp_path / "no-wifi", enabled=False)
        async with machine(no_wifi, store(no_wifi), None) as ob:
            assert await ob.on_ethernet() is False

    run(scenario())


def test_a_stop_during_an_attempt_deletes_the_profile_it_had_not_proven(
        tmp_path: Path) -> None:
    """The daemon stops (an upgrade, a reboot) while an attempt is in its cloud step: the
    new network's profile, saved as the hub joined it, is deleted, so autoconnect cannot
    take the hub to a network state.json does not have."""
    cfg = config(tmp_path)
    st = store(cfg)

    async def scenario() -> None:
        wifi, cloud = FakeWifi({"HomeNet": "supersecret"}), StubCloud()
        cloud.gate = asyncio.Event()
        async with machine(cfg, st, wifi, cloud) as ob:
            await PairingService(ob, cfg.cloud).submit(PAIR, "test")
            await until(ob, lambda: ob.step == "cloud")
            assert wifi.profiles == {"HomeNet": "supersecret"}
            await ob.stop()
            assert wifi.profiles == {} and wifi.calls[-1] == "stop"
            assert not st.state.paired and st.state.wifi is None

    run(scenario())


class WifiThatHangsOnCleanUp(FakeWifi):
    """NetworkManager never answers the deletion of the profiles the hub has not stored."""

    async def forget_others(self, keep: WifiCredentials | None) -> None:
        self.calls.append("forget-others")
        await asyncio.Event().wait()


def test_a_clean_up_network_manager_never_answers_does_not_hold_the_boot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The clean-up at boot is bounded (``FORGET_TIMEOUT``, here shortened): a hung
    D-Bus call is logged and the hub goes on to rejoin its network."""
    monkeypatch.setattr(conclusion, "FORGET_TIMEOUT", 0.01)
    cfg = config(tmp_path)
    st = store(cfg)
    st.commit_pairing(HOME, CLOUD)

    async def scenario() -> None:
        wifi = WifiThatHangsOnCleanUp({"HomeNet": "supersecret"})
        async with machine(cfg, st, wifi) as ob:
            await until(ob, settled(ob, State.ONLINE))
            assert wifi.calls[0] == "forget-others" and "reconnect HomeNet" in wifi.calls

    run(scenario())


def test_a_hub_whose_network_returns_but_not_its_cloud_keeps_one_offline_timer(
        tmp_path: Path) -> None:
    """Offline, its network back (NetworkManager's autoconnect), the cloud still down: the
    reconnect fails and the hub is offline again with one timer, the old one's wait ended.
    Two side by side would each retry on their own cadence (and, off the network, each
    raise the hotspot: two activations at NetworkManager)."""

    async def scenario() -> None:
        wifi, cloud = FakeWifi({}), StubCloud()
        async with offline_on_a_fake_clock(tmp_path, wifi, cloud) as (ob, clock):
            boot = ob.attempt
            wifi.aps["HomeNet"] = "supersecret"
            cloud.next_failure = StepResult(False, Failure.BROKER_UNREACHABLE, "broker down")
            wifi.restore_link("HomeNet")
            await until(ob, lambda: ob.attempt is not boot and ob.state == State.OFFLINE
                        and ob._settled())
            assert ob.attempt is not None and ob.attempt.source == "reconnect"
            await clock.sleeps(2)  # the new timer's wait: a cloud retry, on the network
            assert clock.waiting == 1  # the boot timer's grace ended with the new one's start
            clock.advance(60.0)  # the first retry, which fails as well
            await until(ob, lambda: ob.attempt is not None and ob.attempt.source == "retry"
                        and ob.state == State.OFFLINE and ob._settled())
            await clock.sleeps(3)
            assert clock.waiting == 1
            assert "hotspot-up" not in wifi.calls and not wifi.hotspot  # on its network

    run(scenario())


def test_the_loss_reported_again_during_the_grace_does_not_put_the_hotspot_off(
        tmp_path: Path) -> None:
    """Offline after its network was lost, NetworkManager reports the loss again (its
    autoconnect tried the network and failed): the grace still counts from the loss, and
    the hotspot comes when it is over. Before this test, a hub that began its grace again
    at each report (the hotspot put off for as long as they came) passed the suite."""
    cfg = config(tmp_path, offline_grace=30.0, retry_interval=60.0)
    st = store(cfg)
    st.commit_pairing(HOME, CLOUD)
    clock = FakeClock()

    async def scenario() -> None:
        wifi = FakeWifi({"HomeNet": "supersecret"})
        ob = Onboarding(cfg, st, wifi, StubCloud(), clock=clock, sleep=clock.sleep)
        await ob.start()
        try:
            await until(ob, settled(ob, State.ONLINE))
            del wifi.aps["HomeNet"]  # the router is off
            wifi.drop_link()
            await until(ob, settled(ob, State.OFFLINE))
            await clock.sleeps(1)
            assert clock.slept == [30.0]
            clock.advance(15.0)
            wifi.drop_link("the access point went away")  # reported again
            clock.advance(15.0)  # offline_grace since the loss
            await clock.sleeps(2)  # the retries' first wait (or, wrongly, a new grace)
            assert wifi.hotspot and ob.repairable
            assert 30.0 <= clock.slept[1] <= 60.0, clock.slept
        finally:
            await ob.stop()

    run(scenario())


def test_an_ethernet_hub_waiting_for_its_cloud_tries_it_at_once_on_a_wifi_link(
        tmp_path: Path) -> None:
    """A hub paired on Ethernet (no network of its own stored) waits out a cloud outage,
    its cable out; NetworkManager brings up a Wi-Fi link (a network set up outside the
    hub): an uplink again, so the cloud step runs at once ("reconnect"), not at the next
    backoff's end. Before this test, a hub that ignored the link passed the suite."""
    cfg = config(tmp_path, offline_grace=3600.0, retry_interval=60.0)
    st = store(cfg)
    st.commit_pairing(None, CLOUD)
    clock = FakeClock()
    cloud = StubCloud()
    cloud.next_failure = StepResult(False, Failure.BROKER_UNREACHABLE, "broker down")
    wifi = FakeWifi({"Office": "office-pass"}, ethernet=True)

    async def scenario() -> None:
        ob = Onboarding(cfg, st, wifi, cloud, clock=clock, sleep=clock.sleep,
                        rng=random.Random(7))
        await ob.start()
        try:
            await until(ob, settled(ob, State.OFFLINE))
            await clock.sleeps(1)  # the first cloud retry's wait
            wifi.ethernet = False  # the cable is out
            cloud.next_failure = None  # and the broker answers again
            wifi.restore_link("Office")
            # Online at once (or, wrongly, nothing until the wait ends: it never does here).
            await until(ob, settled(ob, State.ONLINE))
            assert ob.attempt is not None and ob.attempt.source == "reconnect"
            assert cloud.connected == CLOUD and len(cloud.timeouts) == 2
            assert len(clock.slept) == 1 and st.state.wifi is None
        finally:
            await ob.stop()

    run(scenario())


def test_a_link_reported_up_just_before_a_reset_begins_nothing_after_it(
        tmp_path: Path) -> None:
    """NetworkManager reports the link back and, before the hub has acted on it, the hub
    is reset: nothing of the old pairing comes back. Before, the reconnect the report had
    scheduled ran after the reset, with the account the reset had just forgotten: the cloud
    link up with it, and the reset hub's hotspot taken down."""
    cfg = config(tmp_path, offline_grace=3600.0)
    st = store(cfg)
    st.commit_pairing(HOME, CLOUD)

    async def scenario() -> None:
        wifi, cloud = FakeWifi({"HomeNet": "supersecret"}), StubCloud()
        async with machine(cfg, st, wifi, cloud) as ob:
            await until(ob, settled(ob, State.ONLINE))
            wifi.drop_link()
            await until(ob, settled(ob, State.OFFLINE))
            wifi.restore_link("HomeNet")
            reported = list(ob._link_tasks)  # what the report scheduled, not run yet
            st.reset()  # as the daemon's reset: the state forgets, then the machine
            await ob.reset()
            done, _ = await asyncio.wait(reported, timeout=5.0)  # the report's task has run
            assert len(done) == len(reported) == 1
            assert ob.state == State.UNPAIRED and ob.attempt is None
            assert cloud.connected is None, "no cloud link with the forgotten account"
            assert wifi.hotspot and ob.pairing_open

    run(scenario())


class WifiWhoseScanWaits(FakeWifi):
    """The next scan takes as long as the test says (NetworkManager's takes seconds)."""

    def __init__(self) -> None:
        super().__init__({})
        self.scan_gate: asyncio.Event | None = None
        self.scanning = asyncio.Event()

    async def scan(self, ssid: str | None = None) -> None:
        await super().scan(ssid)
        gate, self.scan_gate = self.scan_gate, None
        if gate is not None:
            self.scanning.set()
            await gate.wait()


class WifiWhoseScanAndForgetWait(WifiWhoseScanWaits):
    """And forgetting the client profiles (a reset's) waits for the test too."""

    def __init__(self) -> None:
        super().__init__()
        self.forget_gate: asyncio.Event | None = None
        self.forgetting = asyncio.Event()

    async def forget_clients(self) -> None:
        gate, self.forget_gate = self.forget_gate, None
        if gate is not None:
            self.forgetting.set()
            await gate.wait()
        await super().forget_clients()


def test_a_retry_whose_scan_ends_while_a_reset_runs_does_not_connect_the_forgotten_account(
        tmp_path: Path) -> None:
    """The reset cancelled a running attempt only as it began: a retry whose scan ended
    while the reset still forgot the Wi-Fi profiles began an attempt with the network and
    account it had read before the reset."""

    async def scenario() -> None:
        wifi = WifiWhoseScanAndForgetWait()
        cloud = StubCloud()
        async with offline_on_a_fake_clock(tmp_path, wifi, cloud) as (ob, clock):
            await grace_over(clock)
            mark = len(wifi.calls)
            wifi.aps["HomeNet"] = "supersecret"  # the network is back ...
            wifi.scan_gate = scan = asyncio.Event()
            clock.advance(60.0)
            await asyncio.wait_for(wifi.scanning.wait(), 5)  # ... as the retry scans
            ob.store.reset()
            wifi.forget_gate = forget = asyncio.Event()
            reset = asyncio.create_task(ob.reset())
            await asyncio.wait_for(wifi.forgetting.wait(), 5)  # the reset is under way
            scan.set()
            await clock.sleeps(1)  # whatever the retry does next, it has done
            forget.set()
            await asyncio.wait_for(reset, 5)
            await until(ob, settled(ob, State.UNPAIRED))
            assert ob.state == State.UNPAIRED and ob.pairing_open and wifi.hotspot
            assert cloud.connected is None and not cloud.timeouts, "no cloud step"
            assert not any(call.startswith(("connect", "reconnect"))
                           for call in wifi.calls[mark:]), wifi.calls[mark:]
            assert not ob.store.state.paired

    run(scenario())

