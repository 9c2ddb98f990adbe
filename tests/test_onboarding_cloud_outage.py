"""A paired hub on its working Wi-Fi while the cloud broker is out of reach (review).

Before: the hub took "the broker is down" for "the network is lost". Its cloud step failed
(``connecting --failed-saved--> offline``), and after ``offline_grace`` it left its working
Wi-Fi for its hotspot ("offline: network lost; hotspot up for re-pairing"), then switched
between hotspot and client every ``retry_interval``, in step with every other hub of the
outage: off the LAN most of the time, for a fault that was not its own. Now it stays on the
network, no hotspot, and retries the cloud step after a jittered wait that doubles up to
``retry_interval``, as a hub on Ethernet does; if the Wi-Fi link goes too, the hotspot
comes after ``offline_grace`` as before. The machine runs on the fake Wi-Fi control and a
FakeClock (no test waits for a grace or an interval).
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from gatewayd.config import Config, with_overrides
from gatewayd.credentials import CloudCredentials, WifiCredentials
from gatewayd.onboarding.machine import Onboarding
from gatewayd.onboarding.progress import describe
from gatewayd.onboarding.steps import Failure, StepResult
from gatewayd.onboarding.table import State
from gatewayd.state import StateStore
from tests.fakes import FakeClock, FakeWifi, StubCloud, first_of
from tests.helpers import run_async
from tests.test_onboarding_machine import WifiWhoseHotspotFails

pytestmark = pytest.mark.timeout(30)
run = functools.partial(run_async, timeout=20.0)

CLOUD = CloudCredentials("user@example.com", "t0k", "127.0.0.1", 1883)
HOME = WifiCredentials("HomeNet", "supersecret")
GRACE, INTERVAL = 30.0, 60.0
UNREACHABLE = StepResult(False, Failure.BROKER_UNREACHABLE,
                         "broker unreachable: TCP connection to 127.0.0.1:1883 refused "
                         "(nothing listens there: check host and port)")
REFUSED = StepResult(False, Failure.BROKER_REFUSED, "broker refused the credentials "
                     "(not authorized): check e-mail and token")


def paired_config(tmp_path: Path) -> tuple[Config, StateStore]:
    cfg = with_overrides(Config(), hub={"state_dir": str(tmp_path / "state")})
    cfg = with_overrides(cfg, hotspot={"connect_timeout": 5.0, "offline_grace": GRACE,
                                       "retry_interval": INTERVAL})
    st = StateStore(cfg.state_dir)
    st.open(device_id="dc-a6-32-12-34-56", mac="dc:a6:32:12:34:56")
    st.commit_pairing(HOME, CLOUD)
    return cfg, st


@asynccontextmanager
async def hub(tmp_path: Path, cloud: StubCloud, wifi: FakeWifi
              ) -> AsyncIterator[tuple[Onboarding, FakeClock]]:
    """A hub paired on HomeNet, started with time on a FakeClock."""
    cfg, st = paired_config(tmp_path)
    clock = FakeClock()
    ob = Onboarding(cfg, st, wifi, cloud, clock=clock, sleep=clock.sleep,
                    rng=random.Random(7))
    await ob.start()
    try:
        yield ob, clock
    finally:
        await ob.stop()


async def until(ob: Onboarding, predicate: Callable[[], bool]) -> None:
    await ob.wait_for(predicate, 5.0)


def offline_after(cloud: StubCloud, tries: int, ob: Onboarding) -> Callable[[], bool]:
    """The ``tries``-th cloud step has ended, and the hub is offline again."""
    return lambda: len(cloud.timeouts) == tries and ob.state == State.OFFLINE and not ob.busy


def assert_on_wifi_waiting_for_the_cloud(ob: Onboarding, wifi: FakeWifi) -> None:
    """What a user sees: on the home network (reachable on the LAN), no hotspot, and a
    status that says the cloud, not the network, is the trouble."""
    assert wifi.active == "HomeNet" and not wifi.hotspot
    assert "hotspot-up" not in wifi.calls
    progress = ob.progress()
    assert progress.state == "offline" and progress.network == "wifi"
    assert not progress.hotspot and not ob.pairing_open
    assert progress.last_failure is not None
    assert progress.last_failure.code == "broker-unreachable"
    assert describe(progress) == ("offline: on Wi-Fi, cloud unreachable, retrying: "
                                  f"{UNREACHABLE.reason}")


async def cloud_retries(ob: Onboarding, clock: FakeClock, cloud: StubCloud, wifi: FakeWifi,
                        ceilings: list[float], first: int) -> list[float]:
    """Let one failing cloud retry happen per ceiling; check each wait lies within half to
    all of its ceiling and the hub stays on its Wi-Fi. ``first``: which of the machine's
    sleeps (counting from 1) is the first retry's wait. Returns the waits."""
    waits = []
    for n, ceiling in enumerate(ceilings, start=first):
        tries = len(cloud.timeouts)
        await clock.sleeps(n)
        wait = clock.slept[n - 1]
        assert ceiling / 2 <= wait <= ceiling, (ceiling, clock.slept)
        waits.append(wait)
        clock.advance(wait)
        await until(ob, offline_after(cloud, tries + 1, ob))
        assert ob.attempt is not None and ob.attempt.source == "retry"
        assert ob.attempt.ssid is None, "the cloud step alone: the Wi-Fi is left as it is"
        assert_on_wifi_waiting_for_the_cloud(ob, wifi)
    return waits


