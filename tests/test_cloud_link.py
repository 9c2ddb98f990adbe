"""The cloud link against a real mosquitto with password and ACL files (issue 5)."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import re
import socket
import ssl
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from gatewayd import homie
from gatewayd.cloud.attempts import (
    CloudOutcome,
    CloudResult,
    classify_connack,
    classify_connect_error,
)
from gatewayd.cloud.commands import CommandRunner
from gatewayd.cloud.notifications import notify
from gatewayd.cloud.outcome import CLOSED_SETTLE, CLOSED_TRIES, HEARTBEAT_GROUP, StartOutcome
from gatewayd.cloud.publisher import WINDOW, Outbox
from gatewayd.cloud.publisher import Pending as _Out
from gatewayd.cloud.reqres import RequestTimeout
from gatewayd.cloud.topics import client_id_for
from gatewayd.credentials import mqtt_username
from gatewayd.runtime.backoff import backoff_delay
from gatewayd.simulator.broker import Broker
from gatewayd.simulator.pki import make_test_pki
from gatewayd.simulator.procs import free_port
from tests.cloud_helpers import (
    HUB_ID,
    TOKEN,
    WSP,
    Monitor,
    TcpProxy,
    creds_for,
    fast_config,
    make_broker,
    make_child,
    make_hub,
    make_link,
    retained_snapshot,
    run,
)
from tests.helpers import wait_for
from tests.test_hardware import until

pytestmark = pytest.mark.timeout(60)

ROOT = mqtt_username(WSP)
CHILD = "virtual-lamp"


def base(device_id: str = HUB_ID) -> str:
    return f"{ROOT}/sweet-home/{device_id}"


def errors(device_id: str, path: str) -> str:
    return f"{ROOT}/errors/sweet-home/{device_id}/{path}"


async def publish(mon: Monitor, topic: str, payload: str) -> None:
    await asyncio.to_thread(mon.publish, topic, payload)


# ---- the device tree ------------------------------------------------------------------------

@pytest.mark.slow
def test_subscriber_sees_complete_retained_tree_and_ready(broker: Broker) -> None:
    async def main() -> tuple[dict[str, str], list[str], list[bool]]:
        link = make_link()
        with Monitor(broker) as mon:
            await link.start(creds_for(broker))
            result = await link.wait_result(5)
            assert result.outcome is CloudOutcome.CONNECTED, result
            await mon.await_for(f"{base()}/$state", "ready")
            snap = await asyncio.to_thread(retained_snapshot, broker, f"{ROOT}/#")
            await link.stop()
            await mon.await_for(f"{base()}/$state", "disconnected")
            # a graceful stop leaves "disconnected", not the will's "lost"
            after = await asyncio.to_thread(retained_snapshot, broker, f"{base()}/$state")
            assert after[f"{base()}/$state"].text == "disconnected"
            return ({t: m.text for t, m in snap.items()}, mon.values(f"{base()}/$state"),
                    [m.retain for m in snap.values()])

    tree, states, retained = run(main())
    b = base()
    expected = {
        "$homie": "3.0.1", "$name": "Test hub", "$state": "ready", "$localip": "127.0.0.1",
        "$mac": "aa:bb:cc:dd:ee:ff", "$fw/name": "test-hub", "$fw/version": "1",
        "$implementation": "gatewayd", "$nodes": "switch", "$options": "location",
        "$telemetry": "ip,signal,uptime,memory,cpu-temperature",
        # telemetry, in property format
        "$telemetry/ip": "10.0.0.2", "$telemetry/ip/$name": "IP address",
        "$telemetry/ip/$datatype": "string", "$telemetry/ip/$settable": "false",
        "$telemetry/ip/$retained": "true",
        "$telemetry/signal": "70", "$telemetry/signal/$unit": "%",
        "$telemetry/signal/$format": "0:100", "$telemetry/uptime": "123",
        "$telemetry/uptime/$unit": "s", "$telemetry/memory": "40",
        "$telemetry/cpu-temperature": "48.5", "$telemetry/cpu-temperature/$datatype": "float",
        "$telemetry/cpu-temperature/$unit": "°C",
        # options
        "$options/location": "hall", "$options/location/$settable": "true",
        # a node and its properties
        "switch/$name": "Switch", "switch/$state": "ready",
        "switch/$properties": "state,level,mode",
        "switch/state": "false", "switch/state/$datatype": "boolean",
        "switch/level": "10", "switch/level/$name": "Level", "switch/level/$settable": "true",
        "switch/level/$retained": "true", "switch/level/$datatype": "integer",
        "switch/level/$unit": "%", "switch/level/$format": "0:100",
        "switch/mode": "auto", "switch/mode/$format": "auto,manual",
        "switch/mode/$settable": "false",
    }
    for suffix, value in expected.items():
        assert tree.get(f"{b}/{suffix}") == value, suffix
    assert all(retained)
    assert states[0] == "init" and "ready" in states and states[-1] == "disconnected"


@pytest.mark.slow
def test_set_is_echoed_and_bad_values_go_to_errors_topic(broker: Broker) -> None:
    calls: list[object] = []

    async def on_level(value: object) -> None:
        calls.append(value)

    async def on_state(value: object) -> None:
        raise homie.CommandError("RELAY_BUSY", "the relay is switching, try again")

    async def main() -> None:
        link = make_link(hub=make_hub(level=on_level, state=on_state))
        with Monitor(broker) as mon:
            await link.start(creds_for(broker))
            await mon.await_for(f"{base()}/$state", "ready")
            mark = mon.mark()
            b = base()

            await publish(mon, f"{b}/switch/level/set", "42")
            await mon.await_for(f"{b}/switch/level", "42", mark=mark)
            assert calls == [42]

            await publish(mon, f"{b}/switch/level/set", "abc")
            err = (await mon.await_for(errors(HUB_ID, "switch/level"), mark=mark)).json()
            assert err["code"] == homie.VALIDATION and "whole number" in err["message"]

            mark = mon.mark()
            await publish(mon, f"{b}/switch/level/set", "101")
            err = (await mon.await_for(errors(HUB_ID, "switch/level"), mark=mark)).json()
            assert err == {"code": "VALIDATION", "message": "level: 101 is outside the range "
                                                            "0:100"}

            await publish(mon, f"{b}/switch/state/set", "true")
            err = (await mon.await_for(errors(HUB_ID, "switch/state"), mark=mark)).json()
            assert err == {"code": "RELAY_BUSY", "message": "the relay is switching, try again"}

            await publish(mon, f"{b}/switch/mode/set", "manual")
            err = (await mon.await_for(errors(HUB_ID, "switch/mode"), mark=mark)).json()
            assert err["code"] == homie.NOT_SETTABLE

            await publish(mon, f"{b}/switch/nothing/set", "1")
            err = (await mon.await_for(errors(HUB_ID, "switch/nothing"), mark=mark)).json()
            assert err["code"] == homie.NOT_FOUND

            # a settable option without a handler is accepted and echoed
            await publish(mon, f"{b}/$options/location/set", "kitchen")
            await mon.await_for(f"{b}/$options/location", "kitchen", mark=mark)

            # rejected values were never echoed, and the model kept the accepted one
            assert mon.values(f"{b}/switch/level", mark) == []
            assert mon.values(f"{b}/switch/state", mark) == []
            assert link.hub.find("switch/level").value == 42
            assert link.status()["command_errors"] == 5
            await link.stop()

    run(main())


@pytest.mark.slow
def test_slow_or_failing_handler_never_blocks_other_devices(broker: Broker) -> None:
    async def main() -> None:
        release = asyncio.Event()

        async def slow(value: object) -> None:
            await release.wait()

        async def never(value: object) -> None:
            await asyncio.Event().wait()

        async def broken(value: object) -> None:
            raise RuntimeError("internal detail that must not leak")

        link = make_link(hub=make_hub(level=broken), command_timeout=0.5)
        link.add_device(make_child(on_set=slow))
        link.add_device(make_child("virtual-stuck", on_set=never))
        with Monitor(broker) as mon:
            await link.start(creds_for(broker))
            await mon.await_for(f"{base(CHILD)}/$state", "ready")
            await mon.await_for(f"{base('virtual-stuck')}/$state", "ready")
            mark = mon.mark()
            await publish(mon, f"{base(CHILD)}/light/power/set", "true")
            await publish(mon, f"{base('virtual-stuck')}/light/power/set", "true")
            # while both are busy, the hub's own option still answers at once
            await publish(mon, f"{base()}/$options/location/set", "attic")
            await mon.await_for(f"{base()}/$options/location", "attic", mark=mark)
            assert mon.values(f"{base(CHILD)}/light/power", mark) == []
            release.set()
            await mon.await_for(f"{base(CHILD)}/light/power", "true", mark=mark)

            # a handler that never answers times out into the errors topic
            err = await mon.await_for(errors("virtual-stuck", "light/power"), mark=mark)
            assert err.json()["code"] == homie.TIMEOUT
            assert mon.values(f"{base('virtual-stuck')}/light/power", mark) == []

            # an unexpected exception is reported without its text
            await publish(mon, f"{base()}/switch/level/set", "5")
            err = (await mon.await_for(errors(HUB_ID, "switch/level"), mark=mark)).json()
            assert err["code"] == homie.ERROR and "internal detail" not in err["message"]
            await link.stop()

    run(main())


def make_many(device_id: str, count: int, on_set: object) -> homie.Device:
    """A child with ``count`` settable properties ``knobs/k0``... sharing one handler."""
    return homie.Device(device_id, "Knobs", mac="02:00:00:00:00:03", fw_name="virtual",
                        fw_version="1", nodes=[homie.Node("knobs", "Knobs", properties=[
                            homie.Property(f"k{i}", datatype="integer", settable=True,
                                           value=0, on_set=on_set) for i in range(count)])])


@pytest.mark.slow
def test_a_hung_device_with_many_commands_does_not_delay_another_device(
        broker: Broker) -> None:
    # Eight commands to eight properties of one hung device once took all eight handler
    # slots, and every other device's /set waited for the whole command timeout.
    async def main() -> None:
        started: list[object] = []

        async def hung(value: object) -> None:
            started.append(value)
            await asyncio.Event().wait()

        lamp: list[object] = []

        async def lamp_set(value: object) -> None:
            lamp.append(value)

        link = make_link(command_timeout=60)  # the hung ones stay pending throughout
        link.add_device(make_many("virtual-hung", 8, hung))
        link.add_device(make_child(on_set=lamp_set))
        with Monitor(broker) as mon:
            await link.start(creds_for(broker))
            await mon.await_for(f"{base(CHILD)}/$state", "ready")
            await mon.await_for(f"{base('virtual-hung')}/$state", "ready")
            mark = mon.mark()
            for i in range(8):
                await publish(mon, f"{base('virtual-hung')}/knobs/k{i}/set", str(i))
            # The broker relays one client's messages in order: these reach the hub last.
            await publish(mon, f"{base(CHILD)}/light/power/set", "true")
            await mon.await_for(f"{base(CHILD)}/light/power", "true", mark=mark, timeout=20)
            assert lamp == [True]
            # ... while the hung device's commands are all still unanswered
            hung_topics = [f"{base('virtual-hung')}/knobs/k{i}" for i in range(8)]
            hung_topics += [errors("virtual-hung", f"knobs/k{i}") for i in range(8)]
            assert [m for m in mon.since(mark) if m.topic in hung_topics] == []
            assert sorted(started) == [0, 1]  # it holds two slots; the rest wait for them
            await link.stop()

    run(main())


@pytest.mark.slow
def test_a_command_that_cannot_start_in_time_is_answered_timeout_and_never_applied(
        broker: Broker) -> None:
    # A command waiting for the property used to wait outside the timeout: the cloud got
    # no answer in time, and the value was applied whenever the property was free again.
    async def main() -> None:
        calls: list[object] = []
        let_go = asyncio.Event()

        async def level(value: object) -> None:
            calls.append(value)
            if value == 1:
                try:
                    await asyncio.Event().wait()
                finally:
                    # a handler that needs time to give up (a radio exchange it must
                    # finish): it holds the property past its own timeout
                    await let_go.wait()

        link = make_link(hub=make_hub(level=level), command_timeout=1.0)
        with Monitor(broker) as mon:
            await link.start(creds_for(broker))
            await mon.await_for(f"{base()}/$state", "ready")
            mark = mon.mark()
            await publish(mon, f"{base()}/switch/level/set", "1")
            await publish(mon, f"{base()}/switch/level/set", "2")
            # The first cannot answer before let_go: this answer is the second's.
            err = (await mon.await_for(errors(HUB_ID, "switch/level"), mark=mark,
                                       timeout=20)).json()
            assert err["code"] == homie.TIMEOUT and "not applied" in err["message"]
            let_go.set()
            answers = await mon.await_count(errors(HUB_ID, "switch/level"), 2, mark=mark,
                                            timeout=20)
            assert answers[1].json()["code"] == homie.TIMEOUT  # the first one's
            # the property is free again, and the next command is the next one to run
            await publish(mon, f"{base()}/switch/level/set", "3")
            await mon.await_for(f"{base()}/switch/level", "3", mark=mark, timeout=20)
            assert calls == [1, 3]
            assert mon.values(f"{base()}/switch/level", mark) == ["3"]
            await link.stop()

    run(main())


def test_a_command_that_waited_for_its_turn_has_the_whole_timeout_to_run() -> None:
    # Cut short by its wait, the second of two quick toggles had its switch command killed
    # halfway: 1.5 s waiting plus 2.2 s running is past the 3 s timeout, each alone is not.
    async def main() -> None:
        answers: list[tuple[str, object]] = []
        both = asyncio.Event()

        def answer(kind: str, what: object) -> None:
            answers.append((kind, what))
            if len(answers) == 2:
                both.set()

        runner = CommandRunner(accept=lambda device, path, value: answer("ok", value),
                               reject=lambda *refusal: answer("refused", refusal),
                               timeout=3.0)

        async def switch(value: object) -> None:
            await asyncio.sleep(1.5 if value else 2.2)  # the time a command takes to run

        device = homie.Device("virtual-printer", "Printer", nodes=[homie.Node(
            "switch", "Switch", properties=[homie.Property(
                "state", datatype="boolean", settable=True, value=False, on_set=switch)])])
        runner.dispatch(device, "switch/state", b"true")
        runner.dispatch(device, "switch/state", b"false")
        await asyncio.wait_for(both.wait(), 30)
        assert answers == [("ok", True), ("ok", False)]

    run(main())


def test_a_flood_of_bad_commands_is_answered_each_but_logged_ten_a_window(
        caplog: pytest.LogCaptureFixture) -> None:
    """Before: one INFO line per refusal, so an app looping on a bad /set wrote 900 lines a
    second to the journal, whose rate limit then dropped the hub's other lines."""
    caplog.set_level(logging.INFO, logger="gatewayd.cloud.commands")

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]

    async def main() -> None:
        refused: list[tuple[str, ...]] = []
        runner = CommandRunner(accept=lambda *ok: None,
                               reject=lambda *refusal: refused.append(refusal),
                               log_window=0.5)
        device = homie.Device("virtual-plug", "Plug", nodes=[homie.Node(
            "meter", "Meter", properties=[homie.Property("power", datatype="float")])])
        for _ in range(25):
            runner.dispatch(device, "meter/power", b"1")
        assert len(refused) == 25  # every command is still answered
        await until(lambda: len(lines()) == 11, 10, "the window's summary")
        said = lines()
        assert said[:10] == ["command virtual-plug/meter/power rejected: NOT_SETTABLE "
                             "meter/power is read-only"] * 10
        assert said[10] == ("15 more commands rejected in the last 0.5 s, not logged one "
                            "by one")
        runner.dispatch(device, "meter/power", b"1")  # a new window: said again
        assert lines()[11:] == ["command virtual-plug/meter/power rejected: NOT_SETTABLE "
                                "meter/power is read-only"]

    run(main())


