"""A provisioned hub gets over what should not stop it: a refresh that fails in an
unexpected way, an attempt cut short by a reset, a platform that answers numbers no float
holds, a cloud step that refuses what the platform issued, a serial enrolled already.

In-process where the fault cannot be made with real components (a full disk), against the
simulated platform and gatewayd processes otherwise (tests/provisioning_helpers.py).
"""

from __future__ import annotations

import asyncio
import base64
import errno
import itertools
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatewayd.cloud.attempts import ISSUED_ACCOUNT
from gatewayd.config import Config, with_overrides
from gatewayd.credentials import CloudCredentials
from gatewayd.identity import Identity
from gatewayd.onboarding.steps import Failure
from gatewayd.provisioning import codec
from gatewayd.provisioning.flows import Flows
from gatewayd.provisioning.service import UNEXPECTED_REASON, Provisioner
from gatewayd.simulator.provisioning_model import SIM_TOKEN
from gatewayd.state import Registration, StateStore
from tests.cloud_helpers import fast_config, make_link
from tests.helpers import ctl, run_async
from tests.provisioning_helpers import HUB_ID, ProvWorld, start

pytestmark = pytest.mark.timeout(240)

HUGE = 10 ** 400  # valid JSON, and more than a float holds


@pytest.fixture
def world(tmp_path: Path) -> Iterator[ProvWorld]:
    w = ProvWorld(tmp_path / "world", retry_after=0.2)
    yield w
    w.stop()


def setup(tmp_path: Path, port: int = 1883, **cloud: float
          ) -> tuple[Config, StateStore, Identity]:
    cfg = with_overrides(Config(), hub={"state_dir": str(tmp_path / "state")},
                         cloud={"connect_timeout": 2.0, "reconnect_min": 0.05,
                                "reconnect_max": 0.2, **cloud},
                         provisioning={"mode": "token", "host": "127.0.0.1", "port": port,
                                       "token": SIM_TOKEN})
    store = StateStore(cfg.state_dir)
    store.open(device_id=HUB_ID, mac="02:00:00:00:00:01")
    return cfg, store, Identity(HUB_ID, "02:00:00:00:00:01", "hub")


# ---- the keeper: a refresh that fails in any way is tried again ---------------------------------

ACCOUNT = CloudCredentials(wsp="developer@example.com", token="reg-token-1", host="127.0.0.1",
                           port=1883, mqtt_user="reg-1")


class RefreshingPlatform:
    """Answers ``provisioning/refresh`` as the platform does, after ``faults`` (exceptions
    raised in place of the first answers)."""

    def __init__(self, *faults: BaseException) -> None:
        self.faults = list(faults)
        self.asked = 0

    async def request(self, endpoint: str, data: dict[str, Any],
                      timeout: float) -> dict[str, Any]:
        assert endpoint == codec.REFRESH_ENDPOINT
        self.asked += 1
        if self.faults:
            raise self.faults.pop(0)
        public = base64.b64decode(data["public_key"])
        nonce = base64.b64decode(data["nonce"])
        issued = codec.issued_to_json(HUB_ID, CloudCredentials(
            wsp=ACCOUNT.wsp, token=f"reg-token-{self.asked + 1}", host=ACCOUNT.host,
            port=ACCOUNT.port, mqtt_user=f"reg-{self.asked + 1}"), 100)
        return {"credentials": codec.seal_to(public, f"refresh {nonce.hex()}", issued)}


class OnlineLink:
    """The cloud link of an online hub: what the keeper uses of it."""

    connected = True

    def __init__(self, platform: RefreshingPlatform) -> None:
        self.platform = platform
        self.credentials = ACCOUNT
        self.restarted = asyncio.Event()

    def add_listener(self, listener: Any) -> None:
        pass

    async def stop(self, goodbye: bool = True) -> None:
        pass

    async def start(self, cloud: CloudCredentials) -> None:
        self.credentials = cloud
        self.restarted.set()


