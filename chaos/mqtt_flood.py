"""MQTT bad input and floods against a paired hub with Zigbee plugs.

1. **Paced**: bad inputs (:mod:`chaos.mqtt_inputs`) one at a time through the cloud's
   superuser; each must get the documented error on the errors topic, with the documented
   code, within 10 s (else ``misanswers``).
2. **Flood**: many more as fast as the client can publish, while the healthcheck watcher
   and the RSS sampler watch the hub; half-way through, the plugs report their power (a
   short burst of the virtual radio's report stream). The hub may drop what it cannot
   take (its inbound queue and its outbox are bounded: cloud.md "Offline behaviour"); it
   must not die or grow without bound.
3. **Afterwards**: the values of the properties that were sent bad commands are what they
   were (retained on the broker; else ``state_changes``), each plug's last power report is
   what a subscriber saw last and the broker retains (else ``lost``: the answers to the
   flood must not push the hub's own values out), ``state.json`` has its bytes, a valid
   ``/set`` still switches a plug, and a bad one still gets its error.
"""

from __future__ import annotations

import collections
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import BenchWorld
from bench.zigbee import Plugs, stream
from chaos import mqtt
from chaos.audit import audit, differences, snapshot
from chaos.mqtt_inputs import MqttInput, Targets, make
from chaos.settings import Settings
from chaos.tally import Tally, ensure_alive, stop_cleanly
from chaos.watch import HealthWatch, RssSampler
from chaos.world import Hub, HubDied

PLUGS = 3
# Half-way through the flood each plug reports this many times, quickly, so that its last
# value waits in the hub's outbox while the answers to the flood's second half pile up.
REPORTS_PER_PLUG = 10
REPORT_RATE = 1000.0
ANSWER_SECONDS = 10.0
STATE_FILES = ("state.json",)  # zigbee.db changes by itself (last seen, link quality)


def _child(ieee: str) -> str:
    return "zigbee-" + ieee.replace(":", "").lower()


def run(world: BenchWorld, settings: Settings, seed: int, out_dir: Path,
        tally: Tally) -> None:
    """Counts go to ``tally`` as they happen: a campaign that fails half-way keeps them."""
    rng = random.Random(f"{seed}-mqtt")
    hub = Hub(world, "mqtt-flood", zigbee=True)
    hub.start()
    hub.wait_pairable()
    hub.pair()
    ieees = hub.join_plugs(PLUGS)
    targets = Targets(hub.status()["device_id"], tuple(_child(i) for i in sorted(ieees)))
    plugs = Plugs(world, ieees)
    reports = PLUGS * REPORTS_PER_PLUG
    hub.wait_link_idle()
    root = world.root
    watched = [f"{root}/sweet-home/{p}/switch/on-off" for p in targets.plugs] + [
        f"{root}/sweet-home/{targets.hub}/zigbee/permitjoin"]
    marker = f"{root}/chaos/marker"
    before = mqtt.retained(world, watched, marker)
    files = snapshot(hub.state_dir, STATE_FILES)
    link_before = hub.status()["cloud_link"]
    # The errors and the watched values only: the flood itself would come back too.
    recorder = mqtt.Recorder(world, f"{root}/errors/#", *watched, *plugs.topics)
    publisher = mqtt.Publisher(world)
    watch = HealthWatch(hub.port, out_dir / "health-mqtt_flood.txt")
    rss = RssSampler(hub.pid)
    codes: collections.Counter[str] = collections.Counter()
    flood_s = 0.0
    try:
        _paced(hub, recorder, publisher, root, rng, targets, settings.mqtt_paced, tally,
               codes)
        daemon = hub.daemon
        assert daemon is not None
        flood_s = _flood(publisher, root, rng, targets, settings.mqtt_flood, tally,
                         lambda: stream(daemon, plugs, reports, REPORT_RATE))
        hub.wait(lambda s: not hub.api("POST", "zigbee/sim", {"action": "stream_status"})
                 ["result"]["running"], 120, "the report stream to end")
        hub.wait_link_idle(120)
        mqtt.audit_latest(world, recorder, plugs.finals(reports), tally)
    except (HubDied, TimeoutError) as exc:
        tally.problem("crashes", f"during the MQTT input: {exc}\n{hub.log_tail(10)}")
    finally:
        tally.health = watch.stop()
        tally.rss_growth_mb, _, tally.rss_peak_mb = rss.stop()
    if ensure_alive(hub, tally, "after the MQTT flood"):
        after = mqtt.retained(world, watched, marker)
        for topic in watched:
            if before.get(topic) != after.get(topic):
                tally.problem("state_changes", f"{topic} was {before.get(topic)!r}, after the "
                                               f"bad commands {after.get(topic)!r}")
        for name in differences(files, snapshot(hub.state_dir, STATE_FILES)):
            tally.problem("state_changes", f"{name} changed during the bad MQTT input")
        _still_works(recorder, publisher, root, targets, tally)
    link = hub.status()["cloud_link"] if hub.alive() else link_before
    recorder.close()
    publisher.close()
    log_errors = stop_cleanly(hub, tally)
    for problem in audit(hub.state_dir):
        tally.problem("corrupt", f"after the MQTT input: {problem}")
    tally.figures.update({
        "paced": settings.mqtt_paced, "flood": settings.mqtt_flood, "reports": reports,
        "flood_seconds": round(flood_s, 2),
        "flood_msgs_per_s": round(settings.mqtt_flood / flood_s) if flood_s else None,
        "errors_by_code": dict(sorted(codes.items())),
        "hub_commands": link["commands"] - link_before["commands"],
        "hub_command_errors": link["command_errors"] - link_before["command_errors"],
        "hub_inbound_dropped": link["dropped"] - link_before["dropped"],
        "platform_dropped": link["platform"]["dropped"],
        "log_errors": log_errors,
    })