@pytest.mark.slow
def test_a_retained_set_is_ignored_and_a_plain_one_applied(broker: Broker) -> None:
    # A /set left retained (MQTT Explorer, Node-RED) reaches the hub at every subscription:
    # applied, it would run its command again at every reconnect.
    async def main() -> None:
        calls: list[object] = []

        async def level(value: object) -> None:
            calls.append(value)

        tapped = asyncio.Event()

        def tap(topic: str, payload: bytes, retained: bool) -> None:
            if retained and payload == b"77":
                tapped.set()

        link = make_link(hub=make_hub(level=level))
        with Monitor(broker) as mon:
            await asyncio.to_thread(mon.publish, f"{base()}/switch/level/set", "77",
                                    retain=True)
            start = mon.mark()
            await link.start(creds_for(broker))
            await mon.await_for(f"{base()}/$state", "ready", mark=start)
            # a tap still sees it (a reset clears what it sees), delivered retained again
            link.tap(f"sweet-home/{HUB_ID}/switch/level/set", tap)
            await asyncio.wait_for(tapped.wait(), 20)
            mark = mon.mark()
            await publish(mon, f"{base()}/switch/level/set", "42")
            # commands are handled in arrival order: had the retained one been taken, the
            # handler would have seen it first
            await mon.await_for(f"{base()}/switch/level", "42", mark=mark)
            assert calls == [42]
            assert "77" not in mon.values(f"{base()}/switch/level", start)
            assert mon.values(errors(HUB_ID, "switch/level"), start) == []
            assert link.status()["commands"] == 1
            await link.stop()

    run(main())