class Online:
    online = True

    async def registration_lost(self, failure: Failure, reason: str) -> None:
        raise AssertionError(f"the registration is not lost: {failure}")


def refreshed_after(tmp_path: Path, platform: RefreshingPlatform,
                    monkeypatch: pytest.MonkeyPatch | None = None
                    ) -> tuple[Provisioner, StateStore]:
    """A registration due for its refresh: the keeper refreshes it, and reconnects."""
    cfg, store, identity = setup(tmp_path)
    now = time.time()
    store.commit_provisioned(ACCOUNT, Registration("token", HUB_ID, now - 60, now + 40))
    if monkeypatch is not None:
        plain = store.renew_registration
        full = [OSError(errno.ENOSPC, "No space left on device")]

        def renew(cloud: CloudCredentials, reg: Registration) -> Any:
            if full:
                raise full.pop()
            return plain(cloud, reg)
        monkeypatch.setattr(store, "renew_registration", renew)
    link = OnlineLink(platform)
    provisioner = Provisioner(cfg, store, identity, link, serial="")  # type: ignore[arg-type]
    provisioner.onboarding = Online()

    async def scenario() -> None:
        keeper = asyncio.create_task(provisioner.run())
        try:
            await asyncio.wait_for(link.restarted.wait(), 20)
            assert not keeper.done()
        finally:
            keeper.cancel()

    run_async(scenario(), timeout=30)
    return provisioner, store


def test_a_refresh_that_cannot_store_the_new_token_is_tried_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the OSError (a full disk) ended the keeper's task, silently and for good:
    refresh_failures stayed 0, the token expired and the hub needed a technician again."""
    provisioner, store = refreshed_after(tmp_path, RefreshingPlatform(), monkeypatch)
    status = provisioner.status()
    assert (status["refreshes"], status["refresh_failures"]) == (1, 1)
    assert store.state.cloud is not None and store.state.cloud.token == "reg-token-3"


def test_an_unexpected_error_in_a_refresh_is_a_failed_refresh(tmp_path: Path) -> None:
    """Before: only the platform's refusals and malformed answers were caught; anything else
    ended the keeper's task. A 400-digit expires_in is a malformed answer now."""
    platform = RefreshingPlatform(RuntimeError("a bug"))
    provisioner, store = refreshed_after(tmp_path, platform)
    status = provisioner.status()
    assert (status["refreshes"], status["refresh_failures"]) == (1, 1)
    assert store.state.cloud is not None and store.state.cloud.token == "reg-token-3"


# ---- numbers no float holds ---------------------------------------------------------------------

def test_numbers_no_float_holds_are_refused_in_words() -> None:
    """Before: float(10 ** 400) raised OverflowError, and its text reached the status."""
    assert codec.seconds(HUGE) is None
    good = codec.issued_to_json("hub-1", ACCOUNT, 60)
    with pytest.raises(codec.CodecError) as refused:
        codec.issued_from({**good, "expires_in": HUGE})
    assert str(refused.value) == ("credentials.expires_in: must be a number of seconds, "
                                  "at least 5")
    body = json.dumps({"id": "x", "status": 0, "code": HUGE, "data": {}}).encode()
    with pytest.raises(codec.CodecError, match=re.escape("code must be an HTTP status code")):
        codec.parse_answer(body)