def test_a_hub_booting_during_a_cloud_outage_stays_on_its_wifi_and_backs_off(
        tmp_path: Path) -> None:
    cloud, wifi = StubCloud(), FakeWifi({"HomeNet": "supersecret"})
    cloud.next_failure = UNREACHABLE

    async def scenario() -> None:
        async with hub(tmp_path, cloud, wifi) as (ob, clock):
            paired_at = ob.store.state.paired_at
            await until(ob, offline_after(cloud, 1, ob))  # the boot attempt
            assert_on_wifi_waiting_for_the_cloud(ob, wifi)
            # Far past offline_grace (30 s) and several retry intervals: no hotspot ever.
            ceilings = [5.0, 10.0, 20.0, 40.0, INTERVAL, INTERVAL, INTERVAL]
            waits = await cloud_retries(ob, clock, cloud, wifi, ceilings, first=1)
            assert len(set(waits)) == len(waits), "the waits are jittered"
            assert sum(waits) > GRACE + INTERVAL
            assert not [c for c in wifi.calls if c.startswith(("hotspot", "scan", "forget"))]
            cloud.next_failure = None  # the broker is back
            await clock.sleeps(len(ceilings) + 1)
            clock.advance(clock.slept[-1])
            await until(ob, lambda: ob.state == State.ONLINE and not ob.busy)
            assert cloud.connected == CLOUD and wifi.active == "HomeNet" and not wifi.hotspot
            assert describe(ob.progress()) == "online"
            # The hub's own account, back: not a new pairing (a new paired_at would sign
            # out the portal's admin, and rewrite state.json for nothing).
            assert ob.store.state.paired_at == paired_at

    run(scenario())