@pytest.mark.slow
def test_heartbeats_per_device_non_retained(broker: Broker) -> None:
    async def main() -> None:
        link = make_link(fast_config(heartbeat_interval=0.2))
        link.add_device(make_child())
        with Monitor(broker) as mon:
            await link.start(creds_for(broker))
            hub_beats = await mon.await_count(f"{base()}/$heartbeat", 6)
            child_beats = await mon.await_count(f"{base(CHILD)}/$heartbeat", 6)
            await link.stop()
        for beats in (hub_beats, child_beats):
            assert all(not b.retain and b.text == "ping" for b in beats)
            # Not faster than the interval (a slower machine only spaces them more: no upper
            # bound; how regular they are under load is the bench's business).
            gaps = [b.at - a.at for a, b in itertools.pairwise(beats[1:])]
            assert sum(gaps) / len(gaps) > 0.1, gaps
        snap = retained_snapshot(broker, f"{ROOT}/#")
        assert not any(t.endswith("/$heartbeat") for t in snap)

    run(main())


@pytest.mark.slow
def test_a_heartbeat_round_is_spread_over_the_interval(broker: Broker) -> None:
    """40 devices beat in three groups (16, 16, 8) a third of the interval apart: the
    hub, first, does not wait; the last child, in the third group, beats two thirds of
    an interval later. All 40 at once held the loop for every report due meanwhile."""
    interval = 0.9
    assert HEARTBEAT_GROUP == 16

    async def main() -> None:
        link = make_link(fast_config(heartbeat_interval=interval))
        children = [make_child(f"virtual-lamp-{n}") for n in range(39)]
        for child in children:
            link.add_device(child)
        with Monitor(broker) as mon:
            await link.start(creds_for(broker))
            last = await mon.await_count(f"{base(children[-1].id)}/$heartbeat", 3)
            hub = await mon.await_count(f"{base()}/$heartbeat", 3)
            await link.stop()
        # Never early: the third group waits for its slot (load only delays it more, and
        # the hub's beat would have to be 0.3 s later than the child's to break this).
        assert last[0].at - hub[0].at > interval / 3, (hub[0].at, last[0].at)
        gaps = [b.at - a.at for a, b in itertools.pairwise(last)]
        assert sum(gaps) / len(gaps) > interval / 2, gaps  # still once per interval

    run(main())


