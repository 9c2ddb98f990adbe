"""Onboarding against python-dbusmock's NetworkManager on a private bus (issue 3)."""

from __future__ import annotations

import asyncio
import functools
import itertools
import random
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gatewayd.ap import HOTSPOT_ID, NetworkManagerControl
from gatewayd.cloud.ownership import Ownership
from gatewayd.config import Config, with_overrides
from gatewayd.credentials import CloudCredentials, WifiCredentials
from gatewayd.identity import Identity
from gatewayd.onboarding.hotspot_watch import WATCH_CABLE, WATCH_FIRST
from gatewayd.onboarding.machine import Onboarding
from gatewayd.onboarding.pairing import InvalidRequest, PairingRequest, PairingService
from gatewayd.onboarding.progress import Progress, describe
from gatewayd.onboarding.steps import Failure, StepResult
from gatewayd.onboarding.table import State
from gatewayd.simulator.dbus_daemon import PrivateBus
from gatewayd.simulator.nm_mock import CONN_IFACE, NM_IFACE, NM_PATH, NetworkManagerMock
from tests.fakes import FakeClock, StubCloud
from tests.helpers import run_async

IDENTITY = Identity("dc-a6-32-12-34-56", "dc:a6:32:12:34:56", "Acme Hub")
CLOUD = CloudCredentials("user@example.com", "t0k", "127.0.0.1", 1883)
HOME = WifiCredentials("HomeNet", "supersecret")


run = functools.partial(run_async, timeout=60.0)


@pytest.fixture(scope="module")
def bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBus]:
    b = PrivateBus(tmp_path_factory.mktemp("bus")).start()
    yield b
    b.stop()


@pytest.fixture
def nm(bus: PrivateBus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
       ) -> Iterator[NetworkManagerMock]:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)
    mock = NetworkManagerMock(bus, tmp_path / "nm").start()
    yield mock
    mock.stop()


def make_config(tmp_path: Path, **hotspot: Any) -> Config:
    cfg = with_overrides(Config(), hub={"state_dir": str(tmp_path / "state"),
                                        "product": "Acme Hub"})
    return with_overrides(cfg, hotspot={"connect_timeout": 5.0, **hotspot})


def store_for(cfg: Config) -> Any:
    from gatewayd.state import StateStore

    store = StateStore(cfg.state_dir)
    store.open(device_id=IDENTITY.device_id, mac=IDENTITY.mac)
    return store


@asynccontextmanager
async def onboarding(cfg: Config, store: Any, cloud: StubCloud | None = None,
                     wifi: bool = True) -> AsyncIterator[Onboarding]:
    control = NetworkManagerControl(cfg, IDENTITY) if wifi else None
    ob = Onboarding(cfg, store, control, cloud or StubCloud())
    await ob.start()
    try:
        yield ob
    finally:
        await ob.stop()


async def until(ob: Onboarding, predicate: Callable[[], bool], timeout: float = 10) -> None:
    await ob.wait_for(predicate, timeout)


def press_button(ob: Onboarding) -> None:
    """A short press, as the machine sees it: the window it opens (the daemon wires the BLE
    commissioning window) is open. A paired hub offline on its hotspot takes pairing
    requests only then (or from a signed-in admin)."""
    ob.window = lambda: True


def profile(nm: NetworkManagerMock, conn_id: str) -> dict[str, Any]:
    for conn in nm.connections():
        if conn["connection"]["id"] == conn_id:
            return conn
    raise AssertionError(f"no profile {conn_id!r} in {profile_ids(nm)}")


def profile_ids(nm: NetworkManagerMock) -> list[str]:
    return [c["connection"]["id"] for c in nm.connections()]


def active_ids(nm: NetworkManagerMock) -> list[str]:
    # Real NetworkManager (1.42+) keeps a loopback connection active too; it is not ours.
    return [a["id"] for a in nm.active_connections() if a["id"] != "lo"]


def request(wifi: WifiCredentials | None, cloud: CloudCredentials = CLOUD) -> PairingRequest:
    return PairingRequest(cloud=cloud, wifi=wifi, source="test")


def fields(wifi: WifiCredentials | None, cloud: CloudCredentials = CLOUD) -> dict[str, Any]:
    """The /pair fields that carry ``wifi`` and ``cloud``."""
    out: dict[str, Any] = {"wsp": cloud.wsp, "token": cloud.token, "host": cloud.host,
                           "brport": str(cloud.port)}
    if wifi is not None:
        out.update(ssid=wifi.ssid, psk=wifi.psk, hidden=wifi.hidden)
    return out


def test_fresh_start_raises_in_memory_hotspot_and_caches_scan(
        nm: NetworkManagerMock, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, password="hotspot-pass")
    store = store_for(cfg)

    async def scenario() -> None:
        async with onboarding(cfg, store) as ob:
            assert ob.state == State.UNPAIRED and ob.pairing_open
            ssids = [n["ssid"] for n in ob.networks()]
            assert ssids[0] == "HomeNet" and ssids.count("HomeNet") == 1
            assert {"Cafe WPA3", "Guest", "Office"} <= set(ssids)
            assert "Hidden Lab" not in ssids
            signals = [n["signal"] for n in ob.networks()]
            assert signals == sorted(signals, reverse=True)
            hotspot = profile(nm, HOTSPOT_ID)
            assert active_ids(nm) == [HOTSPOT_ID]
            wireless = hotspot["802-11-wireless"]
            assert bytes(wireless["ssid"]).decode() == "Acme Hub 3456"
            assert wireless["mode"] == "ap" and wireless["band"] == "bg"
            assert hotspot["connection"]["autoconnect"] is False
            assert hotspot["connection"]["interface-name"] == "wlan0"
            sec = hotspot["802-11-wireless-security"]
            assert sec["key-mgmt"] == "wpa-psk" and list(sec["proto"]) == ["rsn"]
            assert sec["pmf"] == 1
            assert hotspot["ipv4"]["method"] == "shared"
            assert hotspot["ipv4"]["address-data"][0]["address"] == "192.168.4.1"
            assert hotspot["ipv4"]["address-data"][0]["prefix"] == 24
            assert hotspot["ipv6"]["method"] == "ignore"
            assert nm._get(hotspot["path"], CONN_IFACE, "Unsaved"), "hotspot must be in memory"

    run(scenario())


