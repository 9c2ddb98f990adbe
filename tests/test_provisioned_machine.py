"""The onboarding machine of a provisioned hub, on fakes: when it asks the platform, what it
stores, where a failure or a revocation leaves it. Milliseconds per scenario; the real
platform and broker are in tests/test_provisioning_e2e.py.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from gatewayd.cloud.attempts import CHECK_ACCOUNT, classify_connack, issued_account
from gatewayd.config import Config, with_overrides
from gatewayd.credentials import CloudCredentials, WifiCredentials
from gatewayd.onboarding.pairing import PairingService
from gatewayd.onboarding.provisioned import ProvisioningOnboarding
from gatewayd.onboarding.steps import Failure, StepResult
from gatewayd.onboarding.table import State
from gatewayd.state import Registration, StateStore
from tests.fakes import FakeWifi, StubCloud
from tests.helpers import run_async

pytestmark = pytest.mark.timeout(30)
run = functools.partial(run_async, timeout=20.0)

ISSUED = CloudCredentials("developer@example.com", "reg-token", "127.0.0.1", 1883,
                          mqtt_user="reg-hub-1")
HOME = WifiCredentials("HomeNet", "supersecret")


class FakeProvider:
    """The provisioning step: answers from a script of outcomes; commits like the real one."""

    def __init__(self, store: StateStore, outcomes: list[StepResult | None]) -> None:
        self.store = store
        self.outcomes = outcomes  # None: issue ISSUED
        self.asked = 0
        self.asking = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()
        self.delay = 0.01
        self.delays = 0  # how often the machine asked how long to wait before the next

    async def obtain(self) -> tuple[StepResult, CloudCredentials | None]:
        self.asked += 1
        self.asking.set()
        await self.release.wait()
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            return outcome, None
        return StepResult(True), ISSUED

    def commit(self, cloud: CloudCredentials) -> None:
        self.store.commit_provisioned(cloud, Registration("token", "hub-1", 1.0, 99.0))

    def failed(self, result: StepResult) -> None:
        pass

    def retry_delay(self) -> float:
        self.delays += 1
        return self.delay


def setup(tmp_path: Path, outcomes: list[StepResult | None] | None = None
          ) -> tuple[Config, StateStore, FakeProvider]:
    cfg = with_overrides(Config(), hub={"state_dir": str(tmp_path / "state")},
                         hotspot={"connect_timeout": 5.0, "offline_grace": 0.05,
                                  "retry_interval": 3600.0},
                         provisioning={"mode": "token", "host": "127.0.0.1", "token": "t"})
    store = StateStore(cfg.state_dir)
    store.open(device_id="hub-1", mac="dc:a6:32:12:34:56")
    return cfg, store, FakeProvider(store, outcomes or [])


def test_an_ethernet_hub_asks_at_once_and_stores_only_what_the_cloud_step_proved(
        tmp_path: Path) -> None:
    cfg, store, provider = setup(tmp_path)

    async def scenario() -> None:
        cloud = StubCloud()
        ob = ProvisioningOnboarding(cfg, store, FakeWifi(ethernet=True), cloud, provider)
        await ob.start()
        try:
            await ob.wait_for(lambda: ob.state == State.ONLINE and not ob.busy, 5)
            assert cloud.connected == ISSUED and store.state.cloud == ISSUED
            assert store.state.registration is not None and store.state.operation is None
            attempt = ob.progress().attempt
            assert attempt is not None and attempt.source == "provisioning" and attempt.cloud
        finally:
            await ob.stop()

    run(scenario())


def test_a_wifi_hub_waits_for_its_network_then_asks(tmp_path: Path) -> None:
    cfg, store, provider = setup(tmp_path)

    async def scenario() -> None:
        wifi = FakeWifi({"HomeNet": "supersecret"})
        ob = ProvisioningOnboarding(cfg, store, wifi, StubCloud(), provider)
        await ob.start()
        try:
            await ob.wait_for(lambda: ob.state == State.UNPAIRED and wifi.hotspot, 5)
            assert provider.asked == 0  # no network: nothing to ask the platform with
            service = PairingService(ob, cfg.cloud, provisioning="token")
            await service.submit({"ssid": "HomeNet", "psk": "supersecret"}, "ble-improv")
            await ob.wait_for(lambda: ob.state == State.ONLINE and not ob.busy, 5)
            assert provider.asked == 1
            assert store.state.wifi == HOME and store.state.cloud == ISSUED
        finally:
            await ob.stop()

    run(scenario())


def test_a_failure_leaves_nothing_and_the_next_attempt_follows(tmp_path: Path) -> None:
    rejected = StepResult(False, Failure.PROVISIONING_REJECTED, "not ours")
    refused = StepResult(False, Failure.BROKER_REFUSED, "refused")
    cfg, store, provider = setup(tmp_path, [rejected])

    async def scenario() -> None:
        cloud = StubCloud()
        cloud.next_failure = refused  # the second attempt's cloud step fails too
        ob = ProvisioningOnboarding(cfg, store, None, cloud, provider)
        provider.release.clear()
        await ob.start()
        try:
            await asyncio.wait_for(provider.asking.wait(), 5)
            assert ob.progress().step == "provisioning" and ob.busy
            provider.release.set()
            await ob.wait_for(lambda: ob.last_failure is not None, 5)
            assert ob.last_failure is not None
            assert ob.last_failure.code == "provisioning-rejected"
            assert store.state.cloud is None
            await ob.wait_for(lambda: provider.asked >= 2 and ob.last_failure is not None
                              and ob.last_failure.code == "broker-refused", 5)
            assert store.state.cloud is None and store.state.registration is None
            cloud.next_failure = None
            await ob.wait_for(lambda: ob.state == State.ONLINE and not ob.busy, 5)
            assert store.state.cloud == ISSUED
        finally:
            await ob.stop()

    run(scenario())


def test_an_issued_account_that_cannot_be_saved_fails_and_the_next_operation_waits(
        tmp_path: Path) -> None:
    """Before: the failed write escaped the conclusion, which ended as an internal error
    without the retry delay, and the driver asked the platform again at once, a new
    operation each time, for as long as the storage failed."""
    cfg, store, provider = setup(tmp_path)
    provider.delay = 3600.0

    async def scenario() -> None:
        cloud = StubCloud()
        ob = ProvisioningOnboarding(cfg, store, FakeWifi(ethernet=True), cloud, provider)
        # A directory where the state file goes: the store's rename fails for real.
        store.path.unlink()
        store.path.mkdir()
        (store.path / "keep").write_text("")
        await ob.start()
        try:
            await ob.wait_for(lambda: ob.last_failure is not None and not ob.busy, 5)
            assert ob.last_failure is not None
            assert ob.last_failure.code == "storage-failed"
            assert ob.state == State.UNPAIRED and cloud.connected is None
            assert store.state.cloud is None and store.state.registration is None
            assert provider.asked == 1 and provider.delays == 1
        finally:
            await ob.stop()

    run(scenario())


def test_a_revoked_registration_is_forgotten_the_network_kept_and_it_asks_again(
        tmp_path: Path) -> None:
    cfg, store, provider = setup(tmp_path)
    store.commit_wifi(HOME)
    provider.commit(ISSUED)  # provisioned earlier: boots with it

    async def scenario() -> None:
        wifi = FakeWifi({"HomeNet": "supersecret"})
        ob = ProvisioningOnboarding(cfg, store, wifi, StubCloud(), provider)
        await ob.start()
        try:
            await ob.wait_for(lambda: ob.state == State.ONLINE and not ob.busy, 5)
            assert provider.asked == 0
            provider.release.clear()
            await ob.registration_lost(Failure.REGISTRATION_REVOKED, "revoked")
            await asyncio.wait_for(provider.asking.wait(), 5)
            assert store.state.cloud is None and store.state.registration is None
            assert store.state.wifi == HOME and ob.on_wifi and not wifi.hotspot
            provider.release.set()
            await ob.wait_for(lambda: ob.state == State.ONLINE and not ob.busy, 5)
            assert provider.asked == 1
        finally:
            await ob.stop()

    run(scenario())


def test_a_refused_issued_account_fails_a_provisioning_attempt_in_the_links_words(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A provisioned hub's link words a refused account as one the platform issued
    (test_cloud_link); the machine shows those words, and logs a provisioning attempt."""
    cfg, store, provider = setup(tmp_path)
    credentials = issued_account(classify_connack(
        ReasonCode(PacketTypes.CONNACK, "Not authorized"), "127.0.0.1", 1883, "3.1.1")).reason
    assert not credentials.endswith(CHECK_ACCOUNT)  # what a paired hub is told

    async def scenario() -> None:
        cloud = StubCloud()
        cloud.next_failure = StepResult(False, Failure.BROKER_REFUSED, credentials)
        ob = ProvisioningOnboarding(cfg, store, None, cloud, provider)
        await ob.start()
        try:
            await ob.wait_for(lambda: ob.last_failure is not None, 5)
            assert ob.last_failure is not None and ob.last_failure.code == "broker-refused"
            assert ob.last_failure.reason == (
                "broker refused the credentials (not authorized): the platform issued this "
                "account, and its broker does not know it (yet); the hub asks the platform "
                "again")
        finally:
            await ob.stop()

    run(scenario())
    # and the log says what kind of attempt failed
    assert any(r.getMessage().startswith("provisioning attempt failed: broker-refused")
               for r in caplog.records)
    assert not any("pairing attempt failed" in r.getMessage() for r in caplog.records)