@pytest.mark.slow
def test_a_device_removed_during_a_heartbeat_round_does_not_beat(broker: Broker) -> None:
    async def main() -> None:
        link = make_link(fast_config(heartbeat_interval=3.0))
        children = [make_child(f"virtual-lamp-{n}") for n in range(39)]
        for child in children:
            link.add_device(child)
        gone, twin = children[-1].id, children[-2].id  # both in the third group
        with Monitor(broker) as mon:
            await link.start(creds_for(broker))
            await mon.await_count(f"{base()}/$heartbeat", 1)  # the round has begun
            link.remove_device(gone)
            await mon.await_count(f"{base(twin)}/$heartbeat", 1)  # the third group's turn
            await link.stop()
            assert mon.since(topic=f"{base(gone)}/$heartbeat") == []

    run(main())


@pytest.mark.slow
def test_notification(broker: Broker) -> None:
    async def main() -> None:
        link = make_link()
        with Monitor(broker) as mon:
            await link.start(creds_for(broker))
            await mon.await_for(f"{base()}/$state", "ready")
            assert await notify(link, "Door opened", level="warning")
            note = (await mon.await_for(f"{ROOT}/notifications/create")).json()
            assert note == {"message": "Door opened", "logLevel": "warning", "type": "text",
                            "senderType": "device", "senderId": HUB_ID}
            await link.stop()

    run(main())


# ---- outcomes ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_wrong_token_is_refused_with_a_reason(broker: Broker,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-token-1234"

    async def main() -> tuple[CloudResult, dict[str, object]]:
        link = make_link()
        await link.start(creds_for(broker, token=wrong))
        result = await link.wait_result(5)
        status = link.status()
        await link.stop()
        return result, status

    result, status = run(main())
    assert result.outcome is CloudOutcome.REFUSED
    assert result.reason == ("broker refused the credentials (not authorized): check e-mail "
                             "and token")
    assert status["last_error"] == result.reason and status["connected"] is False
    for secret in (wrong, TOKEN, WSP):
        assert secret not in caplog.text and secret not in json.dumps(status)


@pytest.mark.slow
def test_a_provisioned_hubs_refused_account_is_not_blamed_on_what_a_person_typed(
        broker: Broker) -> None:
    """Before: a provisioned hub whose registration the platform revoked showed "check
    e-mail and token" in cloud_link.last_error; nobody typed its account (only the
    onboarding step's reason said so)."""
    async def main() -> tuple[CloudResult, dict[str, object]]:
        link = make_link(issued=True)
        await link.start(creds_for(broker, token="revoked-token-1234"))
        result = await link.wait_result(5)
        status = link.status()
        await link.stop()
        return result, status

    result, status = run(main())
    assert result.outcome is CloudOutcome.REFUSED and result.credentials_refused
    assert result.reason == status["last_error"] == (
        "broker refused the credentials (not authorized): the platform issued this account, "
        "and its broker does not know it (yet); the hub asks the platform again")


@pytest.mark.slow
def test_the_hub_sends_each_packet_at_once(broker: Broker) -> None:
    """Nagle off: a /set echo written right after its PUBACK must not wait for a delayed
    ACK (it made the /set round trip 44 ms at the median instead of 2.3 ms)."""
    import socket

    async def main() -> int:
        link = make_link()
        await link.start(creds_for(broker))
        assert (await link.wait_result(5)).outcome is CloudOutcome.CONNECTED
        assert link._conn is not None
        sock = link._conn._client.socket()
        option = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        await link.stop()
        return int(option)

    assert run(main()) != 0


