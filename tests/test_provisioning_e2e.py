"""Zero-touch provisioning end to end (issue 17): real mosquitto (the account broker and
the provisioning endpoint), the simulated platform, gatewayd processes.

The test acts as the technician (``gatewayctl --sim DIR platform ...``), as an observer
(the brokers' monitor user) and as a hostile hub of the same batch (paho with the batch's
provisioning token).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gatewayd.ble import phone
from gatewayd.provisioning import codec
from gatewayd.simulator.procs import free_port
from gatewayd.simulator.provisioning_model import SIM_SERIALS, SIM_TOKEN
from tests.cloud_helpers import Monitor
from tests.helpers import ctl, ctl_json, run_async
from tests.provisioning_helpers import HUB_ID, Hub, ProvWorld, until
from tests.test_e2e_simulator import Sim, http_get

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[ProvWorld]:
    w = ProvWorld(tmp_path / "world", retry_after=0.2)
    yield w
    w.stop()


def directory(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    return path


def last_error(status: dict[str, object]) -> str | None:
    error = status["provisioning"]["last_error"]  # type: ignore[index]
    return error["code"] if error else None  # type: ignore[index,no-any-return]


def nothing_stored(hub: Hub) -> bool:
    stored = hub.stored()
    return stored["cloud"] is None and stored["registration"] is None


# ---- token mode ------------------------------------------------------------------------------

def test_token_mode_approve_refresh_reconnect_revoke(world: ProvWorld, tmp_path: Path) -> None:
    # Short, so it refreshes every 3 s; long enough to outlive the broker's restart below.
    world.settings(registration_lifetime=6)
    root = world.account.username
    state_topic = f"{root}/sweet-home/{HUB_ID}/$state"
    with Monitor(world.broker, f"{root}/sweet-home/{HUB_ID}/$state") as mon, \
            Monitor(world.provisioning.broker, "provisioning/#") as wire:
        hub = world.start_hub(world.hub_config(directory(tmp_path, "hub")))
        try:
            # The operation the platform lists carries the code the hub shows.
            code = hub.code()
            pending = world.pending()
            assert [op["verification_code"] for op in pending] == [code]
            assert pending[0]["device_id"] == HUB_ID
            assert pending[0]["model"] == "gatewayd hub"
            assert nothing_stored(hub)
            world.ctl("platform", "approve", pending[0]["id"][:8])

            # Online with the issued identity.
            status = hub.wait(lambda s: s["state"] == "online", "the hub online")
            mon.wait_for(state_topic, "ready", timeout=10)
            stored = hub.stored()
            assert stored["registration"].device_id == HUB_ID
            assert stored["registration"].mode == "token"
            assert stored["cloud"].mqtt_user == f"reg-{HUB_ID}-1"
            assert status["cloud"]["account"] == "d***@example.com"
            assert status["cloud"]["root_topic"] == root
            assert status["cloud_link"]["client_id"] == HUB_ID
            assert status["provisioning"]["verification_code"] is None
            # The registration token crossed the wire sealed only.
            assert not [m for m in wire.since() if stored["cloud"].token.encode() in m.payload]
            first_expiry = stored["registration"].expires_at

            # Two refreshes and not one "lost" (nor a "disconnected") in between.
            hub.wait(lambda s: s["provisioning"]["refreshes"] >= 2, "two refreshes", 30)
            values = mon.values(state_topic)
            assert not {"lost", "disconnected"} & set(values), values
            assert values[-1] == "ready"
            assert hub.stored()["cloud"].mqtt_user != f"reg-{HUB_ID}-1"

            # After the first token expired (the platform dropped it), a forced reconnect:
            # the hub connects with the token it holds now.
            until(lambda: time.time() > first_expiry and all(
                g.user != f"reg-{HUB_ID}-1"
                for g in world.provisioning.devices[HUB_ID].generations), "token 1 gone")
            # The broker refuses the expired token at connect.
            assert _connack(world, stored["cloud"].username, stored["cloud"].token) in (134,
                                                                                      135)
            connects = hub.status()["cloud_link"]["connects"]
            world.broker.restart()
            hub.wait(lambda s: s["cloud_link"]["connects"] > connects
                     and s["cloud_link"]["connected"], "the hub reconnected")
            after = world.broker.log_text().rsplit("starting", 1)[1]
            users = re.findall(rf"as {HUB_ID} \(.*?u'([^']+)'\)", after)
            assert users and users[0] != f"reg-{HUB_ID}-1", users
            assert "not authorised" not in after
            assert hub.status()["state"] == "online"

            # Revoked: back in provisioning with the reason, nothing kept, a new operation.
            world.ctl("platform", "revoke", HUB_ID)
            status = hub.wait(lambda s: last_error(s) == "registration-revoked"
                              and s["state"] != "online", "the hub back in provisioning", 10)
            assert "revoked" in status["provisioning"]["last_error"]["reason"]
            assert "revoked" in hub.panel()
            until(lambda: nothing_stored(hub), "the registration forgotten")
            new_code = hub.code()
            assert [op["verification_code"] for op in world.pending()] == [new_code]
            # Neither the provisioning token nor any registration token reached the log
            # (which is at debug level here).
            tokens = [SIM_TOKEN] + [g.token for d in world.provisioning.devices.values()
                                    for g in d.generations] + [stored["cloud"].token]
            assert not [t for t in tokens if t in hub.proc.output()]
        finally:
            hub.stop()


def test_a_provisioning_token_reaches_its_own_operation_only(world: ProvWorld) -> None:
    endpoint = world.provisioning.broker
    user = codec.token_user(SIM_TOKEN)
    mine, other = "a" * 32, "b" * 32
    own_request = codec.request_topic(user, mine, "poll")
    elsewhere = [codec.request_topic(user, other, "poll"),  # another hub's operation
                 codec.request_topic("token-0000000000000000", mine, "poll"),  # another token
                 codec.response_topic(user, mine, "poll"),  # forging the platform's answer
                 f"{world.account.username}/sweet-home/{HUB_ID}/$state", "anything"]
    with Monitor(endpoint, "#") as seen:
        hub = _client(endpoint.host, endpoint.port, user, SIM_TOKEN, mine)
        snoop = _client(endpoint.host, endpoint.port, user, SIM_TOKEN, other)
        try:
            snooped: list[str] = []
            snoop.on_message = lambda c, u, m: snooped.append(m.topic)
            snoop.subscribe("provisioning/#", qos=1)
            for topic in elsewhere:
                hub.publish(topic, b"{}", qos=1).wait_for_publish(5)
            body = codec.request_body("c" * 32, {"operation": mine})
            hub.publish(own_request, body, qos=1).wait_for_publish(5)
            # The broker keeps one client's order: the own request comes after the others.
            seen.wait_for(own_request, timeout=5)
            seen.wait_for(codec.response_topic(user, mine, "poll"), timeout=5)
            forged = [m.topic for m in seen.since() if m.topic in elsewhere and m.payload == b"{}"]
            assert forged == []
            # The batch-mate saw nothing of it, though it shares the token.
            hub.publish(own_request, body, qos=1).wait_for_publish(5)
            seen.wait_count(codec.response_topic(user, mine, "poll"), 2, timeout=5)
            assert snooped == []
        finally:
            for client in (hub, snoop):
                client.disconnect()
                client.loop_stop()
    # And the token is no account: the account broker refuses it.
    assert _connack(world, user, SIM_TOKEN) in (134, 135)  # bad user name or password


def _connack(world: ProvWorld, user: str, password: str) -> int:
    """The account broker's answer to a CONNECT with these credentials."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{time.time_ns()}")
    client.username_pw_set(user, password)
    codes: list[int] = []
    client.on_connect = lambda c, u, f, rc, p: codes.append(rc.value)
    client.connect(world.broker.host, world.broker.port)
    client.loop_start()
    try:
        until(lambda: codes, "a CONNACK", 5)
        return codes[0]
    finally:
        client.loop_stop()