@pytest.mark.slow
def test_a_pending_operation_with_a_huge_expiry_fails_in_words(
        world: ProvWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: every attempt failed with "OverflowError('int too large to convert to
    float')" in status and on the panel."""
    plain = world.provisioning._state_of

    def huge(op: Any, settings: dict[str, Any]) -> dict[str, Any]:
        return {**plain(op, settings), "expires_in": HUGE}

    monkeypatch.setattr(world.provisioning, "_state_of", huge)
    cfg, store, identity = setup(tmp_path, world.provisioning.endpoint()["port"])
    provisioner = Provisioner(cfg, store, identity, make_link(fast_config()), serial="")
    result, cloud = run_async(provisioner.obtain())
    assert cloud is None and result.failure == Failure.PROVISIONING_FAILED
    error = provisioner.status()["last_error"]
    assert error == {"code": "provisioning-failed", "reason": "The platform's answer is "
                     "unusable: expires_in: must be a number of seconds."}


@pytest.mark.slow
def test_a_huge_retry_after_is_the_default_wait(world: ProvWorld, tmp_path: Path) -> None:
    """Before: a 429 whose retry_after no float holds ended the attempt in OverflowError."""
    world.settings(refuse={"start": {"code": 429, "error": "throttled", "retry_after": HUGE,
                                     "times": 1}}, auto_approve=True)
    cfg, store, identity = setup(tmp_path, world.provisioning.endpoint()["port"])
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)

    outcome = run_async(Flows(cfg, store, identity, serial="", sleep=no_wait).run())
    assert outcome.issued is not None, outcome
    assert 5.0 <= waits[0] <= 6.0  # BUSY_WAIT, plus up to 20 % for a batch