def test_the_link_reported_up_while_waiting_for_the_cloud_tries_the_cloud_at_once(
        tmp_path: Path) -> None:
    """NetworkManager reports the link up while the hub waits for its next cloud retry (as
    it does when it comes back after a restart): the cloud step runs at once ("reconnect"),
    not after the wait. The wait that falls due meanwhile ends quietly: once the reconnect
    has failed too, the hub waits for its next cloud retry, and for nothing else."""
    cloud, wifi = StubCloud(), FakeWifi({"HomeNet": "supersecret"})
    cloud.next_failure = UNREACHABLE

    async def scenario() -> None:
        async with hub(tmp_path, cloud, wifi) as (ob, clock):
            await until(ob, offline_after(cloud, 1, ob))
            await clock.sleeps(1)
            wait = clock.slept[0]
            cloud.gate = asyncio.Event()  # holds the reconnect in its cloud step
            wifi.restore_link("HomeNet")
            # The cloud step at once (or, wrongly, the wait begins again).
            await first_of(until(ob, lambda: ob.step == "cloud"), clock.sleeps(2))
            assert ob.state == State.CONNECTING and len(clock.slept) == 1
            assert ob.attempt is not None and ob.attempt.source == "reconnect"
            clock.advance(wait)  # the old wait falls due while the reconnect runs
            cloud.gate.set()
            await until(ob, offline_after(cloud, 2, ob))
            await clock.sleeps(2)
            assert len(cloud.timeouts) == 2 and ob.attempt.source == "reconnect"
            assert clock.slept[1] <= 5.0, f"the next cloud retry's wait only: {clock.slept}"
            assert_on_wifi_waiting_for_the_cloud(ob, wifi)

    run(scenario())


def test_a_retry_falling_due_as_the_link_is_reported_up_is_the_only_attempt(
        tmp_path: Path) -> None:
    """The cloud retry falls due in the moment NetworkManager reports the link up: one cloud
    step, the retry. Before, the reconnect the report asked for began beside the retry
    already running: two cloud steps at once, and once both had failed, progress still
    showed the step "cloud" while the hub was offline."""
    cloud, wifi = StubCloud(), FakeWifi({"HomeNet": "supersecret"})
    cloud.next_failure = UNREACHABLE

    async def scenario() -> None:
        async with hub(tmp_path, cloud, wifi) as (ob, clock):
            await until(ob, offline_after(cloud, 1, ob))
            await clock.sleeps(1)
            clock.advance(clock.slept[0])  # the retry is due ...
            wifi.restore_link("HomeNet")  # ... as NetworkManager reports the link
            await until(ob, lambda: len(cloud.timeouts) >= 2 and ob.state == State.OFFLINE
                        and not ob.busy)
            await clock.sleeps(2)  # the next wait began: every attempt has ended
            assert len(cloud.timeouts) == 2, "one cloud step, not two at once"
            assert ob.attempt is not None and ob.attempt.source == "retry"
            assert ob.progress().step is None
            assert_on_wifi_waiting_for_the_cloud(ob, wifi)

    run(scenario())


def test_a_short_press_whose_hotspot_is_refused_leaves_the_retries_running(
        tmp_path: Path) -> None:
    """The owner presses the button during a cloud outage and NetworkManager refuses the
    hotspot: the press fails, and the hub is off its Wi-Fi as far as it knows (the hotspot's
    scan and activation took the radio). The cloud retry's wait then ends off the network:
    the retries of the saved network go on, and the hub is back online once the broker is.
    Before this test, a hub that stopped retrying there for good passed the suite."""
    cloud, wifi = StubCloud(), WifiWhoseHotspotFails(failures=0)
    wifi.aps["HomeNet"] = "supersecret"
    cloud.next_failure = UNREACHABLE

    async def scenario() -> None:
        async with hub(tmp_path, cloud, wifi) as (ob, clock):
            await until(ob, offline_after(cloud, 1, ob))
            await clock.sleeps(1)
            wifi.failures = 1
            with pytest.raises(RuntimeError, match="NotAllowed"):
                await ob.reopen_hotspot()
            assert not wifi.hotspot and ob.progress().network is None
            clock.advance(clock.slept[0])  # the cloud retry's wait ends, off the network
            await clock.sleeps(2, timeout=5.0)
            wait = clock.slept[1]
            assert INTERVAL / 2 <= wait <= INTERVAL, "a retry of the saved network"
            cloud.next_failure = None  # the broker is back
            clock.advance(wait)
            await until(ob, lambda: ob.state == State.ONLINE and not ob.busy)
            assert ob.attempt is not None and ob.attempt.source == "retry"
            assert ob.attempt.ssid == "HomeNet" and wifi.active == "HomeNet"
            assert cloud.connected == CLOUD and not wifi.hotspot
            assert len(cloud.timeouts) == 2

    run(scenario())