def test_mqtt5_connects_and_reports_refusal(broker: Broker) -> None:
    async def main() -> None:
        link = make_link(fast_config(protocol="5"))
        with Monitor(broker) as mon:
            await link.start(creds_for(broker))
            assert (await link.wait_result(5)).outcome is CloudOutcome.CONNECTED
            await mon.await_for(f"{base()}/$state", "ready")
            await link.stop()
        bad = make_link(fast_config(protocol="5"))
        await bad.start(creds_for(broker, token="nope-nope"))
        result = await bad.wait_result(5)
        await bad.stop()
        assert result.outcome is CloudOutcome.REFUSED and "credentials" in result.reason

    run(main())


def test_nothing_listening_is_unreachable_and_retries_with_backoff() -> None:
    port = free_port()

    async def main() -> None:
        link = make_link()
        seen: list[CloudResult] = []
        two = asyncio.Event()

        def listener(result: CloudResult) -> None:
            seen.append(result)
            if len(seen) >= 3:
                two.set()

        link.add_listener(listener)
        await link.start(creds_for(None, port=port))
        result = await link.wait_result(5)
        assert result.outcome is CloudOutcome.UNREACHABLE
        assert result.reason == (f"broker unreachable: TCP connection to 127.0.0.1:{port} "
                                 "refused (nothing listens there: check host and port)")
        await asyncio.wait_for(two.wait(), 5)  # it keeps trying on its own
        assert (await link.wait_result(0.2, first_only=False)).outcome \
            is CloudOutcome.UNREACHABLE
        await link.stop()

    run(main())


def test_a_port_that_stays_closed_is_an_answer_before_the_timeout() -> None:
    """Pairing with a mistyped port heard `broker-unreachable` only after the whole
    connect_timeout (30 s): every try is refused within a millisecond. A run of refusals
    over CLOSED_SETTLE seconds is now the answer; the wait bound here (60 s) is far above
    it and far below the 600 s the step would otherwise wait."""
    port = free_port()

    async def main() -> None:
        link = make_link()
        await link.start(creds_for(None, port=port))
        result = await asyncio.wait_for(
            link.wait_result(600, first_only=False, closed_is_answer=True), 60)
        assert result.outcome is CloudOutcome.UNREACHABLE and result.port_closed
        assert "nothing listens there" in result.reason
        await link.stop()

    run(main())


def test_closed_port_settles_only_after_an_unbroken_run_of_refusals() -> None:
    """A broker restarting refuses for a moment: neither a short run nor a run broken by
    another failure is an answer; CLOSED_TRIES refusals over CLOSED_SETTLE seconds are, for
    new credentials only: with proven ones (boot, reconnect) the broker is starting."""
    closed = CloudResult(CloudOutcome.UNREACHABLE, "refused", port_closed=True)
    dns = CloudResult(CloudOutcome.UNREACHABLE, "DNS lookup failed")

    async def main() -> None:
        now = [0.0]
        start = StartOutcome(asyncio.get_running_loop(), clock=lambda: now[0])
        for at, result in ((0.0, closed), (CLOSED_SETTLE - 0.1, closed),
                           (CLOSED_SETTLE + 1, dns), (CLOSED_SETTLE + 2, closed),
                           (CLOSED_SETTLE + 3, closed), (2 * CLOSED_SETTLE + 1.9, closed)):
            now[0] = at
            start.record(result)
            assert not start.closed.done(), at
        new = asyncio.create_task(start.wait(600, first_only=False, broker="b",
                                             closed_is_answer=True))
        proven = asyncio.create_task(start.wait(600, first_only=False, broker="b"))
        now[0] = 2 * CLOSED_SETTLE + 2.1  # a run of four, CLOSED_SETTLE since its first
        start.record(closed)
        assert await new is closed  # new credentials: the answer
        for _ in range(5):
            await asyncio.sleep(0)  # turns of the loop for the other waiter: it goes on
        assert not proven.done() and not start.definite.done()
        start.record(CloudResult(CloudOutcome.CONNECTED, "connected"))  # the broker is up
        assert (await proven).outcome is CloudOutcome.CONNECTED
        assert CLOSED_TRIES == 3

        quick = StartOutcome(asyncio.get_running_loop(), clock=lambda: now[0])
        for at in (0.0, CLOSED_SETTLE + 1):  # long enough, but only two tries
            now[0] = at
            quick.record(closed)
        assert not quick.closed.done()

    run(main())


def test_classification_of_connect_failures() -> None:
    dns = classify_connect_error(socket.gaierror(-2, "Name or service not known"),
                                 "mqtt.example", 1883, False)
    assert dns.outcome is CloudOutcome.UNREACHABLE
    assert dns.reason.startswith("broker unreachable: DNS lookup of 'mqtt.example' failed")

    mismatch = ssl.SSLCertVerificationError(1, "certificate verify failed")
    mismatch.verify_message = "Hostname mismatch, certificate is not valid for 'mqtt.example'."
    tls = classify_connect_error(mismatch, "mqtt.example", 8883, True)
    assert tls.reason == ("TLS: certificate verify failed: hostname mismatch (the broker's "
                          "certificate is not valid for 'mqtt.example')")
    expired = ssl.SSLCertVerificationError(1, "certificate verify failed")
    expired.verify_message = "certificate has expired"
    assert "check the hub's clock" in classify_connect_error(expired, "h", 1, True).reason
    timeout = classify_connect_error(TimeoutError("timed out"), "h", 1, False)
    assert timeout.reason == "broker unreachable: TCP connection to h:1 timed out"

    def connack(name: str) -> CloudResult:
        return classify_connack(ReasonCode(PacketTypes.CONNACK, name), "h", 1, "3.1.1")

    assert connack("Bad user name or password").outcome is CloudOutcome.REFUSED
    assert connack("Server unavailable").outcome is CloudOutcome.UNREACHABLE
    assert "cloud.protocol" in connack("Unsupported protocol version").reason


# ---- liveness: will, reconnect, republication, offline buffer ---------------------------------

