"""Which NetworkManager client profiles a hub keeps, and what they say (the review of the
pairing portal): only the stored network's profile outlives an attempt, a network found
only by its name is saved as hidden, and a raw 64-hex-digit WPA key gets a key management
that can use it. Against the NetworkManager mock on a private bus, as tests/test_onboarding.py.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from sdbus import sd_bus_open_system
from sdbus_async.networkmanager import NetworkManagerSettings

from gatewayd.ap import HOTSPOT_ID, client_profile
from gatewayd.credentials import WifiCredentials
from gatewayd.onboarding.pairing import InvalidRequest, PairingService
from gatewayd.onboarding.steps import Failure, StepResult
from gatewayd.onboarding.table import State
from gatewayd.simulator.nm_mock import NetworkManagerMock
from tests.fakes import StubCloud
from tests.test_onboarding import (
    CLOUD,
    HOME,
    active_ids,
    bus,
    fields,
    make_config,
    nm,
    onboarding,
    press_button,
    profile,
    profile_ids,
    request,
    run,
    store_for,
    until,
)

__all__ = ["bus", "nm"]  # fixtures, from tests/test_onboarding.py

OFFICE = WifiCredentials("Office", "correct horse battery")  # WPA2/WPA3 transition


def client_ids(nm: NetworkManagerMock) -> list[str]:
    return sorted(i for i in profile_ids(nm) if i.startswith("gatewayd-client-"))


def raw_key(passphrase: str, ssid: str) -> str:
    """The 64-hex-digit WPA key a router's settings page shows for this passphrase."""
    return hashlib.pbkdf2_hmac("sha1", passphrase.encode(), ssid.encode(), 4096, 32).hex()


async def leave_profile(wifi: WifiCredentials, security: str) -> None:
    """A saved client profile as a daemon killed during an attempt leaves it."""
    await NetworkManagerSettings(sd_bus_open_system()).add_connection(
        client_profile(wifi, "wlan0", security))


# ---- only the stored network's profile stays ----------------------------------------------


def test_re_pairing_to_a_new_network_forgets_the_old_one(nm: NetworkManagerMock,
                                                         tmp_path: Path) -> None:
    """Before: gatewayd-client-HomeNet stayed, passphrase and autoconnect; when Office
    dropped, NetworkManager took the hub back to HomeNet while status said Office."""
    cfg = make_config(tmp_path, offline_grace=0.2, retry_interval=30.0)
    store = store_for(cfg)

    async def scenario() -> None:
        async with onboarding(cfg, store) as ob:
            await ob.begin(request(HOME))
            await until(ob, lambda: ob.state == State.ONLINE)
            nm.remove_ap("HomeNet")
            await until(ob, lambda: ob.repairable)  # the hotspot is back
            press_button(ob)  # a paired hub is re-paired by someone at it
            await PairingService(ob, cfg.cloud).submit(fields(OFFICE), "test")
            await until(ob, lambda: ob.state == State.ONLINE)
            assert store.state.wifi == OFFICE
            assert client_ids(nm) == ["gatewayd-client-Office"]
            assert active_ids(nm) == ["gatewayd-client-Office"]

    run(scenario())


def test_a_stop_during_an_attempt_leaves_no_unproven_profile(nm: NetworkManagerMock,
                                                             tmp_path: Path) -> None:
    """Before: the daemon stopped (or restarted by an upgrade) in the cloud step left
    gatewayd-client-Office saved with its passphrase and autoconnect on."""
    cfg = make_config(tmp_path)
    store = store_for(cfg)
    cloud = StubCloud()
    cloud.gate = asyncio.Event()  # the cloud step never ends by itself

    async def scenario() -> None:
        async with onboarding(cfg, store, cloud) as ob:
            await ob.begin(request(OFFICE))
            await until(ob, lambda: ob.step == "cloud")
            assert "gatewayd-client-Office" in profile_ids(nm)  # joined, not proven
        assert client_ids(nm) == []
        assert store.state.wifi is None and not store.state.paired

    run(scenario())