def test_a_wifi_blip_during_a_cloud_outage_does_not_send_the_hub_to_its_hotspot(
        tmp_path: Path) -> None:
    """The review's reproduction: online, the broker stops, the Wi-Fi drops and is back at
    once; the cloud step fails. Before, the hotspot came after offline_grace."""
    cloud, wifi = StubCloud(), FakeWifi({"HomeNet": "supersecret"})

    async def scenario() -> None:
        async with hub(tmp_path, cloud, wifi) as (ob, clock):
            await until(ob, lambda: ob.state == State.ONLINE and not ob.busy)
            cloud.next_failure = UNREACHABLE  # the broker is stopped
            wifi.drop_link()
            await until(ob, lambda: ob.state == State.OFFLINE and not ob.busy)
            await clock.sleeps(1)
            assert clock.slept == [GRACE]  # the network is lost: the grace runs
            wifi.restore_link("HomeNet")  # NetworkManager's autoconnect, at once
            await until(ob, offline_after(cloud, 2, ob))
            assert ob.attempt is not None and ob.attempt.source == "reconnect"
            assert_on_wifi_waiting_for_the_cloud(ob, wifi)
            # At least 37.5 s in all (half of each ceiling): past offline_grace.
            await cloud_retries(ob, clock, cloud, wifi, [5.0, 10.0, 20.0, 40.0], first=2)
            cloud.next_failure = None
            await clock.sleeps(6)
            clock.advance(clock.slept[-1])
            await until(ob, lambda: ob.state == State.ONLINE and not ob.busy)
            assert wifi.active == "HomeNet" and "hotspot-up" not in wifi.calls

    run(scenario())


def test_a_link_lost_during_a_cloud_outage_brings_the_hotspot_after_offline_grace(
        tmp_path: Path) -> None:
    """Waiting for the cloud on Wi-Fi, the network goes too (its router is off): the
    Wi-Fi-lost path as ever, offline_grace from the loss, then the hotspot and jittered
    retries of the saved network."""
    cloud, wifi = StubCloud(), FakeWifi({"HomeNet": "supersecret"})
    cloud.next_failure = UNREACHABLE

    async def scenario() -> None:
        async with hub(tmp_path, cloud, wifi) as (ob, clock):
            await until(ob, offline_after(cloud, 1, ob))
            await cloud_retries(ob, clock, cloud, wifi, [5.0], first=1)
            await clock.sleeps(2)  # waiting for the next cloud retry
            del wifi.aps["HomeNet"]  # the router is off
            wifi.drop_link()
            await clock.sleeps(3)
            assert clock.slept[2] == GRACE, "the grace, from the loss of the link"
            assert not wifi.hotspot and ob.progress().network is None
            assert describe(ob.progress()) == "offline: network lost"
            clock.advance(GRACE)
            await until(ob, lambda: wifi.hotspot and ob.repairable)
            assert describe(ob.progress()) == "offline: network lost; hotspot up for re-pairing"
            waits = []
            for n in (4, 5):  # the saved network, still out of range: the hotspot back
                await clock.sleeps(n)
                wait = clock.slept[n - 1]
                assert INTERVAL / 2 <= wait <= INTERVAL, clock.slept
                waits.append(wait)
                mark = len(wifi.calls)
                clock.advance(wait)
                await clock.sleeps(n + 1)
                assert wifi.calls[mark:] == ["hotspot-down", "scan", "hotspot-up"]
            assert waits[0] != waits[1], "the retries of the saved network are jittered"
            assert len(cloud.timeouts) == 2 and ob.state == State.OFFLINE
            # The router is back before the broker (after a power cut, say): the retry
            # joins the network, the cloud step fails, and the hub stays on the network.
            wifi.aps["HomeNet"] = "supersecret"
            clock.advance(clock.slept[5])
            await until(ob, offline_after(cloud, 3, ob))
            assert ob.attempt is not None and ob.attempt.ssid == "HomeNet"
            assert wifi.calls[-3:] == ["hotspot-down", "scan", "reconnect HomeNet"]
            assert wifi.active == "HomeNet" and not wifi.hotspot and not ob.repairable
            assert describe(ob.progress()).startswith("offline: on Wi-Fi, cloud unreachable")
            await clock.sleeps(7)
            assert clock.slept[6] <= 10.0, "a cloud retry's wait, not the saved network's"

    run(scenario())