def _client(host: str, port: int, user: str, password: str, client_id: str) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.username_pw_set(user, password)
    connected: list[int] = []
    client.on_connect = lambda c, u, f, rc, p: connected.append(rc.value)
    client.connect(host, port)
    client.loop_start()
    until(lambda: connected, "a provisioning client connected", 5)
    assert connected == [0]
    return client


FAILURES = {"reject": "provisioning-rejected", "expiry": "operation-expired",
            "unreachable": "platform-unreachable", "wrong-token": "wrong-provisioning-token"}


def test_each_failure_has_its_name_and_stores_nothing(tmp_path: Path) -> None:
    """Four hubs at once, each against a platform of its own, each failing its own way."""
    worlds = {case: ProvWorld(tmp_path / case, retry_after=0.2) for case in FAILURES}
    hubs: dict[str, Hub] = {}
    try:
        worlds["expiry"].settings(operation_lifetime=1)
        presets: dict[str, dict[str, object]] = {
            "unreachable": {"port": free_port("127.0.0.1")},  # nothing listens there
            "wrong-token": {"token": "a-token-this-platform-never-issued"}}
        for case, world in worlds.items():
            config = world.hub_config(directory(tmp_path, f"hub-{case}"),
                                      **presets.get(case, {}))
            hubs[case] = world.start_hub(config, wait=False)
        for hub in hubs.values():
            hub.ready()
        hubs["reject"].code()
        worlds["reject"].ctl("platform", "reject", worlds["reject"].pending()[0]["id"],
                             "--reason", "not one of ours")
        for case, code in FAILURES.items():
            hub = hubs[case]
            status = hub.wait(lambda s: last_error(s) is not None, f"the {case} failure", 30)
            assert last_error(status) == code, status["provisioning"]
            reason = status["provisioning"]["last_error"]["reason"]
            assert SIM_TOKEN not in reason and "never-issued" not in reason
            assert nothing_stored(hub) and status["state"] != "online"
        assert "not one of ours" in hubs["reject"].status()["provisioning"]["last_error"][
            "reason"]
        assert "not one of ours" in hubs["reject"].panel()  # and on the panel
        # An expired operation is followed by a new one at once: a new id, a new code.
        expired = worlds["expiry"]
        until(lambda: len(expired.operations()) >= 2, "a second operation")
        first, second = expired.operations()[:2]
        assert first["state"] == "expired" and second["id"] != first["id"]
    finally:
        for hub in hubs.values():
            hub.stop()
        for world in worlds.values():
            world.stop()
    assert all(nothing_stored(hub) for hub in hubs.values())