def test_an_unexpected_failure_shows_a_sentence_not_python(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: status and the panel showed the exception's repr, a library's words."""
    cfg, store, identity = setup(tmp_path)
    provisioner = Provisioner(cfg, store, identity, make_link(fast_config()), serial="")

    async def broken() -> Any:
        raise ValueError("int too large to convert to float, /usr/lib/python3.11/...")

    monkeypatch.setattr(provisioner.flows, "run", broken)
    result, _ = run_async(provisioner.obtain())
    assert result.reason == UNEXPECTED_REASON
    assert provisioner.status()["last_error"] == {"code": "provisioning-failed",
                                                  "reason": UNEXPECTED_REASON}


# ---- a cancelled attempt leaves no session behind -----------------------------------------------

class SilentEndpoint:
    """Takes TCP connections and never answers CONNECT; tells when the hub hangs up."""

    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.hung_up = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connected.set()
        while await reader.read(4096):
            pass
        self.hung_up.set()
        writer.close()


def test_an_attempt_cancelled_while_connecting_closes_its_session(tmp_path: Path) -> None:
    """Before: a reset (or a stop) while the hub was connecting to the provisioning endpoint
    left that session reconnecting with the provisioning token, one more per reset."""

    async def scenario() -> None:
        endpoint = SilentEndpoint()
        server = await asyncio.start_server(endpoint.serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            # Long enough that only a closed session hangs up within the wait below.
            cfg, store, identity = setup(tmp_path, port, connect_timeout=120.0)
            attempt = asyncio.create_task(Flows(cfg, store, identity, serial="").run())
            await asyncio.wait_for(endpoint.connected.wait(), 10)
            attempt.cancel()
            with pytest.raises(asyncio.CancelledError):
                await attempt
            await asyncio.wait_for(endpoint.hung_up.wait(), 10)
        finally:
            server.close()

    run_async(scenario(), timeout=40)


# ---- the cloud step refuses what the platform issued --------------------------------------------

@pytest.mark.slow
def test_a_cloud_step_failure_is_provisionings_last_error_until_it_succeeds(
        world: ProvWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the approval cleared provisioning.last_error, and a broker that then refused
    the issued account left it empty, with provisioning.state "approved" on an unpaired
    hub."""
    world.settings(auto_approve=True)
    plain = world.provisioning._issue
    monkeypatch.setattr(world.provisioning, "_issue",
                        lambda *a, **k: {**plain(*a, **k), "token": "not-the-issued-token"})
    hub = start(world, tmp_path, "hub", retry_interval=5)
    try:
        status = hub.wait(lambda s: s["provisioning"]["last_error"], "a provisioning error")
        assert status["provisioning"]["last_error"]["code"] == "broker-refused"
        assert "the platform issued this account" in \
            status["provisioning"]["last_error"]["reason"]
        # The link says the same of the account it was given (cloud.md, "Status").
        assert status["cloud_link"]["last_error"].endswith(ISSUED_ACCOUNT)
        assert status["provisioning"]["state"] == "failed"
        assert status["onboarding"]["last_failure"]["code"] == "broker-refused"
        # The platform answers the same approval again: only a new operation gets through.
        monkeypatch.setattr(world.provisioning, "_issue", plain)
        said = ctl("--socket", str(hub.socket), "reset").stdout
        assert "It asks the platform to provision it again ([provisioning] mode token)." \
            in said
        status = hub.wait(lambda s: s["state"] == "online", "the hub online", 60)
        assert status["provisioning"]["last_error"] is None
        assert status["provisioning"]["state"] == "registered"
    finally:
        hub.stop()


# ---- enroll mode: a serial enrolled already -----------------------------------------------------

@pytest.mark.slow
def test_a_reset_enroll_hub_says_what_it_does_and_backs_off_an_enrolled_serial(
        world: ProvWorld, tmp_path: Path) -> None:
    """Before: the reset said "It is back in pairing mode" on a hub nobody pairs, and an
    enrolled serial was asked about again every retry_interval, for good, with nothing
    saying what would end it."""
    hub = start(world, tmp_path, "hub", "enroll")
    try:
        hub.wait(lambda s: s["state"] == "online", "the hub online")
        # The platform goes on refusing the serial (as one that keeps it after a release).
        world.settings(refuse={"enroll": {"code": 409, "error": "already-enrolled",
                                          "message": "enrolled", "times": 1000}})
        said = ctl("--socket", str(hub.socket), "reset").stdout
        assert "It asks the platform to provision it again ([provisioning] mode enroll)." \
            in said and "pairing mode" not in said
        status = hub.wait(lambda s: s["provisioning"]["attempts"] >= 6, "a sixth attempt")
        error = status["provisioning"]["last_error"]
        assert error["code"] == "already-enrolled"
        assert "gatewayctl --sim DIR platform revoke DEVICE" in error["reason"]
        # Each wait longer than the one before (retry_interval 0.5 s, doubling), where every
        # other refusal waits 75-100 % of retry_interval each time.
        waits = [float(w) for w in re.findall(r"provisioning: next attempt in ([0-9.]+) s",
                                              hub.proc.output())]
        assert len(waits) >= 4 and all(b > a for a, b in itertools.pairwise(waits)), waits
        # Between attempts systemctl status says what the hub waits for: not for a pairing.
        line = hub.wait(lambda s: s["status_text"].startswith("unpaired"),
                        "the status line between two attempts")["status_text"]
        assert line.startswith("unpaired: waiting to be provisioned (enroll mode); last "
                               "attempt failed: The serial number"), line
    finally:
        hub.stop()


@pytest.mark.parametrize(("mode", "preset", "code"), [
    ("token", {"token": "a-mistyped-batch-token"}, "wrong-provisioning-token"),
    ("enroll", {"serial": "00000000deadbeef"}, "unknown-serial")],
    ids=["wrong-token", "unknown-serial"])
def test_a_preset_the_platform_refuses_is_asked_about_less_and_less_often(
        world: ProvWorld, tmp_path: Path, mode: str, preset: dict[str, str],
        code: str) -> None:
    """Before: a batch of hubs with a mistyped token (or a serial the template lacks) asked
    the platform every retry_interval, for days; only someone's action ends such a
    refusal (a standing refusal, as already-enrolled)."""
    hub = start(world, tmp_path, "hub", mode, retry_interval=0.2, **preset)
    try:
        status = hub.wait(lambda s: s["provisioning"]["attempts"] >= 5, "a fifth attempt")
        assert status["provisioning"]["last_error"]["code"] == code
        waits = [float(w) for w in re.findall(r"provisioning: next attempt in ([0-9.]+) s",
                                              hub.proc.output())]
        # retry_interval 0.2 s, doubling; every other refusal waits 75-100 % of it each time
        assert len(waits) >= 4 and all(b > a for a, b in itertools.pairwise(waits)), waits
    finally:
        hub.stop()
