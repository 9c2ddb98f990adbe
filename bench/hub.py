"""The minimal hub (Wi-Fi onboarding + cloud link; no Zigbee, no BLE).

pair_to_online_s, startup_ready_s_minimal, rss_idle_mb_minimal, rss_idle_mb_minimal_served,
portal_healthcheck_rps.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

from bench.harness import (
    BenchError,
    BenchWorld,
    DaemonProcess,
    Monitor,
    Results,
    copy_state,
)
from bench.settings import Settings
from gatewayd.simulator.procs import wait_until


def _online(daemon: DaemonProcess) -> bool:
    return bool(daemon.api("GET", "status").get("state") == "online")


def pair_to_online(world: BenchWorld, settings: Settings, results: Results) -> Path:
    """An unpaired hub gets /pair; timed until its $state is ready on the broker.

    Returns a paired state directory for the other benchmarks to start from.
    """
    state_topic = f"{world.hub_base()}/$state"
    samples = []
    monitor = Monitor(world, state_topic)
    try:
        for run in range(settings.repeats):
            state_dir = world.workdir / f"pair-{run}"
            daemon = world.start_daemon("pair", state_dir)
            try:
                daemon.wait_ready()
                monitor.drain()
                query = urllib.parse.urlencode(world.pair_params())
                start = time.monotonic()
                code, body = world.http_get(f"/pair?{query}")
                if code != 200:
                    raise BenchError(f"/pair answered {code}: {body}")
                samples.append(monitor.wait_for(state_topic, "ready", 60) - start)
                # The hub commits the pairing once its own $state came back through the
                # broker, which can be after we saw it: stopping it earlier would leave
                # an unpaired state directory for the benchmarks that start from it.
                wait_until(lambda d=daemon: d.api("GET", "status").get("paired"), 60,
                           "the hub to commit its pairing", interval=0.05)
            finally:
                daemon.stop()
    finally:
        monitor.close()
    results.add("pair_to_online_s", samples, "s")
    return state_dir


def startup_minimal(world: BenchWorld, settings: Settings, results: Results,
                    paired: Path) -> DaemonProcess:
    """A paired minimal hub, started ``repeats`` times; the last one is left running."""
    samples = []
    for run in range(settings.repeats):
        daemon = world.start_daemon("minimal", copy_state(paired, world.workdir / "minimal"))
        try:
            samples.append(daemon.wait_ready())
        except BaseException:
            daemon.stop()
            raise
        if run < settings.repeats - 1:
            daemon.stop()
    results.add("startup_ready_s_minimal", samples, "s")
    return daemon


def idle_minimal(world: BenchWorld, daemon: DaemonProcess, settings: Settings,
                 results: Results) -> None:
    """The hub's RSS at idle, as it runs unattended: online (its $state ready on the
    broker), nobody browsing its panel or running gatewayctl, so its web apps are not
    built yet (gatewayd.runtime.webserver.LazyApp). Then once more after one request to
    each (``rss_idle_mb_minimal_served``: what a hub someone has used idles at)."""
    monitor = Monitor(world, f"{world.hub_base()}/$state", retained=True)
    try:
        monitor.wait_for(f"{world.hub_base()}/$state", "ready", 60)
    finally:
        monitor.close()
    assert daemon.ready_at is not None
    idle_until = daemon.ready_at + settings.idle_seconds
    results.add("rss_idle_mb_minimal",
                daemon.rss_samples_until(idle_until, settings.rss_every), "MB")
    if not _online(daemon):  # the first control request: builds the control app
        raise BenchError("the minimal hub is not online")
    code, body = world.http_get("/healthcheck")  # and the portal's
    if code != 200:
        raise BenchError(f"/healthcheck answered {code}: {body}")
    served = daemon.rss_samples_until(time.monotonic() + 5 * settings.rss_every,
                                      settings.rss_every)
    results.add("rss_idle_mb_minimal_served", served, "MB")


def healthcheck(world: BenchWorld, settings: Settings, results: Results) -> None:
    code, body = world.http_get("/healthcheck")
    if code != 200:
        raise BenchError(f"/healthcheck answered {code}: {body}")
    samples = []
    for _ in range(settings.repeats):
        out = subprocess.run(
            [sys.executable, "-m", "bench.http_load", f"{world.portal}/healthcheck",
             str(settings.http_seconds), str(settings.http_clients)],
            capture_output=True, text=True, check=True, timeout=settings.http_seconds + 60,
            cwd=Path(__file__).resolve().parent.parent)
        data = json.loads(out.stdout)
        if data["errors"]:
            raise BenchError(f"/healthcheck failed {data['errors']} times under load")
        samples.append(data["requests"] / data["seconds"])
    results.add("portal_healthcheck_rps", samples, "req/s")
    results.note("portal_healthcheck_clients", settings.http_clients)


def run(world: BenchWorld, settings: Settings, results: Results) -> Path:
    print("minimal hub (Wi-Fi onboarding + cloud link)", flush=True)
    paired = pair_to_online(world, settings, results)
    daemon = startup_minimal(world, settings, results, paired)
    try:
        idle_minimal(world, daemon, settings, results)
        healthcheck(world, settings, results)
    finally:
        daemon.stop()
    return paired