# ---- enroll mode -------------------------------------------------------------------------------

def test_enroll_mode_and_its_three_named_errors(world: ProvWorld, tmp_path: Path) -> None:
    root = world.account.username
    with Monitor(world.broker, f"{root}/sweet-home/{HUB_ID}/$state") as mon:
        hub = world.start_hub(world.hub_config(directory(tmp_path, "hub"), "enroll"))
        try:
            hub.wait(lambda s: s["state"] == "online", "the enrolled hub online")
            mon.wait_for(f"{root}/sweet-home/{HUB_ID}/$state", "ready", timeout=10)
            stored = hub.stored()
            assert stored["registration"].mode == "enroll"
            assert stored["registration"].expires_at is None  # permanent
            label = ctl_json("--socket", str(hub.socket), "setup-code")
            assert label["serial"] == SIM_SERIALS[0]
            assert label["payload"].endswith(f":sn={SIM_SERIALS[0]}")
            assert label["payload"].startswith(f"GWD1:{HUB_ID}:")
        finally:
            hub.stop()
    # Three more hubs at once, each with one thing wrong.
    cases = {"already-enrolled": {}, "unknown-serial": {"serial": "00000000deadbeef"},
             "wrong-enroll-password": {"enroll_password": "not-the-password"}}
    hubs: dict[str, Hub] = {}
    try:  # each one started inside: one that fails to start leaves none behind
        for code, preset in cases.items():
            hubs[code] = world.start_hub(world.hub_config(directory(tmp_path, code), "enroll",
                                                          **preset))
        for code, bad in hubs.items():
            status = bad.wait(lambda s: last_error(s) is not None, code, 30)
            assert last_error(status) == code, status["provisioning"]
            assert nothing_stored(bad)
    finally:
        for bad in hubs.values():
            bad.stop()