def _error_after(recorder: mqtt.Recorder, start: int, topic: str) -> Any:
    for _, got, payload, _ in recorder.since(start):
        if got == topic:
            return payload
    return None


def _paced(hub: Hub, recorder: mqtt.Recorder, publisher: mqtt.Publisher, root: str,
           rng: random.Random, targets: Targets, count: int, tally: Tally,
           codes: collections.Counter[str]) -> None:
    for n in range(count):
        item = make(rng, targets)
        start = recorder.count()
        publisher.publish(f"{root}/{item.topic}", item.payload).wait_for_publish(10)
        tally.inputs += 1
        if item.expect is None or item.error_topic is None:
            continue
        topic = f"{root}/{item.error_topic}"
        where = f"paced #{n} ({item.label}: {item.topic} {item.payload[:40]!r})"
        def answered(topic: str = topic, start: int = start) -> Any:
            return _error_after(recorder, start, topic)

        try:
            payload = recorder.wait(answered, ANSWER_SECONDS, "the error")
        except TimeoutError:
            if not hub.alive():
                raise HubDied(f"{where}: gatewayd exited ({hub.exit_code()})") from None
            tally.problem("misanswers", f"{where}: no error within {ANSWER_SECONDS:g} s "
                                        f"(want {item.expect})")
            continue
        try:
            error = json.loads(payload)
            code, message = error["code"], error["message"]
        except (ValueError, KeyError, TypeError):
            tally.problem("misanswers", f"{where}: the error is not {{code, message}}: "
                                        f"{payload[:120]!r}")
            continue
        codes[code] += 1
        if code != item.expect or not isinstance(message, str) or not message:
            tally.problem("misanswers", f"{where}: got {code} {message!r}, want {item.expect}")


def _flood(publisher: mqtt.Publisher, root: str, rng: random.Random, targets: Targets,
           count: int, tally: Tally, half_way: Callable[[], object]) -> float:
    """Publish ``count`` bad inputs back to back (QoS 0, every tenth QoS 1), calling
    ``half_way`` half-way through; seconds taken."""
    began = time.monotonic()
    last: Any = None
    for n in range(count):
        if n == count // 2:
            half_way()
        item = make(rng, targets)
        info = publisher.publish(f"{root}/{item.topic}", item.payload, qos=1 if n % 10 == 0
                                 else 0)
        if n % 10 == 0:
            last = info
        tally.inputs += 1
    if last is not None:
        last.wait_for_publish(120)
        tally.figures["flood_acknowledged"] = last.is_published()
    return time.monotonic() - began


def _still_works(recorder: mqtt.Recorder, publisher: mqtt.Publisher, root: str,
                 targets: Targets, tally: Tally) -> None:
    """A valid command still switches a plug (and back); a bad one still gets its error."""
    if not targets.plugs:
        return
    value_topic = f"{root}/sweet-home/{targets.plugs[0]}/switch/on-off"
    for value in (b"true", b"false"):
        start = recorder.count()
        publisher.publish(f"{value_topic}/set", value)

        def echoed(start: int = start, value: bytes = value) -> bool:
            return any(t == value_topic and p == value for _, t, p, _ in recorder.since(start))

        try:
            recorder.wait(echoed, ANSWER_SECONDS, "the echo")
        except TimeoutError:
            tally.problem("misanswers", f"after the flood, {value!r} on {value_topic}/set was "
                                        "not echoed")
    start = recorder.count()
    publisher.publish(f"{value_topic}/set", b"maybe")
    error_topic = f"{root}/errors/sweet-home/{targets.plugs[0]}/switch/on-off"
    try:
        recorder.wait(lambda: _error_after(recorder, start, error_topic), ANSWER_SECONDS,
                      "the error")
    except TimeoutError:
        tally.problem("misanswers", "after the flood, a bad /set got no error")


__all__ = ["MqttInput", "run"]