@pytest.mark.slow
def test_vanished_hub_leaves_lost_via_will_and_comes_back(broker: Broker) -> None:
    proxy = TcpProxy(broker.host, broker.port)

    async def main() -> None:
        link = make_link()
        with Monitor(broker) as mon:
            await link.start(creds_for(broker, host=proxy.host, port=proxy.port))
            await mon.await_for(f"{base()}/$state", "ready")
            mark = mon.mark()
            proxy.cut()  # the hub's TCP connection dies without an MQTT DISCONNECT
            lost = await mon.await_for(f"{base()}/$state", "lost", mark=mark)
            await mon.await_for(f"{base()}/$state", "ready", mark=mon.since().index(lost))
            assert link.status()["connects"] == 2
            # the republication after a reconnect does not go through "init" again
            assert "init" not in mon.values(f"{base()}/$state", mark)
            await link.stop()

    try:
        run(main())
    finally:
        proxy.close()


@pytest.mark.slow
def test_broker_restart_reconnects_and_republishes_latest_values(tmp_path: Path) -> None:
    broker = make_broker(tmp_path / "broker")
    proxy = TcpProxy(broker.host, broker.port)

    async def main() -> None:
        link = make_link()
        link.add_device(make_child())
        lost = asyncio.Event()
        link.add_listener(lambda r: lost.set() if r.outcome is CloudOutcome.UNREACHABLE
                          else None)
        with Monitor(broker) as mon:
            await link.start(creds_for(broker, host=proxy.host, port=proxy.port))
            await mon.await_for(f"{base(CHILD)}/$state", "ready")
            await notify(link, "before")
        proxy.paused.set()  # the hub may not reconnect before the new monitor listens
        broker.kill()
        await asyncio.wait_for(lost.wait(), 5)
        assert not link.connected

        for level in (1, 2, 3):  # retained values: the model keeps the latest
            link.set_value(HUB_ID, "switch", "level", level)
        link.set_value(CHILD, "light", "power", True)
        link.set_value(CHILD, "light", "press", "short")  # non-retained: coalesced in the
        link.set_value(CHILD, "light", "press", "long")   # bounded outbox, latest wins
        link.set_state(CHILD, "alert")
        assert await notify(link, "during") is False  # buffered, not lost
        assert link.status()["buffered"] == 2

        await asyncio.to_thread(broker.start)  # same port; retained state is gone
        with Monitor(broker) as mon:
            proxy.paused.clear()
            await mon.await_for(f"{base()}/$state", "ready", timeout=10)
            await mon.await_for(f"{base(CHILD)}/$state", "alert")
            await mon.await_for(f"{ROOT}/notifications/create")
            await mon.await_for(f"{base(CHILD)}/light/press")
            assert mon.values(f"{base()}/switch/level") == ["3"]
            assert mon.values(f"{base(CHILD)}/light/power") == ["true"]
            assert mon.values(f"{base(CHILD)}/light/press") == ["long"]
            assert [m.json()["message"] for m in
                    mon.since(0, f"{ROOT}/notifications/create")] == ["during"]
            snap = await asyncio.to_thread(retained_snapshot, broker, f"{ROOT}/#")
            assert snap[f"{base()}/switch/level"].text == "3"
            assert snap[f"{base()}/$name"].text == "Test hub"
            assert snap[f"{base(CHILD)}/$name"].text == "Lamp"
            assert link.status()["buffered"] == 0
            await link.stop()

    try:
        run(main())
    finally:
        proxy.close()
        broker.stop()


def test_offline_buffer_is_bounded() -> None:
    async def main() -> None:
        link = make_link(fast_config(offline_buffer=10))
        link.add_device(make_child())
        await link.start(creds_for(None, port=free_port()))
        await link.wait_result(5)
        for i in range(50):
            link.set_value(CHILD, "light", "press", f"p{i}")  # one entry: coalesced
            link.set_value(HUB_ID, "switch", "level", i)  # the model only
        for i in range(15):
            await notify(link, f"n{i}")
        status = link.status()
        assert status["buffered"] == 10 and status["dropped"] == 6
        await link.stop()

    run(main())


def test_a_broker_that_loses_acknowledgements_does_not_silence_the_hub(broker: Broker) -> None:
    # Found by the chaos suite's MQTT flood: mosquitto drops every packet to a client whose
    # outgoing queue is full, PUBACKs included. The hub's window of unacknowledged
    # publications stayed full, and it published nothing more while the connection lived on
    # (pings still answered).
    proxy = TcpProxy(broker.host, broker.port)

    async def main() -> None:
        link = make_link(fast_config(keepalive=5))
        await link.start(creds_for(broker, host=proxy.host, port=proxy.port))
        await link.wait_result(5)
        assert await link.flush(10)
        proxy.drop_pubacks.set()
        for i in range(WINDOW):
            link.publish("notifications/create", json.dumps({"message": f"n{i}"}))
        await asyncio.to_thread(wait_for, lambda: proxy.pubacks_dropped >= WINDOW, 10,
                                "the window's acknowledgements to be lost")
        proxy.drop_pubacks.clear()
        with Monitor(broker) as mon:
            link.set_value(HUB_ID, "switch", "level", 42)
            # the acknowledgement timeout is 2 x keepalive: 10 s here
            await mon.await_for(f"{base()}/switch/level", "42", timeout=30)
        assert link.status()["connects"] == 2
        await link.stop()

    try:
        run(main())
    finally:
        proxy.close()