@pytest.mark.parametrize("left", [
    (OFFICE, "wpa2/wpa3"),  # another network's attempt
    (WifiCredentials("HomeNet", "a new passphrase"), "wpa2"),  # the same network's
])
def test_a_start_after_a_kill_during_an_attempt_keeps_only_the_stored_network(
        nm: NetworkManagerMock, tmp_path: Path, left: tuple[WifiCredentials, str]) -> None:
    """A SIGKILL gives no chance to undo: the next start does. Before: the attempt's profile
    stayed (autoconnect could take the hub onto it), and one for the stored SSID with
    an unproven passphrase kept the hub offline."""
    cfg = make_config(tmp_path)
    store = store_for(cfg)
    store.commit_pairing(HOME, CLOUD)

    async def scenario() -> None:
        await leave_profile(*left)
        async with onboarding(cfg, store) as ob:
            await until(ob, lambda: ob.state == State.ONLINE)
            assert client_ids(nm) == ["gatewayd-client-HomeNet"]
            assert active_ids(nm) == ["gatewayd-client-HomeNet"]
            psk = profile(nm, "gatewayd-client-HomeNet")["802-11-wireless-security"]["psk"]
            assert psk == HOME.psk
            assert store.state.wifi == HOME

    run(scenario())


def test_the_stored_networks_profile_survives_a_start(nm: NetworkManagerMock,
                                                      tmp_path: Path) -> None:
    """The clean-up at start never touches the stored network's own profile."""
    cfg = make_config(tmp_path)
    store = store_for(cfg)
    store.commit_pairing(HOME, CLOUD)

    async def scenario() -> None:
        await leave_profile(HOME, "wpa2")
        uuid = profile(nm, "gatewayd-client-HomeNet")["connection"]["uuid"]
        async with onboarding(cfg, store) as ob:
            await until(ob, lambda: ob.state == State.ONLINE)
            assert profile(nm, "gatewayd-client-HomeNet")["connection"]["uuid"] == uuid
            assert active_ids(nm) == ["gatewayd-client-HomeNet"]

    run(scenario())


def client_psks(nm: NetworkManagerMock) -> list[str | None]:
    return [profile(nm, i).get("802-11-wireless-security", {}).get("psk")
            for i in client_ids(nm)]


def test_a_failed_re_pairing_to_the_same_network_leaves_only_the_stored_passphrase(
        nm: NetworkManagerMock, tmp_path: Path) -> None:
    """The router's password changed; the owner re-pairs with the new one and a mistyped
    token. Before: the attempt's profile (the new passphrase, autoconnect on) stayed and
    was activated as "the saved network", so the hub went online on credentials state.json
    did not have, and at the next start deleted that profile and came up offline with
    wrong-password. Now the failed attempt leaves the hub as it was before it: on the
    stored credentials; and the attempt with the right token then pairs it for good."""
    cfg = make_config(tmp_path, offline_grace=0.2, retry_interval=30.0)
    store = store_for(cfg)
    stale = WifiCredentials("HomeNet", "old router pass")  # the mock's HomeNet: HOME.psk
    store.commit_pairing(stale, CLOUD)
    cloud = StubCloud()

    async def scenario() -> None:
        async with onboarding(cfg, store, cloud) as ob:
            await until(ob, lambda: ob.repairable)
            assert ob.last_failure is not None
            assert ob.last_failure.code == Failure.WRONG_PASSWORD
            press_button(ob)
            cloud.next_failure = StepResult(False, Failure.BROKER_REFUSED, "refused")
            await PairingService(ob, cfg.cloud).submit(fields(HOME), "test")
            await until(ob, lambda: ob.last_failure is not None and not ob.busy
                        and ob.last_failure.code == Failure.BROKER_REFUSED)
            assert store.state.wifi == stale
            assert client_psks(nm) in ([], [stale.psk])
            assert "gatewayd-client-HomeNet" not in active_ids(nm)
            assert ob.state == State.OFFLINE
        async with onboarding(cfg, store, cloud) as ob:  # a restart: as before the attempt
            await until(ob, lambda: ob.repairable)
            assert ob.last_failure is not None
            assert ob.last_failure.code == Failure.WRONG_PASSWORD
            press_button(ob)
            cloud.next_failure = None
            await PairingService(ob, cfg.cloud).submit(fields(HOME), "test")
            await until(ob, lambda: ob.state == State.ONLINE)
        assert store.state.wifi == HOME
        async with onboarding(cfg, store, cloud) as ob:  # and it stays on it
            await until(ob, lambda: ob.state == State.ONLINE)
            assert client_psks(nm) == [HOME.psk]
            assert active_ids(nm) == ["gatewayd-client-HomeNet"]

    run(scenario())


