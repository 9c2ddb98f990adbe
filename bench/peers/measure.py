"""The measurements, the same for both stacks (see bench/README.md, "Peers").

Every figure goes into ``results`` as ``<stack>_<figure>``; the raw material of the plot
(latencies, RSS and CPU over time) into ``trace``.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from bench.harness import BenchError, Monitor, Results, cpu_s, percentile, rss_mb, subscriber
from bench.peers.hostspeed import record
from bench.peers.ncp import NcpProcess
from bench.peers.stacks import SCALE, Stack
from bench.subscriber import raw_value
from gatewayd.simulator.procs import wait_until

MODULO = 30000


@dataclass(frozen=True)
class PeerSettings:
    devices: int = 200
    startup_repeats: int = 3     # restarts timed until every device is ready again
    idle_seconds: float = 30.0   # after the last start, before rss_idle_mb
    set_samples: int = 100       # /set round trips per run, one plug after the other
    set_repeats: int = 3
    # /set round trips per run with the stack idle before each, as a person's presses come
    set_spaced_samples: int = 100  # as many as back to back: the same p99 (2nd largest)
    set_spaced_gap: float = 0.1  # seconds between an answer and the next /set
    latency_rates: tuple[float, ...] = (100.0, 250.0)
    latency_seconds: float = 10.0
    latency_repeats: int = 3
    # per run, offered as fast as the emulator can; long enough that the wait for the
    # last coalescing pass (up to 0.2 s in gatewayd) is a few per cent of a run
    throughput_reports: int = 30000
    throughput_repeats: int = 5
    join_timeout: float = 900.0


PEERS_FULL = PeerSettings()
PEERS_QUICK = replace(PEERS_FULL, devices=10, startup_repeats=1, idle_seconds=3.0,
                      set_samples=10, set_repeats=1, set_spaced_samples=5,
                      set_spaced_gap=0.05, latency_seconds=2.0, latency_repeats=1,
                      throughput_reports=400, throughput_repeats=1, join_timeout=300.0)


def plug_ieees(count: int) -> list[str]:
    """The same plugs for both stacks, every run: locally administered addresses."""
    return [f"ae:57:00:00:00:00:{i >> 8:02x}:{i & 0xFF:02x}" for i in range(1, count + 1)]


class Sampler:
    """RSS and CPU time of a stack's processes twice a second, with the phase's name."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.phase = "start"
        self.samples: list[tuple[float, float, float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sampler")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):  # the sampling period
            try:
                pids = self.stack.pids()
                self.samples.append((time.monotonic(), rss_mb(pids), cpu_s(pids), self.phase))
            except (AssertionError, OSError):
                continue  # between two runs of the stack

    def close(self) -> list[tuple[float, float, float, str]]:
        self._stop.set()
        self._thread.join(5)
        return self.samples


class Plugs:
    """The plugs in the report stream's order, per stack topic, and the next offset."""

    def __init__(self, stack: Stack, ieees: list[str]) -> None:
        self.stack = stack
        self.ieees = sorted(ieees)
        self.topics = [stack.power_topic(i) for i in self.ieees]
        self.index = {topic: n for n, topic in enumerate(self.topics)}
        self.offset = 1  # raw 0 is every plug's value before the first stream

    def finals(self, count: int) -> dict[str, int]:
        n = len(self.ieees)
        return {self.topics[i]: (self.offset + (i + n * ((count - 1 - i) // n)) // n) % MODULO
                for i in range(min(n, count))}

    def report_number(self, topic: str, payload: str, offset: int) -> int | None:
        i = self.index.get(topic)
        raw = raw_value(payload, SCALE, self.stack.field)
        if i is None or raw is None:
            return None
        return ((raw - offset) % MODULO) * len(self.ieees) + i

    def advance(self, sent: int) -> None:
        self.offset = (self.offset + sent // len(self.ieees) + 1) % MODULO


def settle(stack: Stack, ncp: NcpProcess, timeout: float = 180.0, window: float = 3.0,
           quiet_per_s: float = 3.0) -> float:
    """Wait until the stack has stopped talking to the radio (interviews, binding and
    reporting configuration done): fewer than ``quiet_per_s`` frames a second from the
    host over ``window`` seconds (its watchdogs poll the NCP every few seconds).
    Returns the wait. CPU use is no witness: gatewayd's web servers never idle (see
    bench/README.md)."""
    start = time.monotonic()
    last = ncp.call("counters")["frames_in"]
    while time.monotonic() - start < timeout:
        time.sleep(window)  # the measuring window
        now = ncp.call("counters")["frames_in"]
        if now - last < quiet_per_s * window:
            return time.monotonic() - start
        last = now
    print(f"  ({stack.title} still busy on the radio after {timeout:g} s; measuring anyway)",
          flush=True)
    return timeout


def _ready_count(stack: Stack, wanted: set[str]) -> int:
    return len(stack.ready() & wanted)


JOIN_BATCH = 20  # plugs put in pairing mode at a time
PERMIT_SECONDS = 254


def form_and_join(stack: Stack, ncp: NcpProcess, ieees: list[str], settings: PeerSettings,
                  results: Results) -> None:
    """Factory-new NCP; the stack forms its network and permits joining; the plugs go
    into pairing mode ``JOIN_BATCH`` at a time (as a user pairs a handful at once) and
    each batch joins and is interviewed before the next.

    All 200 at once is not what users do, and it stalls: the emulator saves its NVM
    after every join, and bellows dropped the connection 10 s into such a join storm.
    """
    ncp.factory_new([])
    stack.start()
    stack.wait_up(180)
    started = permitted = time.monotonic()
    stack.permit_join(PERMIT_SECONDS)
    for first in range(0, len(ieees), JOIN_BATCH):
        if time.monotonic() - permitted > PERMIT_SECONDS - 60:
            stack.permit_join(PERMIT_SECONDS)
            permitted = time.monotonic()
        for ieee in ieees[first:first + JOIN_BATCH]:
            ncp.call("join", kind="plug", ieee=ieee, wait=True)
        wanted = set(ieees[:first + JOIN_BATCH])
        wait_until(lambda w=wanted: _ready_count(stack, w) >= len(w), settings.join_timeout,
                   f"{len(wanted)} plugs to join {stack.title}", interval=0.2)
    joined = time.monotonic() - started
    stack.permit_join(0)
    settled = settle(stack, ncp)
    results.note(f"{stack.name}_join_all_s", round(joined, 3))
    print(f"  {len(ieees)} plugs joined in {joined:.1f} s, settled {settled:.0f} s later",
          flush=True)


def startup(stack: Stack, ieees: list[str], settings: PeerSettings, results: Results,
            sampler: Sampler) -> None:
    """Restart ``startup_repeats`` times; each is timed to every plug ready. The last
    start keeps running, and its idle RSS is measured."""
    wanted = set(ieees)
    samples = []
    for _ in range(settings.startup_repeats):
        stack.stop()
        sampler.phase = "startup"
        stack.start()
        wait_until(lambda: stack.all_ready(wanted), 300,
                   f"{stack.title} to have every plug ready after a restart", interval=0.1)
        samples.append(time.monotonic() - stack.started_at)
    results.add(f"{stack.name}_startup_all_ready_s_{settings.devices}", samples, "s")
    stack.wait_up(60)
    sampler.phase = "idle"
    until = stack.started_at + settings.idle_seconds
    rss, cpu = [], []
    for at in (until - 4, until - 3, until - 2, until - 1, until):
        if at > time.monotonic():
            time.sleep(at - time.monotonic())  # a measurement schedule
        rss.append(rss_mb(stack.pids()))
        cpu.append((time.monotonic(), cpu_s(stack.pids())))
    results.add(f"{stack.name}_rss_idle_mb_{settings.devices}", rss, "MB")
    # What the idle stack costs: a hub on a Pi Zero pays it all day.
    results.add(f"{stack.name}_cpu_share_idle",
                [(b[1] - a[1]) / (b[0] - a[0]) for a, b in itertools.pairwise(cpu)],
                "cores")


def set_roundtrip(stack: Stack, ieees: list[str], settings: PeerSettings,
                  results: Results, sampler: Sampler, world: Any) -> None:
    """Back to back (``set_roundtrip_*``), then with the stack idle for
    ``set_spaced_gap`` before each (``set_roundtrip_spaced_*``): what a person's switch
    press gets, after the stack's code and the machine's caches have gone cold."""
    sampler.phase = "set"
    monitor = Monitor(world, stack.state_filter)
    on = dict.fromkeys(ieees, False)  # every plug joins switched off
    try:
        for figure, samples, gap in (
                ("set_roundtrip", settings.set_samples, 0.0),
                ("set_roundtrip_spaced", settings.set_spaced_samples, settings.set_spaced_gap)):
            p50, p99 = [], []
            for _ in range(settings.set_repeats):
                times = [_set_once(stack, monitor, on, ieees[i % len(ieees)], gap)
                         for i in range(samples)]
                p50.append(percentile(times, 50))
                p99.append(percentile(times, 99))
            results.add(f"{stack.name}_{figure}_p50_ms", p50, "ms")
            results.add(f"{stack.name}_{figure}_p99_ms", p99, "ms")
    finally:
        monitor.close()


def _set_once(stack: Stack, monitor: Monitor, on: dict[str, bool], ieee: str,
              gap: float) -> float:
    """One /set that flips ``ieee``: ms from the request to its new state."""
    if gap:
        time.sleep(gap)  # a measurement schedule: the idle time before the press
    on[ieee] = not on[ieee]
    topic, payload = stack.set_request(ieee, on[ieee])
    monitor.drain()
    start = time.monotonic()
    monitor.publish(topic, payload)
    state = on[ieee]
    at, _ = monitor.wait_match(stack.state_topic(ieee), lambda p, s=state: stack.state_is(p, s),
                               20, f"the plug's new state ({state})")
    return (at - start) * 1000


def stream(ncp: NcpProcess, plugs: Plugs, count: int, rate: float,
            start_at: float | None = None) -> dict[str, Any]:
    args: dict[str, Any] = {"count": count, "rate": rate, "offset": plugs.offset,
                            "modulo": MODULO}
    if start_at is not None:
        args["start_at"] = start_at
    plan: dict[str, Any] = ncp.call("stream", **args)
    if plan["devices"] != plugs.ieees:
        raise BenchError("the stream's devices are not the plugs the bench joined")
    return plan


def _finish(ncp: NcpProcess, sub: Any, plugs: Plugs, count: int,
            timeout: float) -> tuple[float, dict[str, Any]]:
    done = sub.read(timeout)
    if "done" not in done:
        raise BenchError(f"unexpected subscriber output {done}")
    sub.send({"cmd": "stop"})
    stats = sub.read(60)
    # How late the emulator itself was in handing reports to its ASH queue: if this
    # is not small next to the latencies, the radio, not the host, was the bottleneck.
    stats["emulator"] = ncp.wait_stream_done(30)
    plugs.advance(count)
    return float(done["done"]), stats


def deliveries(plugs: Plugs, records: list[list[Any]], offset: int,
               count: int) -> tuple[dict[int, float], int]:
    """When each report of a run was delivered (report number -> receipt time), and how
    many arrived themselves; a report superseded by a newer one for the same plug was
    delivered when that one arrived (bench/zigbee.py explains why)."""
    n = len(plugs.ieees)
    last = dict.fromkeys(range(n), -1)
    got: dict[int, float] = {}
    seen = 0
    for at, topic, payload in sorted(records):
        k = plugs.report_number(topic, payload, offset)
        if k is None or k >= count or k <= last[k % n]:
            continue
        seen += 1
        for covered in range(last[k % n] + n if last[k % n] >= 0 else k % n, k + 1, n):
            got[covered] = at
        last[k % n] = k
    if not got:
        raise BenchError("no report reached the subscriber")
    return got, seen


def latencies(plugs: Plugs, records: list[list[Any]], offset: int, count: int,
              due: Any) -> tuple[list[float], int]:
    """Milliseconds from due to delivered for every delivered report, and how many
    arrived themselves."""
    got, seen = deliveries(plugs, records, offset, count)
    return [(at - due(k)) * 1000 for k, at in got.items()], seen


class Paced(NamedTuple):
    start: float  # monotonic, when the run's first report was due
    end: float    # when the subscriber had every plug's last value
    cpu_us: float  # the stack's CPU time a report
    latencies_ms: list[float]  # due to delivered, for every delivered report
    seen: int     # reports that arrived themselves (not superseded)
    emulator: dict[str, Any]  # how late the emulator itself was (stream_done)
    emulator_cpu_us: float  # the emulator's CPU time a report


class Offer(NamedTuple):
    plan: dict[str, Any]  # the stream's, as the emulator started it
    done: float   # monotonic, when the subscriber had every plug's last value
    stats: dict[str, Any]  # the subscriber's summary, with the emulator's lateness
    cpu_us: float  # the stack's CPU time a report
    # The emulator's, over the same window: what the instrument spent on each report (on
    # two cores it competes with the stack; "The emulator's frame building").
    emulator_cpu_us: float


def _offer(stack: Stack, ncp: NcpProcess, plugs: Plugs, sub: Any, count: int, rate: float,
           keep: bool, timeout: float, start_at: float | None = None) -> Offer:
    """One run: ``count`` reports at ``rate`` a second (0: as fast as the emulator sends
    them) through the subscriber ``sub``."""
    sub.send({"cmd": "start", "final": plugs.finals(count), "scale": SCALE,
              "field": stack.field, "keep": keep})
    sub.read(10)
    before, radio_before = cpu_s(stack.pids()), cpu_s([ncp.pid])
    plan = stream(ncp, plugs, count, rate, start_at=start_at)
    done, stats = _finish(ncp, sub, plugs, count, timeout)
    return Offer(plan, done, stats, (cpu_s(stack.pids()) - before) / count * 1e6,
                 (cpu_s([ncp.pid]) - radio_before) / count * 1e6)


def paced(stack: Stack, ncp: NcpProcess, plugs: Plugs, sub: Any, count: int,
          rate: float) -> Paced:
    """``count`` reports offered at ``rate`` a second through the subscriber ``sub``,
    timed from when each was due."""
    offset = plugs.offset  # the run's first number: _offer moves it on
    run = _offer(stack, ncp, plugs, sub, count, rate, True, count / rate + 300,
                 start_at=time.monotonic() + 0.5)
    start = run.plan["start_at"]
    lat, seen = latencies(plugs, run.stats["records"], offset, count,
                          lambda k: start + k / rate)
    return Paced(start, run.done, run.cpu_us, lat, seen, run.stats["emulator"],
                 run.emulator_cpu_us)


def latency(stack: Stack, ncp: NcpProcess, plugs: Plugs, settings: PeerSettings,
            results: Results, sampler: Sampler, trace: dict[str, Any]) -> None:
    for rate in settings.latency_rates:
        sampler.phase = f"latency {rate:g}/s"
        p50, p99, delivered, runs, behind = [], [], [], [], []
        cpu: list[float] = []
        radio: list[float] = []
        late50: list[float] = []
        late99: list[float] = []
        count = int(rate * settings.latency_seconds)
        with subscriber(plugs.stack.world, stack.power_filter) as sub:
            for _ in range(settings.latency_repeats):
                run = paced(stack, ncp, plugs, sub, count, rate)
                lat = run.latencies_ms
                cpu.append(run.cpu_us)
                radio.append(run.emulator_cpu_us)
                p50.append(percentile(lat, 50))
                p99.append(percentile(lat, 99))
                for figure, values in (("cpu_us_per_report", cpu), ("latency_p50_ms", p50),
                                       ("latency_p99_ms", p99)):
                    record(trace, stack.name, f"{figure}_{rate:g}", run.start, run.end,
                           values[-1])
                delivered.append(run.seen / count)
                runs.append(sorted(lat))
                emulator = run.emulator
                behind.append(emulator["behind_max_s"] * 1000)
                late50.append(emulator["behind_p50_s"] * 1000)
                late99.append(emulator["behind_p99_s"] * 1000)
        tag = f"{rate:g}"
        results.note(f"{stack.name}_emulator_behind_max_ms_{tag}", round(max(behind), 3))
        # How late the emulator itself sent the reports: the part of the latency above
        # that no host can take away (bench/README.md, "The emulator's clock").
        results.add(f"{stack.name}_emulator_behind_p50_ms_{tag}", late50, "ms")
        results.add(f"{stack.name}_emulator_behind_p99_ms_{tag}", late99, "ms")
        results.add(f"{stack.name}_latency_p50_ms_{tag}", p50, "ms")
        results.add(f"{stack.name}_latency_p99_ms_{tag}", p99, "ms")
        results.add(f"{stack.name}_latency_delivered_ratio_{tag}", delivered, "")
        # The CPU a report costs at a rate a real radio carries (an EZSP stick's serial
        # line: about 250 frames a second), where waking for each report is most of it;
        # the saturated figure (throughput) depends on how fast the emulator answers.
        results.add(f"{stack.name}_cpu_us_per_report_{tag}", cpu, "us")
        results.add(f"{stack.name}_emulator_cpu_us_per_report_{tag}", radio, "us")
        # The plot shows the run with the median p99.
        median_run = sorted(zip(p99, range(len(runs)), strict=True))[len(runs) // 2][1]
        trace.setdefault("latency", {}).setdefault(stack.name, {})[tag] = _thin(
            runs[median_run])


def _thin(values: list[float], keep: int = 2000) -> list[float]:
    """At most ``keep`` points of a sorted list, spread evenly, both ends kept."""
    if len(values) <= keep:
        return values
    step = (len(values) - 1) / (keep - 1)
    return [round(values[round(i * step)], 3) for i in range(keep)]


class Flood(NamedTuple):
    start: float  # monotonic, when the emulator started sending
    end: float    # when the subscriber had every plug's last value
    cpu_us: float  # the stack's CPU time a report
    rate: float   # reports a second
    records: list[list[Any]]  # (receipt time, topic, payload) with ``keep``, else empty
    emulator_cpu_us: float  # the emulator's CPU time a report


def flood(stack: Stack, ncp: NcpProcess, plugs: Plugs, sub: Any, count: int,
          keep: bool = False) -> Flood:
    """``count`` reports offered as fast as the emulator sends them, through the
    subscriber ``sub``."""
    run = _offer(stack, ncp, plugs, sub, count, 0, keep, 900)
    start = run.plan["start_at"]
    return Flood(start, run.done, run.cpu_us, count / (run.done - start),
                 run.stats.get("records") or [], run.emulator_cpu_us)


def throughput(stack: Stack, ncp: NcpProcess, plugs: Plugs, settings: PeerSettings,
               results: Results, sampler: Sampler, trace: dict[str, Any]) -> None:
    sampler.phase = "flood"
    rates, cpu, radio = [], [], []
    with subscriber(plugs.stack.world, stack.power_filter) as sub:
        for _ in range(settings.throughput_repeats):
            run = flood(stack, ncp, plugs, sub, settings.throughput_reports)
            cpu.append(run.cpu_us)
            rates.append(run.rate)
            radio.append(run.emulator_cpu_us)
            record(trace, stack.name, "cpu_us_per_report", run.start, run.end, run.cpu_us)
            record(trace, stack.name, "reports_per_s", run.start, run.end, run.rate)
    results.add(f"{stack.name}_reports_per_s", rates, "report/s")
    results.add(f"{stack.name}_cpu_us_per_report", cpu, "us")
    # The instrument's share: whether the emulator or the stack set a flood's pace
    # (bench/README.md, "Paired runs"). The radio's, not the stack's: no ratio.
    results.add(f"{stack.name}_emulator_cpu_us_per_report", radio, "us")
    sampler.phase = "after flood"
    time.sleep(2.0)  # a measurement schedule: RSS once the flood's last work is done
    rss = []
    for _ in range(5):
        rss.append(rss_mb(stack.pids()))
        time.sleep(1.0)
    results.add(f"{stack.name}_rss_after_flood_mb_{settings.devices}", rss, "MB")


def run_stack(stack: Stack, ncp: NcpProcess, ieees: list[str], settings: PeerSettings,
              results: Results, trace: dict[str, Any]) -> None:
    print(f"{stack.title}: {len(ieees)} plugs on the EZSP emulator", flush=True)
    sampler = Sampler(stack)
    try:
        sampler.phase = "form and join"
        form_and_join(stack, ncp, ieees, settings, results)
        startup(stack, ieees, settings, results, sampler)
        set_roundtrip(stack, ieees, settings, results, sampler, stack.world)
        plugs = Plugs(stack, ieees)
        latency(stack, ncp, plugs, settings, results, sampler, trace)
        throughput(stack, ncp, plugs, settings, results, sampler, trace)
    finally:
        samples = sampler.close()
        try:
            stack.stop()
        except AssertionError:
            pass
    t0 = samples[0][0] if samples else 0.0
    phases: dict[str, list[float]] = {}  # phase -> [first, last] sample (monotonic)
    for t, _rss, _cpu, phase in samples:
        phases.setdefault(phase, [t, t])[1] = t
    trace.setdefault("phases", {})[stack.name] = phases
    trace.setdefault("timeline", {})[stack.name] = [
        [round(t - t0, 2), round(rss, 2), round(cpu, 3), phase]
        for t, rss, cpu, phase in samples]