def test_a_stop_while_the_broker_withholds_acknowledgements_leaves_no_device_ready(
        broker: Broker) -> None:
    # Before: the goodbyes queued behind a backlog the broker was slow to acknowledge, the
    # stop gave up waiting for them and sent DISCONNECT, so the broker dropped the will too:
    # the app showed the switched-off hub and its children "ready" for good.
    proxy = TcpProxy(broker.host, broker.port)

    async def main() -> None:
        link = make_link()
        link.add_device(make_child())
        with Monitor(broker) as mon:
            await link.start(creds_for(broker, host=proxy.host, port=proxy.port))
            await mon.await_for(f"{base(CHILD)}/$state", "ready")
            assert await link.flush(10)
            proxy.drop_pubacks.set()
            for i in range(WINDOW + 8):  # the window fills up, the rest waits
                link.set_value(CHILD, "light", "press", f"p{i}")
            await asyncio.to_thread(wait_for, lambda: proxy.pubacks_dropped >= WINDOW, 10,
                                    "the window's acknowledgements to be lost")
            mark = mon.mark()
            await link.stop()
            # the goodbyes went ahead of the backlog; the hub's was never acknowledged, so
            # it left without DISCONNECT and the broker published its will
            await mon.await_for(f"{base(CHILD)}/$state", "disconnected", mark=mark)
            await mon.await_for(f"{base()}/$state", "lost", mark=mark)
        after = retained_snapshot(broker, f"{ROOT}/sweet-home/#")
        assert after[f"{base()}/$state"].text == "lost"
        assert after[f"{base(CHILD)}/$state"].text == "disconnected"

    try:
        run(main())
    finally:
        proxy.close()


def test_commands_a_broker_lost_on_the_way_do_not_block_later_ones(broker: Broker) -> None:
    # Found by the chaos suite's MQTT flood: mosquitto drops packets to a client whose
    # outgoing queue is full but keeps the dropped QoS 1 messages in flight; with a QoS 1
    # subscription, 20 of them stopped every later command until the hub reconnected.
    proxy = TcpProxy(broker.host, broker.port)

    async def main() -> None:
        link = make_link()
        with Monitor(broker) as mon:
            await link.start(creds_for(broker, host=proxy.host, port=proxy.port))
            await mon.await_for(f"{base()}/$state", "ready")
            proxy.drop_publishes.set()
            for i in range(30):
                mon.publish(f"{base()}/switch/level/set", str(i))
            # 20: mosquitto's max_inflight_messages, its window of QoS 1 messages to a client
            await asyncio.to_thread(wait_for, lambda: proxy.publishes_dropped >= 20, 10,
                                    "the commands to be lost on the way")
            proxy.drop_publishes.clear()
            mon.publish(f"{base()}/switch/level/set", "42")
            await mon.await_for(f"{base()}/switch/level", "42", timeout=10)
        await link.stop()

    try:
        run(main())
    finally:
        proxy.close()


def test_a_flood_of_bad_commands_does_not_push_the_hubs_own_values_out(broker: Broker) -> None:
    # Found by the chaos suite's MQTT flood: the errors answering thousands of bad commands
    # filled the outbox and evicted, oldest first, whatever else waited in it; a value that
    # changed meanwhile never reached the broker.
    async def main() -> None:
        link = make_link(fast_config(offline_buffer=50))
        await link.start(creds_for(broker))
        await link.wait_result(5)
        assert await link.flush(10)
        read_only = f"{base()}/switch/mode/set"  # refused as NOT_SETTABLE at once
        # One turn of the loop: errors fill the window, the value waits behind them in the
        # outbox, and more errors than the outbox holds come after it.
        for _ in range(WINDOW):
            link.on_message(read_only, b"manual")
        link.set_value(HUB_ID, "switch", "level", 42)
        for _ in range(200):
            link.on_message(read_only, b"manual")
        assert link.status()["dropped"] > 0  # the outbox did overflow
        assert await link.flush(10)
        snap = await asyncio.to_thread(retained_snapshot, broker, f"{ROOT}/#")
        assert snap[f"{base()}/switch/level"].text == "42"
        await link.stop()

    run(main())


def payload(item: _Out | None) -> str:
    assert item is not None
    return item.msg.payload


def test_outbox_coalesces_and_drops_oldest() -> None:
    async def main() -> None:
        box = Outbox(3)
        loop = asyncio.get_running_loop()
        first = loop.create_future()
        box.put(_Out(homie.Message("r/a", "1"), "r/a", done=first))
        box.put(_Out(homie.Message("r/a", "2"), "r/a"))  # replaces in place
        assert len(box) == 1 and first.result() is False
        for i in range(4):
            box.put(_Out(homie.Message("r/e", str(i), retain=False), object()))
        assert len(box) == 3 and box.dropped == 2
        assert payload(box.pop()) == "1"  # oldest first
        older = _Out(homie.Message("r/e", "x"), "r/x")
        box.put(older, front=True)  # a requeued, unacknowledged publication
        assert box.pop() is older
        box.put(_Out(homie.Message("r/e", "stale"), "r/e2"))
        box.put(_Out(homie.Message("r/e", "requeued"), "r/e2"), replace=False)
        assert [payload(box.pop()) for _ in range(len(box))][-1] == "stale"

    run(main())


def test_backoff_is_exponential_with_full_jitter() -> None:
    rng = random.Random(7)
    for attempt in range(12):
        for _ in range(50):
            assert 0 <= backoff_delay(attempt, 1.0, 120.0, rng) <= min(120.0, 2.0 ** attempt)
    spread = [backoff_delay(20, 1.0, 120.0, rng) for _ in range(500)]
    assert min(spread) < 12 and max(spread) > 108  # the whole window is used
    assert backoff_delay(10_000, 1.0, 120.0, rng) <= 120.0


# ---- devices come and go -----------------------------------------------------------------------

