"""The full hub: Zigbee (virtual radio, N plugs), BLE, virtual devices, cloud link.

bridge_reports_per_s, bridge_cpu_us_per_report, bridge_latency_p50/p99_ms,
set_roundtrip_p50/p99_ms, rss_idle_mb_full, rss_idle_mb_full_restarted, rss_growth_mb_10min_flood,
startup_ready_s_full, status_p99_ms_after_ready.

Reports come from the virtual radio's report stream (gatewayd/zigbee/virtual/report_stream.py):
report k is plug ``k % n``'s active power with raw value ``offset + k // n``, due at
``start_at + k / rate``. The subscriber process sees ``.../meter/power`` = raw / 10 W,
so every received message names the report it carries and when that report was due.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.harness import (
    BenchError,
    BenchWorld,
    DaemonProcess,
    Monitor,
    Results,
    Subscriber,
    copy_state,
    percentile,
    subscriber,
)
from bench.settings import Settings
from gatewayd.simulator.procs import wait_until

SCALE = 10  # active_power is in 0.1 W (the plug's ac_power_divisor)
MODULO = 30000


def _child_id(ieee: str) -> str:
    return "zigbee-" + ieee.replace(":", "").lower()


class Plugs:
    """The joined plugs in the stream's order, and the offsets used so far."""

    def __init__(self, world: BenchWorld, ieees: list[str]) -> None:
        self.world = world
        self.ieees = sorted(ieees)
        self.topics = [f"{world.root}/sweet-home/{_child_id(i)}/meter/power"
                       for i in self.ieees]
        self.index = {topic: n for n, topic in enumerate(self.topics)}
        self.offset = 1  # raw 0 is every plug's value before the first stream

    def finals(self, count: int) -> dict[str, int]:
        """The last raw value each plug reports in a stream of ``count``."""
        n = len(self.ieees)
        return {self.topics[i]: (self.offset + (i + n * ((count - 1 - i) // n)) // n) % MODULO
                for i in range(min(n, count))}

    def report_number(self, topic: str, payload: str, offset: int) -> int | None:
        i = self.index.get(topic)
        if i is None:
            return None
        raw = round(float(payload) * SCALE)
        return ((raw - offset) % MODULO) * len(self.ieees) + i


def ready_plugs(daemon: DaemonProcess) -> int:
    devices = daemon.api("GET", "devices")["devices"]
    return sum(1 for d in devices if d.get("provider") == "zigbee" and d.get("state") == "ready")


def join(daemon: DaemonProcess, world: BenchWorld, settings: Settings) -> Plugs:
    wait_until(lambda: daemon.api("GET", "status").get("zigbee", {}).get("up"), 60,
               "the virtual radio to come up")
    daemon.api("POST", "zigbee/permit-join", {"seconds": 254})
    ieees = [daemon.api("POST", "zigbee/sim", {"action": "join", "kind": "plug"})["result"]
             for _ in range(settings.devices)]
    daemon.api("POST", "zigbee/permit-join", {"seconds": 0})
    wait_until(lambda: ready_plugs(daemon) >= settings.devices, 300,
               f"{settings.devices} plugs to be interviewed")
    wait_until(lambda: _link_idle(daemon), 300, "the plugs' topics to be published")
    return Plugs(world, ieees)


def _link_idle(daemon: DaemonProcess) -> bool:
    link = daemon.api("GET", "status")["cloud_link"]
    return not (link["buffered"] or link["announcing"] or link["in_flight"])


def stream(daemon: DaemonProcess, plugs: Plugs, count: int, rate: float,
            start_at: float | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"action": "stream", "count": count, "rate": rate,
                            "offset": plugs.offset, "modulo": MODULO}
    if start_at is not None:
        body["start_at"] = start_at
    plan: dict[str, Any] = daemon.api("POST", "zigbee/sim", body)["result"]
    if plan["devices"] != plugs.ieees:
        raise BenchError("the stream's devices are not the plugs the bench joined")
    return plan


def _finish(daemon: DaemonProcess, sub: Subscriber, plugs: Plugs, count: int,
            timeout: float) -> tuple[float, dict[str, Any]]:
    """Wait for the subscriber's "done"; returns its time and the stop summary."""
    done = sub.read(timeout)
    if "done" not in done:
        raise BenchError(f"unexpected subscriber output {done}")
    sub.send({"cmd": "stop"})
    stats = sub.read(60)
    wait_until(lambda: not daemon.api("POST", "zigbee/sim",
                                      {"action": "stream_status"})["result"]["running"],
               30, "the report stream to end")
    plugs.offset = (plugs.offset + count // len(plugs.ieees) + 1) % MODULO
    return float(done["done"]), stats


def throughput(daemon: DaemonProcess, plugs: Plugs, settings: Settings,
               results: Results) -> None:
    rates, cpu, msgs = [], [], []
    count = settings.throughput_reports
    with subscriber_for(plugs) as sub:
        for _ in range(settings.repeats):
            sub.send({"cmd": "start", "final": plugs.finals(count), "scale": SCALE})
            sub.read(10)
            cpu_before = daemon.cpu_s()
            plan = stream(daemon, plugs, count, 0)
            done, stats = _finish(daemon, sub, plugs, count, 300)
            cpu_used = daemon.cpu_s() - cpu_before
            elapsed = done - plan["start_at"]
            rates.append(count / elapsed)
            cpu.append(cpu_used / count * 1e6)
            msgs.append(stats["messages"] / elapsed)
    results.add("bridge_reports_per_s", rates, "report/s")
    results.add("bridge_cpu_us_per_report", cpu, "us")
    results.add("bridge_mqtt_msgs_per_s", msgs, "msg/s")


def latency(daemon: DaemonProcess, plugs: Plugs, settings: Settings,
            results: Results) -> None:
    p50, p99, delivered = [], [], []
    rate = settings.latency_rate
    count = int(rate * settings.latency_seconds)
    with subscriber_for(plugs) as sub:
        for _ in range(settings.latency_repeats):
            offset = plugs.offset
            sub.send({"cmd": "start", "final": plugs.finals(count), "scale": SCALE,
                      "keep": True})
            sub.read(10)
            plan = stream(daemon, plugs, count, rate, start_at=time.monotonic() + 0.5)
            _, stats = _finish(daemon, sub, plugs, count, settings.latency_seconds + 120)
            lat, seen = latencies(plugs, stats["records"], offset, count,
                                  lambda k, p=plan: p["start_at"] + k / rate)
            p50.append(percentile(lat, 50))
            p99.append(percentile(lat, 99))
            delivered.append(seen / count)
    results.add("bridge_latency_p50_ms", p50, "ms")
    results.add("bridge_latency_p99_ms", p99, "ms")
    results.add("bridge_latency_delivered_ratio", delivered, "")
    results.note("bridge_latency_offered_per_s", rate)


def latencies(plugs: Plugs, records: list[list[Any]], offset: int, count: int,
              due: Any) -> tuple[list[float], int]:
    """Milliseconds from due to received for every report of the run, and how many
    arrived themselves.

    A report that coalescing replaced by a newer one for the same plug was delivered
    when that newer one arrived: it gets that receipt time. (Leaving such reports out
    would drop exactly the slow ones from the percentiles.)
    """
    n = len(plugs.ieees)
    last = dict.fromkeys(range(n), -1)  # the newest report number seen per plug
    lat: list[float] = []
    seen = 0
    for at, topic, payload in sorted(records):
        k = plugs.report_number(topic, payload, offset)
        if k is None or k >= count or k <= last[k % n]:
            continue
        seen += 1
        for covered in range(last[k % n] + n if last[k % n] >= 0 else k % n, k + 1, n):
            lat.append((at - due(covered)) * 1000)
        last[k % n] = k
    if not lat:
        raise BenchError("no report reached the subscriber")
    return lat, seen


def set_roundtrip(daemon: DaemonProcess, world: BenchWorld, plugs: Plugs,
                  settings: Settings, results: Results) -> None:
    p50, p99 = [], []
    monitor = Monitor(world, f"{world.root}/sweet-home/+/switch/on-off")
    try:
        on = dict.fromkeys(plugs.ieees, False)  # every plug joins switched off
        for _ in range(settings.latency_repeats):
            samples = []
            for i in range(settings.set_samples):
                ieee = plugs.ieees[i % len(plugs.ieees)]
                topic = f"{world.root}/sweet-home/{_child_id(ieee)}/switch/on-off"
                on[ieee] = not on[ieee]  # always a change, so there is always an echo
                value = "true" if on[ieee] else "false"
                monitor.drain()
                start = time.monotonic()
                monitor.publish(f"{topic}/set", value)
                samples.append((monitor.wait_for(topic, value, 20) - start) * 1000)
            p50.append(percentile(samples, 50))
            p99.append(percentile(samples, 99))
    finally:
        monitor.close()
    results.add("set_roundtrip_p50_ms", p50, "ms")
    results.add("set_roundtrip_p99_ms", p99, "ms")


def steady_and_flood(daemon: DaemonProcess, plugs: Plugs, settings: Settings,
                     results: Results) -> None:
    rate = settings.latency_rate
    count = int(rate * settings.steady_seconds)
    with subscriber_for(plugs) as sub:
        sub.send({"cmd": "start", "final": plugs.finals(count), "scale": SCALE})
        sub.read(10)
        stream(daemon, plugs, count, rate)
        _finish(daemon, sub, plugs, count, settings.steady_seconds + 120)
        every = settings.rss_every
        results.add("rss_idle_mb_full",
                    daemon.rss_samples_until(time.monotonic() + 4 * every, every), "MB")

        flood_rate = rate * settings.flood_factor
        sub.send({"cmd": "start"})
        sub.read(10)
        rss = [daemon.rss_mb()]
        plan = stream(daemon, plugs, int(flood_rate * settings.flood_seconds), flood_rate)
        end = plan["start_at"] + settings.flood_seconds
        while time.monotonic() < end:
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))  # sampling schedule
            rss.append(daemon.rss_mb())
        daemon.api("POST", "zigbee/sim", {"action": "stream_stop"})
        status = wait_until(lambda: _stopped_stream(daemon), 30, "the flood to stop")
        sub.send({"cmd": "stop"})
        stats = sub.read(60)
        plugs.offset = (plugs.offset + status["sent"] // len(plugs.ieees) + 1) % MODULO
    results.add("rss_growth_mb_10min_flood", rss[-1] - rss[0], "MB")
    half = rss[len(rss) // 2:]
    results.add("rss_flood_second_half_growth_mb", half[-1] - half[0], "MB")
    results.add("flood_reports_per_s", status["sent"] / (status["finished_at"]
                                                         - plan["start_at"]), "report/s")
    results.add("flood_mqtt_msgs_per_s", stats["messages"] / settings.flood_seconds, "msg/s")
    results.note("flood_offered_per_s", flood_rate)
    results.note("flood_seconds", settings.flood_seconds)
    results.note("rss_flood_peak_mb", round(max(rss), 3))


def _stopped_stream(daemon: DaemonProcess) -> dict[str, Any] | None:
    status: dict[str, Any] = daemon.api("POST", "zigbee/sim",
                                        {"action": "stream_status"})["result"]
    return status if not status["running"] and status["finished_at"] else None


STATUS_EVERY = 0.02  # s between two GET /status while the hub starts
STATUS_WINDOW = 3  # rss_every after READY at least


def _status_after_ready(daemon: DaemonProcess, devices: int, window: float
                        ) -> tuple[list[float], float]:
    """``GET /status`` every 20 ms from READY until every plug is ``ready`` again (and at
    least ``window`` s): each answer's time in ms, and when the plugs were all restored."""
    assert daemon.ready_at is not None
    latencies: list[float] = []
    restored: float | None = None
    deadline = daemon.ready_at + 120
    while restored is None or time.monotonic() < daemon.ready_at + window:
        if time.monotonic() > deadline:
            raise BenchError("the plugs were not restored within 120 s")
        start = time.perf_counter()
        daemon.api("GET", "status")
        latencies.append((time.perf_counter() - start) * 1000)
        if restored is None and len(latencies) % 5 == 0 and ready_plugs(daemon) >= devices:
            restored = time.monotonic()
        time.sleep(max(0.0, STATUS_EVERY - (time.perf_counter() - start)))  # the schedule
    assert restored is not None
    return latencies, restored


def startup_full(world: BenchWorld, state_dir: Path, settings: Settings,
                 results: Results) -> None:
    ready, restored, status_p99 = [], [], []
    rss: list[float] = []
    for run in range(settings.repeats):
        daemon = world.start_daemon("full", state_dir, zigbee=True, ble=True, virtual=True)
        try:
            ready.append(daemon.wait_ready())
            latencies, at = _status_after_ready(daemon, settings.devices,
                                                STATUS_WINDOW * settings.rss_every)
            restored.append(at - daemon.started)
            status_p99.append(percentile(latencies, 99))
            if run == settings.repeats - 1:  # a hub rebooted with its network, idle
                every = settings.rss_every
                rss = daemon.rss_samples_until(time.monotonic() + 8 * every, every)
        finally:
            daemon.stop()
    results.add("startup_ready_s_full", ready, "s")
    results.add("startup_zigbee_restored_s_full", restored, "s")
    results.add("status_p99_ms_after_ready", status_p99, "ms")
    results.add("rss_idle_mb_full_restarted", rss, "MB")


def subscriber_for(plugs: Plugs) -> Any:
    return subscriber(plugs.world, f"{plugs.world.root}/sweet-home/+/meter/power")


def run(world: BenchWorld, settings: Settings, results: Results, paired: Path) -> None:
    print(f"full hub (Zigbee with {settings.devices} plugs, BLE, virtual devices)", flush=True)
    state_dir = copy_state(paired, world.workdir / "full")
    daemon = world.start_daemon("full", state_dir, zigbee=True, ble=True, virtual=True)
    try:
        daemon.wait_ready()
        wait_until(lambda: daemon.api("GET", "status").get("state") == "online", 60,
                   "the full hub to go online")
        started = time.monotonic()
        plugs = join(daemon, world, settings)
        results.note("zigbee_join_s", round(time.monotonic() - started, 3))
        results.note("zigbee_devices", len(plugs.ieees))
        set_roundtrip(daemon, world, plugs, settings, results)
        throughput(daemon, plugs, settings, results)
        latency(daemon, plugs, settings, results)
        steady_and_flood(daemon, plugs, settings, results)
    finally:
        stopped = daemon.stop()
    results.add("shutdown_s_after_flood", stopped, "s")
    startup_full(world, state_dir, settings, results)