# ---- kill -9 ---------------------------------------------------------------------------------

PHASES = ("started", "waiting", "approved", "refreshing")


def test_kill_9_at_any_moment_leaves_no_or_complete_credentials_and_resumes(
        world: ProvWorld, tmp_path: Path) -> None:
    """CI: one kill per phase. ``GATEWAYD_PROVISIONING_KILLS=N`` (make
    test-provisioning-kills): N kills at random phases and random points within them."""
    loops = int(os.environ.get("GATEWAYD_PROVISIONING_KILLS", "0"))
    rng = random.Random(loops or 17)
    # One kill per phase but "started" (the shortest: a kill before the operation may even
    # be stored), which the long form draws among the others.
    plan = [rng.choice(PHASES) for _ in range(loops)] if loops else list(PHASES[1:])
    world.settings(registration_lifetime=8)  # outlives a kill and a restart
    for i, phase in enumerate(plan):
        config = world.hub_config(directory(tmp_path, f"hub{i}"))
        hub = world.start_hub(config)
        _reach(world, hub, phase, rng)
        hub.kill()
        stored = hub.stored()
        assert (stored["cloud"] is None) == (stored["registration"] is None), (phase, stored)
        again = world.start_hub(config)
        try:
            if stored["registration"] is None:
                op = stored["operation"]
                approved = op is not None and any(o["id"] == op.id and o["state"] == "approved"
                                                  for o in world.operations())
                if not approved:
                    again.code()
                    pending = world.pending()
                    if op is not None:  # the same operation, resumed: not a new one
                        assert [o["id"] for o in pending] == [op.id], (phase, pending)
                    world.ctl("platform", "approve", pending[0]["id"])
            again.wait(lambda s: s["state"] == "online", f"online after a kill ({phase})")
            assert again.stored()["registration"] is not None
        finally:
            again.stop()
        world.provisioning.revoke(HUB_ID)  # the next round's hub registers afresh


def test_a_restarted_platform_keeps_its_registrations(tmp_path: Path) -> None:
    """The simulator's workdir survives a restart: a provisioned hub stays registered."""
    world = ProvWorld(tmp_path / "world", auto_approve=True)
    config = world.hub_config(directory(tmp_path, "hub"))
    try:
        hub = world.start_hub(config)
        hub.wait(lambda s: s["state"] == "online", "online")
        hub.stop()
    finally:
        world.stop()
    assert (world.provisioning.registry.stat().st_mode & 0o777) == 0o600
    again = ProvWorld(tmp_path / "world")
    try:
        assert list(again.provisioning.devices) == [HUB_ID]
        hub = again.start_hub(config)
        status = hub.wait(lambda s: s["state"] == "online", "online after the restart")
        assert status["provisioning"]["attempts"] == 0  # booted with its account, no new ask
        hub.stop()
    finally:
        again.stop()


