"""Broker kills during a report stream, and a latest-value audit.

A paired hub with N simulated plugs streams power reports (the virtual radio's report
stream, as in the benchmarks: report k is plug k mod N with raw value offset + k div N).
While it streams, mosquitto is killed with SIGKILL at seeded random moments and started
again on the same port after a seeded random outage (it keeps no state: what it retained is
gone, as after a crash without persistence). When the stream has ended and the hub says
the broker has everything, every plug's last value must be what a cloud consumer
subscribed throughout has last seen, and what the broker retains: otherwise it is ``lost``.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from bench.harness import BenchWorld
from bench.zigbee import MODULO, Plugs, stream
from chaos import mqtt
from chaos.audit import audit
from chaos.settings import Settings
from chaos.tally import Tally, ensure_alive, stop_cleanly
from chaos.watch import HealthWatch, RssSampler
from chaos.world import Hub, HubDied

UP_SECONDS = (0.3, 1.5)  # the broker lives this long between two kills
DOWN_SECONDS = (0.3, 3.0)  # and stays dead this long


def run(world: BenchWorld, settings: Settings, seed: int, out_dir: Path,
        tally: Tally) -> None:
    """Counts go to ``tally`` as they happen: a campaign that fails half-way keeps them."""
    rng = random.Random(f"{seed}-broker")
    hub = Hub(world, "broker-kill", zigbee=True)
    hub.start()
    hub.wait_pairable()
    hub.pair()
    plugs = Plugs(world, hub.join_plugs(settings.plugs))
    hub.wait_link_idle()
    recorder = mqtt.Recorder(world, f"{world.root}/sweet-home/+/meter/power")
    watch = HealthWatch(hub.port, out_dir / "health-broker_kill.txt")
    rss = RssSampler(hub.pid)
    outages: list[float] = []
    try:
        # Long enough for every kill and outage at the longest; the stream ends after them.
        seconds = settings.broker_kills * (UP_SECONDS[1] + DOWN_SECONDS[1]) + 1.0
        count = max(len(plugs.ieees), int(settings.stream_rate * seconds))
        assert hub.daemon is not None
        stream(hub.daemon, plugs, count, settings.stream_rate)
        for _ in range(settings.broker_kills):
            time.sleep(rng.uniform(*UP_SECONDS))  # seeded moments of the kill and the return
            world.broker.kill()
            tally.inputs += 1
            down = rng.uniform(*DOWN_SECONDS)
            time.sleep(down)
            world.broker.start()
            outages.append(down)
        hub.wait(lambda s: not hub.api("POST", "zigbee/sim", {"action": "stream_status"})
                 ["result"]["running"], seconds + 120, "the report stream to end")
        hub.wait_link_idle(120)
        finals = plugs.finals(count)
        mqtt.audit_latest(world, recorder, finals, tally)
    except (HubDied, TimeoutError) as exc:
        tally.problem("crashes", f"during the broker kills: {exc}\n{hub.log_tail(10)}")
    finally:
        tally.health = watch.stop()
        tally.rss_growth_mb, _, tally.rss_peak_mb = rss.stop()
        recorder.close()
    ensure_alive(hub, tally, "after the broker kills")
    status = hub.status()["cloud_link"]
    log_errors = stop_cleanly(hub, tally)
    for problem in audit(hub.state_dir):
        tally.problem("corrupt", f"after the broker kills: {problem}")
    tally.figures.update({
        "plugs": len(plugs.ieees), "reports": count, "offset": plugs.offset,
        "modulo": MODULO, "outage_s_total": round(sum(outages), 2),
        "hub_connects": status["connects"], "hub_dropped": status["dropped"],
        "recorder_connects": recorder.connects, "log_errors": log_errors,
    })