def test_wpa2_pairing_goes_online_and_commits(nm: NetworkManagerMock, tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    store = store_for(cfg)

    async def scenario() -> None:
        async with onboarding(cfg, store) as ob:
            service = PairingService(ob, cfg.cloud)
            await service.submit(fields(HOME), "test")
            await until(ob, lambda: ob.state == State.ONLINE)
            client = profile(nm, "gatewayd-client-HomeNet")
            assert client["802-11-wireless-security"]["key-mgmt"] == "wpa-psk"
            assert client["802-11-wireless-security"]["psk"] == "supersecret"
            assert client["connection"]["autoconnect"] is True
            assert active_ids(nm) == ["gatewayd-client-HomeNet"]
            assert not ob.pairing_open
            assert store.state.wifi == HOME and store.state.cloud == CLOUD

    run(scenario())


def test_wrong_password_falls_back_with_reason_and_keeps_old_credentials(
        nm: NetworkManagerMock, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, offline_grace=0.2, retry_interval=30.0)
    store = store_for(cfg)
    store.commit_pairing(HOME, CLOUD)
    nm.remove_ap("HomeNet")  # the old network is gone: the hub ends up offline + hotspot

    async def scenario() -> None:
        async with onboarding(cfg, store) as ob:
            await until(ob, lambda: ob.repairable)
            assert ob.state == State.OFFLINE and HOTSPOT_ID in active_ids(nm)
            assert not ob.pairing_open, "paired: closed to whoever is in range"
            press_button(ob)
            other = CloudCredentials("new@example.com", "t2", "127.0.0.1", 1883)
            await PairingService(ob, cfg.cloud).submit(
                fields(WifiCredentials("Office", "not the password"), other), "test")
            await until(ob, lambda: ob.last_failure is not None and ob.pairing_open)
            assert ob.last_failure.code == Failure.WRONG_PASSWORD
            assert "password" in ob.last_failure.reason
            assert HOTSPOT_ID in active_ids(nm)
            assert store.state.wifi == HOME and store.state.cloud == CLOUD
            assert "gatewayd-client-Office" not in profile_ids(nm)

    run(scenario())


@pytest.mark.parametrize(
    ("wifi", "expect"),
    [
        (WifiCredentials("Hidden Lab", "labpassword", hidden=True), {"hidden": True,
                                                                    "key-mgmt": "wpa-psk"}),
        (WifiCredentials("Guest", ""), {"hidden": None, "key-mgmt": None}),
        (WifiCredentials("Cafe WPA3", "espresso-doppio"), {"hidden": None, "key-mgmt": "sae"}),
        (WifiCredentials("Office", "correct horse battery"), {"hidden": None,
                                                             "key-mgmt": "sae"}),
    ],
)
def test_hidden_open_and_wpa3_profiles(nm: NetworkManagerMock, tmp_path: Path,
                                       wifi: WifiCredentials, expect: dict[str, Any]) -> None:
    cfg = make_config(tmp_path)
    store = store_for(cfg)

    async def scenario() -> None:
        async with onboarding(cfg, store) as ob:
            await ob.begin(request(wifi))
            await until(ob, lambda: ob.state in (State.ONLINE, State.UNPAIRED)
                        and ob.attempt is not None and not ob.busy)
            assert ob.state == State.ONLINE, ob.last_failure
            client = profile(nm, f"gatewayd-client-{wifi.ssid}")
            assert client["802-11-wireless"].get("hidden") == expect["hidden"]
            sec = client.get("802-11-wireless-security")
            assert (sec["key-mgmt"] if sec else None) == expect["key-mgmt"]

    run(scenario())


def test_network_not_found_and_broker_refused_are_reported(nm: NetworkManagerMock,
                                                           tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    store = store_for(cfg)
    cloud = StubCloud()

    async def scenario() -> None:
        async with onboarding(cfg, store, cloud) as ob:
            await ob.begin(request(WifiCredentials("Nowhere", "password123")))
            await until(ob, lambda: ob.last_failure is not None and ob.progress().hotspot)
            assert ob.last_failure.code == Failure.NETWORK_NOT_FOUND
            assert ob.state == State.UNPAIRED and HOTSPOT_ID in active_ids(nm)
            cloud.next_failure = StepResult(False, Failure.BROKER_REFUSED,
                                            "broker refused the credentials")
            await ob.begin(request(HOME))
            await until(ob, lambda: ob.last_failure is not None
                        and ob.last_failure.code == Failure.BROKER_REFUSED
                        and ob.progress().hotspot)
            assert ob.state == State.UNPAIRED and HOTSPOT_ID in active_ids(nm)
            assert not store.state.paired
            ids = profile_ids(nm)
            assert "gatewayd-client-HomeNet" not in ids, "unproven profile left behind"

    run(scenario())


def test_wifi_drop_brings_hotspot_back_then_online_again(nm: NetworkManagerMock,
                                                         tmp_path: Path) -> None:
    cfg = make_config(tmp_path, offline_grace=0.3, retry_interval=0.3)
    store = store_for(cfg)

    async def scenario() -> None:
        async with onboarding(cfg, store) as ob:
            await ob.begin(request(HOME))
            await until(ob, lambda: ob.state == State.ONLINE)
            # The network goes out of range: that alone drops the link (asking the mock to
            # drop it as well could come after it already had: a race lost under load).
            nm.remove_ap("HomeNet")
            await until(ob, lambda: ob.state == State.OFFLINE)
            await until(ob, lambda: ob.repairable)  # hotspot is back after the grace time
            assert HOTSPOT_ID in active_ids(nm)
            assert store.state.wifi == HOME
            nm.restore_ap("HomeNet")
            await until(ob, lambda: ob.state == State.ONLINE, timeout=20)
            assert active_ids(nm) == ["gatewayd-client-HomeNet"]

    run(scenario())


def test_ethernet_only_hub_never_creates_wifi_profiles(bus: PrivateBus, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)
    with NetworkManagerMock(bus, tmp_path / "nm", ethernet_connected=True) as nm:
        for enabled in (True, False):
            cfg = make_config(tmp_path / str(enabled), enabled=enabled)
            store = store_for(cfg)

            async def scenario(cfg: Config = cfg, store: Any = store,
                               wifi_on: bool = enabled) -> None:
                async with onboarding(cfg, store, wifi=wifi_on) as ob:
                    service = PairingService(ob, cfg.cloud, wifi_enabled=wifi_on)
                    assert ob.pairing_open
                    await service.submit({"ssid": "HomeNet", "psk": "supersecret",
                                          "wsp": "user@example.com", "token": "t0k",
                                          "host": "127.0.0.1", "brport": "1883"}, "test")
                    await until(ob, lambda: ob.state == State.ONLINE)

            run(scenario())
            ids = profile_ids(nm)
            assert not [i for i in ids if i.startswith("gatewayd-")], ids


def test_an_unpaired_hub_on_its_cable_raises_its_hotspot_when_the_cable_is_pulled(
        bus: PrivateBus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before, the watchdog asked NetworkManager every 5 s for as long as the hub sat on
    its cable. Now NetworkManager's signal tells it the cable went: here the watchdog's
    clock stops after its first look, so only the signal can bring the hotspot back."""
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)
    with NetworkManagerMock(bus, tmp_path / "nm", ethernet_connected=True) as nm:
        cfg = make_config(tmp_path)
        clock = FakeClock()

        async def scenario() -> None:
            ob = Onboarding(cfg, store_for(cfg), NetworkManagerControl(cfg, IDENTITY),
                            StubCloud(), clock=clock, sleep=clock.sleep)
            await ob.start()
            try:
                assert ob.state == State.UNPAIRED and ob.pairing_open
                assert HOTSPOT_ID not in active_ids(nm)  # the hub pairs over the LAN
                await clock.sleeps(1)
                clock.advance(clock.slept[-1])  # the watchdog's first look: the cable is in
                await clock.sleeps(2)  # it waits again
                nm.set_ethernet_carrier(False)
                await until(ob, lambda: ob.progress().hotspot, timeout=20)
                assert active_ids(nm) == [HOTSPOT_ID]
                assert clock.slept == [WATCH_FIRST, WATCH_CABLE]  # no poll brought it
            finally:
                await ob.stop()

        run(scenario())


def test_reset_returns_to_unpaired_and_forgets_client_profile(nm: NetworkManagerMock,
                                                              tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    store = store_for(cfg)

    async def scenario() -> None:
        async with onboarding(cfg, store) as ob:
            await ob.begin(request(HOME))
            await until(ob, lambda: ob.state == State.ONLINE)
            store.reset()
            await ob.reset()
            await until(ob, lambda: ob.state == State.UNPAIRED and ob.pairing_open)
            assert active_ids(nm) == [HOTSPOT_ID]
            assert "gatewayd-client-HomeNet" not in profile_ids(nm)

    run(scenario())


def test_real_cloud_link_refused_token_falls_back_then_pairs(nm: NetworkManagerMock,
                                                             tmp_path: Path) -> None:
    """Onboarding's cloud step against a real mosquitto with the cloud's password + ACL."""
    from gatewayd.onboarding.cloud_step import CloudLinkStep
    from tests.cloud_helpers import Monitor, creds_for, make_broker, make_hub, make_link

    broker = make_broker(tmp_path / "broker")
    cfg = make_config(tmp_path)
    store = store_for(cfg)
    hub = make_hub()
    link = make_link(hub=hub)
    try:
        with Monitor(broker) as monitor:
            async def scenario() -> None:
                step = CloudLinkStep(link, store, Ownership(link))
                async with onboarding(cfg, store, step) as ob:
                    bad = creds_for(broker, token="wrong-token")
                    await ob.begin(request(HOME, bad))
                    await until(ob, lambda: ob.last_failure is not None
                                and ob.progress().hotspot)
                    assert ob.last_failure.code == Failure.BROKER_REFUSED
                    assert "token" in ob.last_failure.reason or \
                        "credentials" in ob.last_failure.reason
                    assert not store.state.paired and HOTSPOT_ID in active_ids(nm)
                    good = creds_for(broker)
                    await ob.begin(request(HOME, good))
                    await until(ob, lambda: ob.state == State.ONLINE)
                    assert store.state.cloud == good
                    await monitor.await_for(f"{good.root}/sweet-home/{hub.id}/$state",
                                            "ready")

            run(scenario())
    finally:
        broker.stop()


def test_a_mistyped_broker_port_fails_without_waiting_out_the_timeout(
        nm: NetworkManagerMock, tmp_path: Path) -> None:
    """Nothing listens on the port: every try is refused at once, and after a short run of
    refusals the user hears `broker-unreachable` (it took the whole connect_timeout, here
    300 s: the bound below is far under it)."""
    from gatewayd.onboarding.cloud_step import CloudLinkStep
    from gatewayd.simulator.procs import free_port
    from tests.cloud_helpers import creds_for, make_hub, make_link

    cfg = make_config(tmp_path, connect_timeout=300.0)
    store = store_for(cfg)
    link = make_link(hub=make_hub())

    async def scenario() -> None:
        step = CloudLinkStep(link, store, Ownership(link))
        async with onboarding(cfg, store, step) as ob:
            await ob.begin(request(HOME, creds_for(None, port=free_port())))
            await until(ob, lambda: ob.last_failure is not None and ob.progress().hotspot,
                        timeout=60)
            assert ob.last_failure.code == Failure.BROKER_UNREACHABLE
            assert "nothing listens there" in ob.last_failure.reason
            assert not store.state.paired and HOTSPOT_ID in active_ids(nm)

    run(scenario())


def test_a_paired_hub_booting_while_its_broker_is_down_waits_it_out(
        nm: NetworkManagerMock, tmp_path: Path) -> None:
    """Its port worked when it paired: refused now, the broker is starting (a power cut
    brought both back, the hub first). The boot attempt goes on past the run of refusals
    that ends a pairing with a mistyped port, instead of failing into offline."""
    from gatewayd.cloud.attempts import CloudResult
    from gatewayd.cloud.outcome import CLOSED_SETTLE
    from gatewayd.onboarding.cloud_step import CloudLinkStep
    from gatewayd.simulator.procs import free_port
    from tests.cloud_helpers import creds_for, make_hub, make_link

    cfg = make_config(tmp_path, connect_timeout=300.0)
    store = store_for(cfg)
    store.commit_pairing(HOME, creds_for(None, port=free_port()))
    link = make_link(hub=make_hub())

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        refused: list[float] = []
        settled = asyncio.Event()  # a run that would have ended a new account's attempt

        def listener(result: CloudResult) -> None:
            if result.port_closed:
                refused.append(loop.time())
                if len(refused) >= 4 and refused[-1] - refused[0] > CLOSED_SETTLE + 1:
                    settled.set()

        link.add_listener(listener)
        step = CloudLinkStep(link, store, Ownership(link))
        async with onboarding(cfg, store, step) as ob:
            # Whichever comes first: the run of refusals, or the attempt's end.
            waits = [asyncio.ensure_future(settled.wait()), asyncio.ensure_future(
                ob.wait_for(lambda: ob.last_failure is not None, 60))]
            done, pending = await asyncio.wait(waits, timeout=60,
                                               return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            assert ob.last_failure is None, "the boot attempt ended on the closed port"
            assert done and ob.state == State.CONNECTING
            assert ob.progress().step == "cloud" and store.state.paired

    run(scenario())


# --- "Wi-Fi first, cloud later" (Improv without cloud presets) ------------------------------

IMPROV_FIELDS = {"ssid": "HomeNet", "psk": "supersecret"}
CLOUD_FIELDS = {"wsp": "user@example.com", "token": "t0k", "host": "127.0.0.1",
                "brport": "1883"}


def client_ids(nm: NetworkManagerMock) -> list[str]:
    return [i for i in profile_ids(nm) if i.startswith("gatewayd-client-")]


def joined(ob: Onboarding) -> bool:
    """Settled in "unpaired, on the Wi-Fi network" (pairing_open is False while entering)."""
    return ob.state == State.UNPAIRED and ob.progress().network == "wifi" and \
        ob.pairing_open


def assert_joined(ob: Onboarding, nm: NetworkManagerMock, store: Any) -> None:
    progress = ob.progress()
    assert progress.state == "unpaired" and progress.network == "wifi"
    assert progress.hotspot is False and progress.pairing_open is True
    assert progress.last_failure is None and progress.step is None
    assert active_ids(nm) == ["gatewayd-client-HomeNet"]
    assert store.state.wifi == HOME and store.state.cloud is None
    assert not store.state.paired and store.state.paired_at is None


def test_wifi_only_request_needs_the_explicit_permission(tmp_path: Path) -> None:
    from gatewayd.onboarding.pairing import InvalidRequest

    cfg = make_config(tmp_path)  # no cloud presets
    service = PairingService(StubOnboarding(), cfg.cloud)
    with pytest.raises(InvalidRequest) as refused:
        service.parse(IMPROV_FIELDS, "http")
    assert refused.value.field == "wsp" and refused.value.message.startswith("wsp: ")
    request = service.parse(IMPROV_FIELDS, "ble-improv", allow_wifi_only=True)
    assert request.wifi == HOME and request.cloud is None and request.wifi_only
    assert request.redacted()["cloud"] is None
    # A request that brings cloud fields of its own must bring all of them.
    with pytest.raises(InvalidRequest) as partial:
        service.parse({**IMPROV_FIELDS, "wsp": "user@example.com"}, "ble-improv",
                      allow_wifi_only=True)
    assert partial.value.field == "token"
    # Without Wi-Fi there is nothing to do: the cloud fields are required as always.
    with pytest.raises(InvalidRequest) as empty:
        service.parse({}, "ble-improv", allow_wifi_only=True)
    assert empty.value.field == "wsp"
    ethernet = PairingService(StubOnboarding(), cfg.cloud, wifi_enabled=False)
    with pytest.raises(InvalidRequest):
        ethernet.parse(IMPROV_FIELDS, "ble-improv", allow_wifi_only=True)
    with pytest.raises(ValueError):
        PairingRequest(cloud=None, wifi=None)
    # Complete presets: the same Improv fields pair fully, as before.
    presets = with_overrides(cfg, cloud={"host": "127.0.0.1", "wsp": "vendor@example.com",
                                         "token": "vendor-token"}).cloud
    full = PairingService(StubOnboarding(), presets).parse(IMPROV_FIELDS, "ble-improv",
                                                           allow_wifi_only=True)
    assert full.cloud is not None and full.cloud.wsp == "vendor@example.com"


class StubOnboarding:
    pairing_open = True
    busy = False
    repairable = False
    window_seconds = None
    long_press_seconds = None

    async def begin(self, request: PairingRequest) -> None:
        raise AssertionError("not submitted")

    def progress(self) -> Progress:
        raise AssertionError("not asked")


def test_wifi_first_then_cloud_over_the_lan(nm: NetworkManagerMock, tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    store = store_for(cfg)
    cloud = StubCloud()

    async def scenario() -> None:
        async with onboarding(cfg, store, cloud) as ob:
            assert HOTSPOT_ID in active_ids(nm)
            service = PairingService(ob, cfg.cloud)
            progress = await service.submit(IMPROV_FIELDS, "ble-improv", allow_wifi_only=True)
            assert progress.attempt is not None and progress.attempt.cloud is False
            await until(ob, lambda: joined(ob))
            assert_joined(ob, nm, store)
            assert cloud.connected is None, "no cloud step without an account"

            # The cloud part fails: still on the LAN, no hotspot, the reason is there.
            cloud.next_failure = StepResult(False, Failure.BROKER_REFUSED, "refused")
            await service.submit(CLOUD_FIELDS, "http")
            await until(ob, lambda: ob.last_failure is not None and not ob.busy
                        and ob.pairing_open)
            assert ob.state == State.UNPAIRED and ob.last_failure.code == "broker-refused"
            assert ob.progress().network == "wifi" and not ob.progress().hotspot
            assert active_ids(nm) == ["gatewayd-client-HomeNet"]
            assert store.state.wifi == HOME and store.state.cloud is None

            # The cloud part over the LAN (the "No Wi-Fi" variant): online, both stored.
            cloud.next_failure = None
            await service.submit(CLOUD_FIELDS, "http")
            await until(ob, lambda: ob.state == State.ONLINE)
            assert store.state.wifi == HOME and store.state.cloud == CLOUD
            assert store.state.paired and not ob.pairing_open
            assert active_ids(nm) == ["gatewayd-client-HomeNet"]
            assert cloud.connected == CLOUD

    run(scenario())


def test_wifi_first_then_a_full_request_for_the_same_network(nm: NetworkManagerMock,
                                                              tmp_path: Path) -> None:
    # What the panel's form sends on a Wi-Fi hub: the network again, with the account.
    cfg = make_config(tmp_path)
    store = store_for(cfg)

    async def scenario() -> None:
        async with onboarding(cfg, store) as ob:
            await ob.begin(PairingRequest(cloud=None, wifi=HOME, source="ble-improv"))
            await until(ob, lambda: joined(ob))
            await ob.begin(request(HOME))
            await until(ob, lambda: ob.state == State.ONLINE)
            assert store.state.wifi == HOME and store.state.cloud == CLOUD
            assert active_ids(nm) == ["gatewayd-client-HomeNet"]
            assert client_ids(nm) == ["gatewayd-client-HomeNet"]

    run(scenario())


def test_failed_wifi_only_attempt_falls_back_to_the_hotspot(nm: NetworkManagerMock,
                                                            tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    store = store_for(cfg)

    async def scenario() -> None:
        async with onboarding(cfg, store) as ob:
            service = PairingService(ob, cfg.cloud)
            await service.submit({"ssid": "Office", "psk": "not the password"},
                                 "ble-improv", allow_wifi_only=True)
            await until(ob, lambda: ob.last_failure is not None and ob.pairing_open)
            assert ob.state == State.UNPAIRED and ob.last_failure.code == "wrong-password"
            assert ob.progress().hotspot and ob.progress().network is None
            assert active_ids(nm) == [HOTSPOT_ID]
            assert store.state.wifi is None and store.state.cloud is None
            assert client_ids(nm) == [], "unproven profile left behind"

    run(scenario())


def test_boot_with_wifi_only_state_rejoins_without_hotspot(nm: NetworkManagerMock,
                                                           tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    store = store_for(cfg)

    async def first_boot() -> None:
        async with onboarding(cfg, store) as ob:
            await ob.begin(PairingRequest(cloud=None, wifi=HOME, source="ble-improv"))
            await until(ob, lambda: joined(ob))

    run(first_boot())
    assert store.state.wifi == HOME and store.state.cloud is None

    seen: list[tuple[State, bool]] = []

    async def second_boot() -> None:
        control = NetworkManagerControl(cfg, IDENTITY)
        ob = Onboarding(cfg, store_for(cfg), control, StubCloud())
        ob.subscribe(lambda state, progress: seen.append((state, progress.hotspot)))
        await ob.start()
        try:
            await until(ob, lambda: joined(ob))
            assert_joined(ob, nm, ob.store)
            assert ob.attempt is not None and ob.attempt.source == "boot"
        finally:
            await ob.stop()

    run(second_boot())
    # Each step of the attempt is heard too (the status line names it): the same pair.
    assert [heard for heard, _ in itertools.groupby(seen)] == [(State.CONNECTING, False),
                                                               (State.UNPAIRED, False)]
    # The hotspot profile of the first boot was dropped at start; none was made again.
    assert HOTSPOT_ID not in profile_ids(nm)


def test_wifi_only_boot_failure_raises_the_hotspot_at_once_and_retries(
        nm: NetworkManagerMock, tmp_path: Path) -> None:
    # A long grace: the hotspot below is there because the attempt failed, not because a
    # paired hub's grace period ran out.
    cfg = make_config(tmp_path, offline_grace=300.0, retry_interval=0.3)
    store = store_for(cfg)
    store.commit_wifi(HOME)
    nm.remove_ap("HomeNet")  # the saved network is away at boot

    async def scenario() -> None:
        async with onboarding(cfg, store) as ob:
            # The boot attempt fails: hotspot back with the reason; the saved network stays
            # saved and is retried from the hotspot.
            await until(ob, lambda: ob.last_failure is not None and ob.pairing_open)
            assert ob.state == State.OFFLINE and ob.progress().hotspot
            assert ob.last_failure.code == "network-not-found"
            assert HOTSPOT_ID in active_ids(nm)
            assert store.state.wifi == HOME and store.state.cloud is None
            nm.restore_ap("HomeNet")
            await until(ob, lambda: joined(ob), timeout=20)
            assert_joined(ob, nm, store)

    run(scenario())


def test_wifi_only_hub_that_loses_its_network_falls_back_and_rejoins(
        nm: NetworkManagerMock, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, offline_grace=0.3, retry_interval=0.3)
    store = store_for(cfg)

    async def scenario() -> None:
        async with onboarding(cfg, store) as ob:
            await ob.begin(PairingRequest(cloud=None, wifi=HOME, source="ble-improv"))
            await until(ob, lambda: joined(ob))
            # On the network, then the network goes out of range (which drops the link by
            # itself): offline, hotspot after the grace.
            nm.remove_ap("HomeNet")
            await until(ob, lambda: ob.state == State.OFFLINE)
            assert store.state.wifi == HOME and ob.progress().network is None
            await until(ob, lambda: ob.pairing_open)
            assert HOTSPOT_ID in active_ids(nm) and store.state.wifi == HOME
            nm.restore_ap("HomeNet")
            await until(ob, lambda: joined(ob), timeout=20)
            assert_joined(ob, nm, store)

    run(scenario())


def test_wifi_only_request_on_a_paired_offline_hub_keeps_the_account(
        nm: NetworkManagerMock, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, offline_grace=0.2, retry_interval=30.0)
    store = store_for(cfg)
    store.commit_pairing(HOME, CLOUD)
    nm.remove_ap("HomeNet")
    guest = WifiCredentials("Guest", "")

    async def scenario() -> None:
        cloud = StubCloud()
        async with onboarding(cfg, store, cloud) as ob:
            await until(ob, lambda: ob.repairable)
            assert ob.state == State.OFFLINE
            press_button(ob)  # Improv's authorization: the window is open
            await ob.begin(PairingRequest(cloud=None, wifi=guest, source="ble-improv"))
            await until(ob, lambda: ob.state == State.ONLINE)
            assert store.state.wifi == guest and store.state.cloud == CLOUD
            # The stored account, proven before: a closed port would be waited out.
            assert cloud.typed_in[-1] is False

    run(scenario())


def test_reset_after_wifi_first_forgets_the_network(nm: NetworkManagerMock,
                                                    tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    store = store_for(cfg)

    async def scenario() -> None:
        async with onboarding(cfg, store) as ob:
            await ob.begin(PairingRequest(cloud=None, wifi=HOME, source="ble-improv"))
            await until(ob, lambda: joined(ob))
            store.reset()
            await ob.reset()
            await until(ob, lambda: ob.state == State.UNPAIRED and ob.pairing_open
                        and ob.progress().hotspot)
            assert ob.progress().network is None and active_ids(nm) == [HOTSPOT_ID]
            assert store.state.wifi is None and client_ids(nm) == []

    run(scenario())


def test_wifi_first_then_cloud_on_a_real_broker(nm: NetworkManagerMock, tmp_path: Path) -> None:
    """The cloud part of "Wi-Fi first, cloud later" through the real cloud link."""
    from gatewayd.onboarding.cloud_step import CloudLinkStep
    from tests.cloud_helpers import Monitor, creds_for, make_broker, make_hub, make_link

    broker = make_broker(tmp_path / "broker")
    cfg = make_config(tmp_path)
    store = store_for(cfg)
    hub = make_hub()
    link = make_link(hub=hub)
    try:
        with Monitor(broker) as monitor:
            async def scenario() -> None:
                step = CloudLinkStep(link, store, Ownership(link))
                async with onboarding(cfg, store, step) as ob:
                    await ob.begin(PairingRequest(cloud=None, wifi=HOME, source="ble-improv"))
                    await until(ob, lambda: joined(ob))
                    assert_joined(ob, nm, store)
                    good = creds_for(broker)
                    await ob.begin(request(None, good))
                    await until(ob, lambda: ob.state == State.ONLINE)
                    assert store.state.cloud == good and store.state.wifi == HOME
                    assert active_ids(nm) == ["gatewayd-client-HomeNet"]
                    await monitor.await_for(f"{good.root}/sweet-home/{hub.id}/$state",
                                            "ready")

            run(scenario())
    finally:
        broker.stop()


def test_an_access_point_that_vanishes_while_being_read_is_skipped(
        nm: NetworkManagerMock, tmp_path: Path) -> None:
    """The scan race (issue 18): NetworkManager lists an AP that is gone when its properties
    are read. The attempt goes on; no raw D-Bus text ever reaches the user."""
    cfg = make_config(tmp_path)
    store = store_for(cfg)

    async def scenario() -> None:
        async with onboarding(cfg, store) as ob:
            assert "Cafe WPA3" in [n["ssid"] for n in ob.networks()]
            nm.vanish_after_listing("Cafe WPA3")
            await PairingService(ob, cfg.cloud).submit(
                {**fields(WifiCredentials("HomeNet", "supersecret")), "hidden": True}, "test")
            await until(ob, lambda: not ob.busy and ob.state is not None)
            assert ob.state == State.ONLINE, ob.last_failure
            assert "Cafe WPA3" not in [n["ssid"] for n in ob.networks()]

    run(scenario())


def test_a_refusing_network_manager_gives_a_sentence_not_dbus_text(
        nm: NetworkManagerMock, tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    store_for(cfg)
    control = NetworkManagerControl(cfg, IDENTITY)

    async def scenario() -> None:
        await control.start(lambda up, reason: None)
        try:
            # An object path that is not a connection: NetworkManager answers with a D-Bus
            # error whose text must stay in the log.
            result = await control._activate("/org/freedesktop/NetworkManager/Settings/404", 2)
        finally:
            await control.stop()
        assert not result.ok and result.failure == Failure.WIFI_FAILED
        assert "org.freedesktop" not in result.reason and "Error" not in result.reason

    run(scenario())


def test_a_retry_as_soon_as_progress_shows_the_failure_is_taken(
        nm: NetworkManagerMock, tmp_path: Path) -> None:
    """Issue 18: an app that retries the moment progress shows a failure was told "busy"
    while the hotspot came back. The request now waits for the attempt's ending."""
    cfg = make_config(tmp_path)
    store = store_for(cfg)

    async def scenario() -> None:
        async with onboarding(cfg, store) as ob:
            service = PairingService(ob, cfg.cloud)
            await service.submit(fields(WifiCredentials("HomeNet", "wrong-password")), "test")
            # What the app does: poll progress, and retry the moment it shows the failure.
            async with asyncio.timeout(30):
                while ob.progress().last_failure is None:  # noqa: ASYNC110 (the app polls)
                    await asyncio.sleep(0.002)
            progress = await service.submit(fields(HOME), "test")
            assert progress.state == "connecting" and progress.attempt is not None
            await until(ob, lambda: ob.state == State.ONLINE, 30)

    run(scenario())


def test_a_wifi_hub_without_a_network_refuses_cloud_only_pairing(
        nm: NetworkManagerMock, tmp_path: Path) -> None:
    """Issue 18: "No Wi-Fi" pairing on the hotspot would leave the hub with no network."""
    cfg = make_config(tmp_path)
    store = store_for(cfg)

    async def scenario() -> None:
        async with onboarding(cfg, store) as ob:
            with pytest.raises(InvalidRequest) as refused:
                await PairingService(ob, cfg.cloud).submit(fields(None), "test")
            assert refused.value.field == "ssid" and "not on a network" in str(refused.value)
            assert ob.state == State.UNPAIRED and ob.progress().hotspot
            assert active_ids(nm) == [HOTSPOT_ID] and store.state.cloud is None

    run(scenario())


def test_a_root_topic_the_broker_drops_is_a_named_failure(
        nm: NetworkManagerMock, tmp_path: Path) -> None:
    """Issue 18, item 6: a root topic outside the account's ACL connects fine, but the broker
    drops everything the hub publishes. Pairing must not say "online"."""
    import dataclasses

    from gatewayd.onboarding.cloud_step import CloudLinkStep
    from tests.cloud_helpers import Monitor, creds_for, make_broker, make_link

    broker = make_broker(tmp_path / "broker")
    cfg = make_config(tmp_path)
    store = store_for(cfg)
    link = make_link()
    try:
        with Monitor(broker) as monitor:
            async def scenario() -> None:
                step = CloudLinkStep(link, store, Ownership(link))
                async with onboarding(cfg, store, step) as ob:
                    outside = dataclasses.replace(creds_for(broker), root_topic="someone-else")
                    await ob.begin(request(HOME, outside))
                    await until(ob, lambda: not ob.busy and ob.last_failure is not None, 30)
                    assert ob.last_failure is not None
                    assert ob.last_failure.code == "root-topic-refused"
                    assert "someone-else" in ob.last_failure.reason
                    assert store.state.cloud is None and ob.state == State.UNPAIRED
                    # The same account under its own root is fine.
                    await ob.begin(request(HOME, creds_for(broker)))
                    await until(ob, lambda: ob.state == State.ONLINE, 30)
                    assert store.state.cloud == creds_for(broker)

            run(scenario())
            assert not [m for m in monitor.since() if m.topic.startswith("someone-else/")]
    finally:
        broker.stop()


def test_credentials_that_cannot_be_saved_fail_the_attempt_and_change_nothing(
        nm: NetworkManagerMock, tmp_path: Path) -> None:
    """An attempt that worked but whose credentials the store cannot write (a full or
    failing card) is a failure: the hub would forget them at its next start."""
    cfg = make_config(tmp_path)
    store = store_for(cfg)
    cloud = StubCloud()

    async def scenario() -> None:
        async with onboarding(cfg, store, cloud) as ob:
            # A directory where the state file goes: the store's rename fails for real.
            store.path.unlink()
            store.path.mkdir()
            (store.path / "keep").write_text("")
            await ob.begin(request(HOME))
            await until(ob, lambda: ob.last_failure is not None and ob.progress().hotspot)
            assert ob.last_failure.code == Failure.STORAGE_FAILED
            assert "storage" in ob.last_failure.reason
            assert ob.state == State.UNPAIRED and ob.pairing_open and not ob.busy
            assert not store.state.paired and store.state.wifi is None
            assert cloud.connected is None
            assert "gatewayd-client-HomeNet" not in profile_ids(nm)
            assert active_ids(nm) == [HOTSPOT_ID]

    run(scenario())


class CloudThatFailsToStop(StubCloud):
    """A cloud link whose first stop raises (its socket already gone, say)."""

    def __init__(self) -> None:
        super().__init__()
        self.stop_failures = 1

    async def disconnect(self) -> None:
        if self.stop_failures:
            self.stop_failures -= 1
            raise OSError("the link's socket is already closed")
        await super().disconnect()


def test_an_undo_step_that_fails_still_ends_the_attempt_and_undoes_the_rest(
        nm: NetworkManagerMock, tmp_path: Path) -> None:
    """Before: the failed stop ended the attempt's task, the hub stayed `connecting` and
    answered busy to every request, and the unproven network stayed behind."""
    cfg = make_config(tmp_path)
    store = store_for(cfg)
    cloud = CloudThatFailsToStop()
    cloud.next_failure = StepResult(False, Failure.BROKER_REFUSED, "broker refused")

    async def scenario() -> None:
        async with onboarding(cfg, store, cloud) as ob:
            await ob.begin(request(HOME))
            await until(ob, lambda: ob.last_failure is not None and ob.progress().hotspot)
            assert ob.last_failure.code == Failure.BROKER_REFUSED
            assert ob.state == State.UNPAIRED and not ob.busy and ob.pairing_open
            assert cloud.stop_failures == 0
            assert "gatewayd-client-HomeNet" not in profile_ids(nm)
            cloud.next_failure = None
            await ob.begin(request(HOME))
            await until(ob, lambda: ob.state == State.ONLINE)
            assert store.state.cloud == CLOUD

    run(scenario())


def test_an_unpaired_hub_raises_its_hotspot_once_the_cable_is_pulled(
        bus: PrivateBus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review: a hub booted (or reset) with its cable in has no hotspot; before, pulling the
    cable left it without one (and without a network) until a restart."""
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)
    cfg = make_config(tmp_path, retry_interval=0.3)
    with NetworkManagerMock(bus, tmp_path / "nm", ethernet_connected=True) as nm:
        async def scenario() -> None:
            async with onboarding(cfg, store_for(cfg)) as ob:
                assert ob.state == State.UNPAIRED and not ob.progress().hotspot
                assert HOTSPOT_ID not in active_ids(nm)
                await asyncio.to_thread(nm.set_ethernet_carrier, False)
                await until(ob, lambda: ob.progress().hotspot)
                assert HOTSPOT_ID in active_ids(nm) and ob.pairing_open

        run(scenario())


def test_an_ethernet_hub_whose_broker_is_out_of_reach_says_so_not_network_lost(
        bus: PrivateBus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review: a hub paired on its cable (no Wi-Fi saved) whose broker was out of reach said
    "offline: network lost" in systemd's status and `gatewayctl status`, though its network
    was fine. It says what the Wi-Fi hub says, "on Ethernet" for "on Wi-Fi"; one whose cable
    is out says network lost, as it is noticed at the next cloud retry."""
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)
    cfg = make_config(tmp_path, offline_grace=30.0, retry_interval=60.0)
    store = store_for(cfg)
    store.commit_pairing(None, CLOUD)
    unreachable = StepResult(False, Failure.BROKER_UNREACHABLE,
                             "broker unreachable: TCP connection to 127.0.0.1:1883 refused "
                             "(nothing listens there: check host and port)")
    on_cable = f"offline: on Ethernet, cloud unreachable, retrying: {unreachable.reason}"
    cloud, clock = StubCloud(), FakeClock()
    cloud.next_failure = unreachable
    heard: list[str] = []  # what every front end (STATUS=, the LED, BLE) was told
    with NetworkManagerMock(bus, tmp_path / "nm", ethernet_connected=True) as nm:
        async def scenario() -> None:
            ob = Onboarding(cfg, store, NetworkManagerControl(cfg, IDENTITY), cloud,
                            clock=clock, sleep=clock.sleep, rng=random.Random(7))
            ob.subscribe(lambda state, progress: heard.append(describe(progress)))
            await ob.start()
            try:
                await until(ob, lambda: ob.state == State.OFFLINE and not ob.busy)
                assert describe(ob.progress()) == on_cable
                assert heard[-1] == on_cable and "offline: network lost" not in heard
                progress = ob.progress()  # the wire form is as it was: network null
                assert progress.network is None and "cable" not in progress.to_json()
                assert not progress.hotspot and HOTSPOT_ID not in active_ids(nm)
                await asyncio.to_thread(nm.set_ethernet_carrier, False)  # the cable is out
                await asyncio.to_thread(nm.wait_for_device_state, 20, 5.0, "eth0")
                await clock.sleeps(1)
                clock.advance(clock.slept[-1])  # the retry finds no uplink: none is made
                await clock.sleeps(2)
                assert describe(ob.progress()) == "offline: network lost"
                assert heard[-1] == "offline: network lost" and len(cloud.timeouts) == 1
                await asyncio.to_thread(nm.set_ethernet_carrier, True)  # back in
                await asyncio.to_thread(nm.wait_for_device_state, 100, 5.0, "eth0")
                clock.advance(clock.slept[-1])  # the retry; the broker is still away
                await until(ob, lambda: len(cloud.timeouts) == 2
                            and ob.state == State.OFFLINE and not ob.busy)
                assert describe(ob.progress()) == on_cable and heard[-1] == on_cable
            finally:
                await ob.stop()

        run(scenario())


def test_an_unpaired_hub_raises_its_hotspot_again_when_network_manager_drops_it(
        nm: NetworkManagerMock, tmp_path: Path) -> None:
    """Review: NetworkManager deactivating the hotspot left an unpaired hub without one."""
    cfg = make_config(tmp_path, retry_interval=0.3)

    async def scenario() -> None:
        async with onboarding(cfg, store_for(cfg)) as ob:
            first = [a["path"] for a in nm.active_connections() if a["id"] == HOTSPOT_ID]
            assert len(first) == 1
            seen: list[bool] = []
            ob.subscribe(lambda state, progress: seen.append(progress.hotspot))
            await asyncio.to_thread(nm._call, NM_PATH, NM_IFACE, "DeactivateConnection",
                                    first[0], signature="o")
            await until(ob, lambda: seen[-2:] == [False, True])
            again = [a["path"] for a in nm.active_connections() if a["id"] == HOTSPOT_ID]
            assert len(again) == 1 and again != first and ob.pairing_open

    run(scenario())