def test_a_short_press_during_a_cloud_outage_brings_the_hotspot_for_its_owner_at_once(
        tmp_path: Path) -> None:
    """The owner's way to re-pair (a new account, say) works from the new wait too: the
    hotspot at once and pairing open while the press's window is; a retry that finds the
    broker still down brings the hotspot back while the window is open. Once it has
    closed, the next such retry leaves the hub on its network."""
    cloud, wifi = StubCloud(), FakeWifi({"HomeNet": "supersecret"})
    cloud.next_failure = UNREACHABLE
    window = [False]

    async def scenario() -> None:
        async with hub(tmp_path, cloud, wifi) as (ob, clock):
            ob.window = lambda: window[0]
            await until(ob, offline_after(cloud, 1, ob))
            await cloud_retries(ob, clock, cloud, wifi, [5.0], first=1)
            await clock.sleeps(2)  # waiting for the next cloud retry
            window[0] = True  # the short press: its window opens, and the hotspot comes
            assert await ob.reopen_hotspot() is True
            assert wifi.hotspot and wifi.active is None and ob.pairing_open
            await clock.sleeps(3)
            wait = clock.slept[2]
            assert INTERVAL / 2 <= wait <= INTERVAL, "a retry of the saved network, no grace"
            clock.advance(wait)  # nobody on the portal: the retry; the broker is still down
            await until(ob, offline_after(cloud, 3, ob))
            assert wifi.hotspot and ob.pairing_open, "the window is open: the hotspot is back"
            window[0] = False  # the window closes
            await clock.sleeps(4)
            clock.advance(clock.slept[3])
            await until(ob, offline_after(cloud, 4, ob))
            assert wifi.active == "HomeNet" and not wifi.hotspot and not ob.pairing_open
            assert describe(ob.progress()).startswith("offline: on Wi-Fi, cloud unreachable")
            await clock.sleeps(5)
            assert clock.slept[4] <= 10.0, "a cloud retry's wait, not the saved network's"

    run(scenario())


def test_an_account_the_broker_refuses_keeps_the_hotspot_path(tmp_path: Path) -> None:
    """Refused credentials (the account gone or revoked) are not an outage: as before, the
    hotspot comes after offline_grace for re-pairing; while on the network, the status
    says the cloud step failed and why, not "network lost"."""
    cloud, wifi = StubCloud(), FakeWifi({"HomeNet": "supersecret"})
    cloud.next_failure = REFUSED

    async def scenario() -> None:
        async with hub(tmp_path, cloud, wifi) as (ob, clock):
            await until(ob, offline_after(cloud, 1, ob))
            assert wifi.active == "HomeNet" and not wifi.hotspot
            assert describe(ob.progress()) == ("offline: on Wi-Fi, cloud step failed: "
                                               f"{REFUSED.reason}")
            await clock.sleeps(1)
            assert clock.slept == [GRACE]
            clock.advance(GRACE)
            await until(ob, lambda: wifi.hotspot and ob.repairable)
            assert len(cloud.timeouts) == 1

    run(scenario())