# ---- a hidden network paired without "hidden" ---------------------------------------------


def test_a_network_found_only_by_its_name_is_saved_as_hidden(nm: NetworkManagerMock,
                                                             tmp_path: Path) -> None:
    """Before: pairing worked (the directed scan found it) but profile and state said not
    hidden: after a restart NetworkManager could not find it, nor the offline retries."""
    cfg = make_config(tmp_path)
    store = store_for(cfg)
    lab = WifiCredentials("Hidden Lab", "labpassword")  # "hidden" not ticked

    async def scenario() -> None:
        async with onboarding(cfg, store) as ob:
            await PairingService(ob, cfg.cloud).submit(fields(lab), "test")
            await until(ob, lambda: ob.state == State.ONLINE)
            assert profile(nm, "gatewayd-client-Hidden Lab")["802-11-wireless"]["hidden"]
            assert store.state.wifi == WifiCredentials("Hidden Lab", "labpassword", True)

    run(scenario())


# ---- a raw 64-hex-digit WPA key -----------------------------------------------------------


def test_a_raw_key_joins_a_wpa2_wpa3_network_by_wpa_psk(nm: NetworkManagerMock,
                                                        tmp_path: Path) -> None:
    """Before: key-mgmt sae, to which NetworkManager gives the key as a literal SAE
    password: the right key failed as wrong-password."""
    cfg = make_config(tmp_path)
    store = store_for(cfg)
    office = WifiCredentials("Office", raw_key(OFFICE.psk, "Office"))

    async def scenario() -> None:
        async with onboarding(cfg, store) as ob:
            await PairingService(ob, cfg.cloud).submit(fields(office), "test")
            await until(ob, lambda: ob.state == State.ONLINE or ob.last_failure is not None)
            assert ob.state == State.ONLINE, ob.last_failure
            sec = profile(nm, "gatewayd-client-Office")["802-11-wireless-security"]
            assert sec["key-mgmt"] == "wpa-psk" and sec["psk"] == office.psk
            assert store.state.wifi == office

    run(scenario())


def test_a_raw_key_for_a_wpa3_only_network_in_the_scan_is_refused_up_front(
        nm: NetworkManagerMock, tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    store = store_for(cfg)
    cafe = WifiCredentials("Cafe WPA3", raw_key("espresso-doppio", "Cafe WPA3"))

    async def scenario() -> None:
        async with onboarding(cfg, store) as ob:
            with pytest.raises(InvalidRequest) as refused:
                await PairingService(ob, cfg.cloud).submit(fields(cafe), "test")
            assert refused.value.to_json()["code"] == "invalid"
            assert refused.value.status == 400 and refused.value.field == "psk"
            assert "WPA3-only" in refused.value.message
            assert ob.state == State.UNPAIRED and ob.attempt is None
            assert client_ids(nm) == [] and active_ids(nm) == [HOTSPOT_ID]

    run(scenario())


def test_a_raw_key_for_a_wpa3_only_network_not_in_the_scan_fails_saying_why(
        nm: NetworkManagerMock, tmp_path: Path) -> None:
    """A network that came into range after the scan: the attempt ends at its profile."""
    cfg = make_config(tmp_path)
    store = store_for(cfg)
    new = WifiCredentials("New WPA3", raw_key("brand-new-pass", "New WPA3"))

    async def scenario() -> None:
        async with onboarding(cfg, store) as ob:
            nm.add_ap("New WPA3", "brand-new-pass", "wpa3")  # the hotspot is up: not scanned
            await PairingService(ob, cfg.cloud).submit(fields(new), "test")
            await until(ob, lambda: ob.last_failure is not None and ob.pairing_open)
            assert ob.last_failure.code == Failure.WRONG_PASSWORD
            assert "WPA3-only" in ob.last_failure.reason
            assert "64-hex-digit key" in ob.last_failure.reason
            assert client_ids(nm) == [] and active_ids(nm) == [HOTSPOT_ID]
            assert store.state.wifi is None

    run(scenario())