def _reach(world: ProvWorld, hub: Hub, phase: str, rng: random.Random) -> None:
    """Bring the hub to ``phase``; the kill follows at once."""
    if phase == "started":
        return
    hub.code()
    if phase == "waiting":
        return
    op = world.pending()[0]["id"]
    world.ctl("platform", "approve", op)
    if phase == "approved":  # somewhere between the approval and the commit, or just after
        if rng.random() < 0.5:
            until(lambda: world.provisioning.operations[op].state == "approved", "approved")
        return
    hub.wait(lambda s: s["state"] == "online", "online")
    refreshes = world.provisioning.devices[HUB_ID].refreshes
    until(lambda: world.provisioning.devices[HUB_ID].refreshes > refreshes,
          "the platform issuing the next token", 10)


def test_the_platform_saves_its_registry_from_many_threads_at_once(world: ProvWorld) -> None:
    """The MQTT thread answering a hub and a control request (reject) both save the
    registry. Two saves at once renamed each other's temp file away (FileNotFoundError in
    the MQTT thread, which then never answered the hub: CI saw it as a hub that timed out
    waiting for `poll`)."""
    prov = world.provisioning
    failures: list[BaseException] = []

    def save_many() -> None:
        try:
            for _ in range(40):
                prov._save()
        except BaseException as exc:  # collected, asserted below
            failures.append(exc)

    threads = [threading.Thread(target=save_many) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == [] and not any(t.is_alive() for t in threads)
    assert "devices" in json.loads(prov.registry.read_text())
    assert not list(prov.registry.parent.glob(".*.tmp"))


def test_the_operator_commands_name_what_does_not_exist(world: ProvWorld) -> None:
    listing = json.loads(world.sim_json.read_text())
    assert listing["platform"]["control"].startswith("http://127.0.0.1:")
    assert world.ctl("platform", "operations").stdout.strip() == "no provisioning operations yet"
    bad = world.ctl("platform", "approve", "nothex", check=False)
    assert bad.returncode == 1 and "not an operation id" in bad.stderr
    missing = world.ctl("platform", "approve", "abcdef", check=False)
    assert missing.returncode == 1 and "no operation" in missing.stderr
    gone = world.ctl("platform", "revoke", HUB_ID, check=False)
    assert gone.returncode == 1 and "no registration" in gone.stderr


# ---- the simulator ---------------------------------------------------------------------------

def test_the_simulator_presets_a_hub_that_shows_its_code_everywhere(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`gatewayd --simulate --provisioning token`: sim.json, status, the platform's list,
    the panel, BLE's INFO and the journal all carry the same verification code."""
    sim = Sim(tmp_path / "sim", "--provisioning", "token")
    try:
        preset = sim.info["provisioning"]
        assert (preset["mode"], preset["token"]) == ("token", SIM_TOKEN)
        assert preset["serial"] == SIM_SERIALS[0] and preset["endpoint"]["port"] > 0
        assert sim.info["network"]["ethernet_interface"] == "eth0"
        code = until(lambda: sim.status()["provisioning"]["verification_code"], "the code")
        listing = ctl_json("--sim", str(sim.workdir), "platform", "operations")
        assert [op["verification_code"] for op in listing["operations"]] == [code]
        status, page = http_get(f"{sim.info['portal']}/")
        assert status == 200 and code in page and 'id="verification-code"' in page
        assert 'name="wsp"' not in page  # no account form: the platform issues it
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", sim.info["system_bus"])
        assert run_async(_ble_info(), 60)["provisioning"]["verification_code"] == code
        assert f"verification code {code}" in sim.proc.output()
        ctl("--sim", str(sim.workdir), "platform", "approve", listing["operations"][0]["id"])
        until(lambda: sim.status()["state"] == "online", "the simulated hub online", 30)
    finally:
        assert sim.proc.stop(signal.SIGINT, timeout=30) == 0, sim.proc.output()[-3000:]


async def _ble_info() -> dict[str, object]:
    hubs = await phone.find_hubs("hci1", timeout=20)
    assert hubs, "the hub does not advertise"
    async with phone.connect(hubs[0], "hci1") as client:
        return await phone.read_info(client)