@pytest.mark.slow
def test_add_is_idempotent_and_remove_clears_retained_topics(broker: Broker) -> None:
    async def main() -> None:
        link = make_link()
        child = make_child()
        link.add_device(child)
        with Monitor(broker) as mon:
            await link.start(creds_for(broker))
            await mon.await_for(f"{base(CHILD)}/$state", "ready")
            before = await asyncio.to_thread(retained_snapshot, broker, f"{base(CHILD)}/#")
            mark = mon.mark()
            link.add_device(child)
            await mon.await_for(f"{base(CHILD)}/$state", "ready", mark=mark)
            again = await asyncio.to_thread(retained_snapshot, broker, f"{base(CHILD)}/#")
            assert {t: m.text for t, m in again.items()} == \
                {t: m.text for t, m in before.items()}
            assert "init" not in mon.values(f"{base(CHILD)}/$state", mark)

            # a replacement without the "press" property clears that property's topics
            slim = homie.Device(CHILD, "Lamp", nodes=[homie.Node("light", properties=[
                homie.Property("power", datatype="boolean", settable=True, value=True)])])
            link.add_device(slim)
            await mon.await_for(f"{base(CHILD)}/light/press/$name", "", mark=mark)
            await mon.await_for(f"{base(CHILD)}/light/power", "true", mark=mark)

            link.remove_device(CHILD)
            await mon.await_for(f"{base(CHILD)}/$state", "", mark=mark)
            link.publish("notifications/marker", "after-removal")  # behind the clearings
            await mon.await_for(f"{ROOT}/notifications/marker", "after-removal")
            gone = await asyncio.to_thread(retained_snapshot, broker, f"{base(CHILD)}/#")
            assert gone == {}
            # its /set is no longer listened to
            with pytest.raises(KeyError):
                link.set_value(CHILD, "light", "power", False)
            with pytest.raises(ValueError):
                link.remove_device(HUB_ID)
            await link.stop()

    run(main())


@pytest.mark.slow
def test_status_shows_link_without_secrets(broker: Broker) -> None:
    async def main() -> None:
        link = make_link()
        assert link.status()["connected"] is False and link.status()["broker"] is None
        await link.start(creds_for(broker))
        await link.wait_result(5)
        status = link.status()
        assert status["broker"] == f"{broker.host}:{broker.port}"
        assert status["connected"] is True and status["tls"] is False
        assert isinstance(status["connected_since"], float)
        # the device id is the client id: the broker tells REQ/RES of each hub apart by it
        assert status["client_id"] == client_id_for(HUB_ID) == "aa-bb-cc-dd-ee-ff"
        text = json.dumps(status)
        assert TOKEN not in text and WSP not in text
        await link.stop()
        assert link.status()["connected"] is False

    run(main())


# ---- TLS ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_tls_verifies_the_broker_certificate(tmp_path: Path) -> None:
    good = make_test_pki(tmp_path / "pki-good", ["localhost", "127.0.0.1"])
    other = make_test_pki(tmp_path / "pki-other", ["broker.example.net"])
    b1 = make_broker(tmp_path / "b1", tls=good)
    b2 = make_broker(tmp_path / "b2", tls=other)

    async def attempt(broker: Broker, ca_file: str) -> tuple[CloudResult, bool]:
        link = make_link(fast_config(ca_file=ca_file))
        assert broker.tls is not None
        await link.start(creds_for(broker, host="localhost", mqtts_port=broker.tls.port))
        result = await link.wait_result(5)
        tls = bool(link.status()["tls"])
        await link.stop()
        return result, tls

    async def main() -> None:
        ok, tls = await attempt(b1, str(good.cafile))
        assert ok.outcome is CloudOutcome.CONNECTED and tls
        assert ok.reason.endswith("over TLS")

        wrong_name, _ = await attempt(b2, str(other.cafile))
        assert wrong_name.outcome is CloudOutcome.UNREACHABLE
        assert wrong_name.reason == ("TLS: certificate verify failed: hostname mismatch (the "
                                     "broker's certificate is not valid for 'localhost')")

        untrusted, _ = await attempt(b1, "")  # the system store does not know the test CA
        assert untrusted.outcome is CloudOutcome.UNREACHABLE
        assert untrusted.reason.startswith("TLS: certificate verify failed")

        missing, _ = await attempt(b1, str(tmp_path / "no-such-ca.pem"))
        assert "cannot read the CA file" in missing.reason

    try:
        run(main())
    finally:
        b1.stop()
        b2.stop()


# ---- ACL -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_hub_never_leaves_its_root(tmp_path: Path) -> None:
    broker = make_broker(tmp_path / "broker", debug_log=True)
    client_id = client_id_for(HUB_ID)

    async def main() -> None:
        link = make_link()
        link.add_device(make_child())
        api = link.platform
        with Monitor(broker) as mon:
            await link.start(creds_for(broker))
            await mon.await_for(f"{base(CHILD)}/$state", "ready")
            await mon.await_count(f"{base()}/$heartbeat", 2)
            await publish(mon, f"{base()}/switch/level/set", "7")
            await publish(mon, f"{base()}/switch/level/set", "x")
            await mon.await_for(errors(HUB_ID, "switch/level"))
            await notify(link, "hi")
            with pytest.raises(RequestTimeout):
                await api.request("ping", {}, timeout=0.2)
            link.remove_device(CHILD)
            await mon.await_for(f"{base(CHILD)}/$state", "")
            await link.stop()

    # Negative control: the same account publishing elsewhere IS denied and logged.
    intruder = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="intruder")
    intruder.username_pw_set(mqtt_username(WSP), TOKEN)
    try:
        run(main())
        intruder.connect(broker.host, broker.port)
        intruder.loop_start()
        intruder.publish("somebody-else/sweet-home/x/$state", "ready", qos=1) \
            .wait_for_publish(5)
        intruder.disconnect()
        intruder.loop_stop()
    finally:
        broker.stop()
    log = broker.log_text()
    assert "Denied PUBLISH from intruder" in log

    published = re.findall(rf"Received PUBLISH from {client_id} \([^']*'([^']*)'", log)
    subscribed = re.findall(rf"^\d+: {client_id} \d (\S+)$", log, re.MULTILINE)
    assert len(published) > 50 and len(subscribed) >= 5
    outside = [t for t in published + subscribed if not t.startswith(f"{ROOT}/")]
    assert outside == []
    assert f"Denied PUBLISH from {client_id}" not in log
