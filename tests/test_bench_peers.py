"""The side-by-side benchmark and the Pi Zero run's pieces (bench/peers, bench/cpulimit).

Figures are not asserted (timings belong to bench/): what is checked is how reports are
matched to the stacks' payloads, how ratios are formed, that the emulator can be made
factory-new between two hosts, that a CPU limit is a real cgroup that goes away, and
that the runner writes its figures.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bench.cpulimit import V1_ROOT, V2_ROOT, CpuLimit, CpuLimitUnavailable
from bench.noise import PROBES_PER_SAMPLE, NoiseMonitor, probe
from bench.peers.__main__ import ratios
from bench.peers.hostspeed import annotate, host_speed, record
from bench.peers.measure import Plugs, deliveries, plug_ieees
from bench.peers.ncp import NcpProcess
from bench.peers.pairs import QUIET_WINDOW, order, summarise
from bench.peers.stacks import Z2M_MAIN, Z2M_MISSING, zigbee_counts
from bench.subscriber import raw_value
from gatewayd.simulator.procs import wait_until
from gatewayd.zigbee.status_line import describe
from tests.helpers import REPO, run_tool


def test_a_report_is_read_from_homie_and_zigbee2mqtt_payloads() -> None:
    assert raw_value("12.3", 10) == 123
    assert raw_value('{"power": 12.3, "state": "OFF"}', 10, "power") == 123
    for bad, field in (("{}", "power"), ("[1]", "power"), ("7", "power"), ("x", None),
                       ('{"power": null}', "power")):
        assert raw_value(bad, 10, field) is None, bad


def test_a_coalesced_report_is_delivered_with_the_newer_value_that_replaced_it() -> None:
    stack = SimpleNamespace(field="power", power_topic=lambda ieee: f"z/{ieee}")
    ieees = ["00:00:00:00:00:00:00:02", "00:00:00:00:00:00:00:01"]
    plugs = Plugs(stack, ieees)  # type: ignore[arg-type]
    first, second = plugs.topics  # sorted: ...:01 is plug 0
    offset = 5  # report k is plug k % 2 with raw value offset + k // 2

    def state(raw: int) -> str:
        return json.dumps({"power": raw / 10, "state": "ON"})

    records = [[0.05, first, state(5)], [0.15, second, state(5)],
               [0.45, first, state(7)],   # reports 2 (replaced) and 4 arrive now
               [0.50, first, state(7)],   # the same value again: nothing new
               [0.56, second, state(99)]]  # another run's value
    got, seen = deliveries(plugs, records, offset, 6)
    assert seen == 3
    assert got == {0: 0.05, 1: 0.15, 2: 0.45, 4: 0.45}  # 3 and 5 never arrived


def test_ratios_are_gatewayd_over_zigbee2mqtt_medians() -> None:
    flat = {"gwd_cpu_us_per_report": 100.0, "gwd_cpu_us_per_report_min": 90.0,
            "z2m_cpu_us_per_report": 400.0, "z2m_cpu_us_per_report_min": 1.0,
            "gwd_only_here": 3.0, "gwd_rss_idle_mb_200": 50.0, "z2m_rss_idle_mb_200": 0,
            # the emulator's figures are the instrument's, not the stacks': no ratio
            "gwd_emulator_cpu_us_per_report": 60.0, "z2m_emulator_cpu_us_per_report": 120.0}
    assert ratios(flat) == {"ratio_cpu_us_per_report": 0.25}


def test_a_host_that_changed_speed_between_the_stacks_flags_the_run() -> None:
    """The probe's µs while each stack ran: the host 1.6 times as fast for gatewayd
    (its two speeds) makes the run noisy with a reason; within 10 % it does not, and no
    ratio is formed of the probe itself."""
    flat = {"gwd_noise_host_probe_us": 250.0, "z2m_noise_host_probe_us": 400.0}
    figures: dict[str, float] = {"noisy": 0}
    reasons = host_speed(flat, figures)
    assert figures == {"noisy": 1, "noise_host_speed_ratio": 1.6}
    assert len(reasons) == 1 and "x1.60" in reasons[0] and "over their runs" in reasons[0]
    figures = {"noisy": 0}
    assert host_speed({**flat, "gwd_noise_host_probe_us": 380.0}, figures) == []
    assert figures == {"noisy": 0, "noise_host_speed_ratio": 1.053}
    assert host_speed({"gwd_noise_host_probe_us": 250.0}, figures) == []  # one stack
    assert ratios(flat) == {}
    # level over the whole runs, but not while the saturated figure was measured
    figures = {"noisy": 0}
    reasons = host_speed({"gwd_noise_host_probe_us": 250.0, "z2m_noise_host_probe_us": 255.0,
                          "gwd_noise_host_probe_us_flood": 370.0,
                          "z2m_noise_host_probe_us_flood": 230.0}, figures)
    assert figures["noisy"] == 1 and figures["noise_host_speed_ratio_flood"] == 0.622
    assert len(reasons) == 1 and "flood phase" in reasons[0]


def test_each_run_is_kept_with_its_window_and_the_hosts_speed_inside_it() -> None:
    """Every throughput and latency run of both stacks keeps its window and value, and
    gets the probe's median inside that window; no figure is made of them."""
    probes = {10: 214.0, 20: 350.0, 50: 0.0}  # 0: no probe inside that window
    trace: dict[str, Any] = {}
    record(trace, "gwd", "cpu_us_per_report", 10, 12.5, 95.0)
    record(trace, "gwd", "cpu_us_per_report", 20, 22, 150.0)
    record(trace, "z2m", "latency_p99_ms_250", 50, 60, 2.2)
    annotate(trace["repeats"], lambda start, end: probes[int(start)])
    annotate(trace["repeats"], lambda start, end: probes[int(start)])  # once is once
    assert trace == {"repeats": {
        "gwd": {"cpu_us_per_report": [[10, 12.5, 95.0, 214.0], [20, 22, 150.0, 350.0]]},
        "z2m": {"latency_p99_ms_250": [[50, 60, 2.2, 0.0]]}}}


def test_the_host_probe_is_thread_cpu_time_for_fixed_work() -> None:
    assert 0 < probe(rounds=2, iterations=2_000) < 1e6


def test_the_noise_monitor_probes_the_host_several_times_a_second() -> None:
    """A run of two seconds gets the probes taken inside it, several a second (a single
    flood run lasts a few seconds), and their median; the machine's figures stay once a
    second."""
    started = time.monotonic()
    monitor = NoiseMonitor()
    wait_until(lambda: len(monitor.probes) >= 2 * PROBES_PER_SAMPLE + 1, 30,
               "two seconds of probes")
    monitor.stop()
    first, last = monitor.probes[0][0], monitor.probes[2 * PROBES_PER_SAMPLE][0]
    inside = [p for t, p in monitor.probes if first <= t <= last]
    assert started < first and len(inside) == 2 * PROBES_PER_SAMPLE + 1
    # the machine once for every PROBES_PER_SAMPLE probes
    assert len(monitor.samples) == len(monitor.probes) // PROBES_PER_SAMPLE >= 2
    assert monitor.window(first, last)["host_probe_us"] == statistics.median(inside)
    assert monitor.window(last + 100, last + 200)["host_probe_us"] == 0.0  # no probe


def test_gatewayd_is_told_ready_by_its_status_line_as_the_daemon_writes_it() -> None:
    assert zigbee_counts(f"online; {describe('ready', [])}") == {}
    assert zigbee_counts(f"online; {describe('ready', ['ready'])}") == {"ready": 1}
    states = ["ready"] * 11 + ["sleeping"]
    assert zigbee_counts(f"online; {describe('ready', states)}") == {"ready": 11, "sleeping": 1}
    for radio in ("starting", "down: the radio on tcp://127.0.0.1:1 does not answer (up, 2)"):
        assert zigbee_counts(f"online; {describe(radio, ['ready'])}") is None


def test_the_plugs_are_the_same_for_every_run() -> None:
    ieees = plug_ieees(300)
    assert ieees == plug_ieees(300) and len(set(ieees)) == 300
    assert ieees[0] == "ae:57:00:00:00:00:00:01" and ieees[255] == "ae:57:00:00:00:00:01:00"


@pytest.mark.slow
def test_the_emulator_is_made_factory_new_with_the_plugs_waiting_to_join(
        tmp_path: Path) -> None:
    ncp = NcpProcess(tmp_path)
    try:
        ncp.call("join", kind="plug", wait=True)  # someone else's device, pairing
        ieees = plug_ieees(3)
        ncp.factory_new(ieees)
        status = ncp.call("status")
        assert status["network"]["formed"] is False
        assert sorted(d["ieee"] for d in status["devices"]) == ieees
        assert all(d.get("pairing") for d in status["devices"])
        with pytest.raises(RuntimeError, match="factory_new"):
            ncp.call("factory_new", ieees=["not an address"])
    finally:
        ncp.close()


def _cgroups_writable() -> bool:
    return os.geteuid() == 0 and ((V1_ROOT / "cpu.cfs_quota_us").exists()
                                  or (V2_ROOT / "cgroup.controllers").exists())


@pytest.mark.skipif(not _cgroups_writable(), reason="needs root and a cgroup cpu controller")
def test_a_cpu_limit_is_a_cgroup_the_child_joins_and_that_goes_away() -> None:
    try:
        limit = CpuLimit(0.25).__enter__()
    except CpuLimitUnavailable as exc:
        pytest.skip(str(exc))
    path = limit.path
    assert path is not None
    try:
        if limit.version == 1:
            assert (path / "cpu.cfs_quota_us").read_text().strip() == "25000"
            assert (path / "cpu.cfs_period_us").read_text().strip() == "100000"
        else:
            assert (path / "cpu.max").read_text().split() == ["25000", "100000"]
        proc = subprocess.Popen([sys.executable, "-c", "import os; print(open("
                                 "f'/proc/{os.getpid()}/cgroup').read())"],
                                stdout=subprocess.PIPE, text=True, preexec_fn=limit.preexec)
        out, _ = proc.communicate(timeout=30)
        assert path.name in out
        assert set(limit.stats()) == {"periods", "throttled", "throttled_s"}
    finally:
        limit.__exit__(None, None, None)
    assert not path.exists()


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("stack", ["gwd", "z2m"])
def test_quick_peers_run_writes_each_stacks_figures(tmp_path: Path, stack: str) -> None:
    """One stack at a time, so that each is checked on its own (CI installs Zigbee2MQTT
    where node 20 or newer is there: scripts/setup.sh)."""
    if stack == "z2m" and not Z2M_MAIN.exists():
        pytest.skip(Z2M_MISSING)
    out = tmp_path / "peers.json"
    run = run_tool(["bench.peers", "--quick", "--only", stack, "--devices", "3",
                    "--out", str(out), "--workdir", str(tmp_path / "work")], timeout=560)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    results = json.loads(out.read_text())
    for name in ("cpu_us_per_report", "reports_per_s", "latency_p50_ms_100",
                 "latency_p99_ms_250", "set_roundtrip_p50_ms", "set_roundtrip_p99_ms",
                 "set_roundtrip_spaced_p50_ms", "set_roundtrip_spaced_p99_ms",
                 "rss_idle_mb_3", "rss_after_flood_mb_3", "startup_all_ready_s_3",
                 "emulator_behind_p99_ms_250", "cpu_us_per_report_100",
                 "cpu_us_per_report_250", "emulator_cpu_us_per_report",
                 "emulator_cpu_us_per_report_250"):
        for key in (f"{stack}_{name}", f"{stack}_{name}_min", f"{stack}_{name}_max"):
            value = results.get(key)
            assert isinstance(value, int | float) and math.isfinite(value), (key, value)
    assert results[f"{stack}_reports_per_s"] > 0 and results[f"{stack}_rss_idle_mb_3"] > 0
    # the emulator did the work of sending every report (400), on its own process's clock
    assert results[f"{stack}_emulator_cpu_us_per_report"] > 0
    assert "noise_other_cores_mean" in results and results["noisy"] in (0, 1)
    assert results[f"{stack}_noise_host_probe_us"] > 0
    # a quick run's phases may be shorter than the sampler's period: no figure then
    for label in ("flood", "latency_250", "set"):
        assert results.get(f"{stack}_noise_host_probe_us_{label}", 1) >= 0, label
    assert 0 < results["noise_host_probe_us_p10"] <= results["noise_host_probe_us_p90"]
    assert all(isinstance(v, int | float) for k, v in results.items() if k != "machine")
    # every throughput and latency run's window, value and the host's speed inside it
    repeats = json.loads((tmp_path / "peers-trace.json").read_text())["repeats"][stack]
    for name in ("cpu_us_per_report", "reports_per_s", "cpu_us_per_report_250",
                 "latency_p50_ms_100", "latency_p99_ms_250"):
        (start, end, value, probe_us), = repeats[name]  # a quick run: one repeat each
        assert start < end and value == pytest.approx(results[f"{stack}_{name}"]), name
        assert probe_us == 0 or 0.5 * results["noise_host_probe_us_p10"] < probe_us \
            <= results["noise_host_probe_us_p90"] * 3, name  # 0: no probe inside the run


def test_plot_draws_both_stacks_from_the_runs_json(tmp_path: Path) -> None:
    """`python -m bench.peers.plot peers.json` redraws the PNG from what a run left (the
    [peers] extra brings matplotlib; `make bench-peers` installs it)."""
    pytest.importorskip("matplotlib")
    figures = {"machine": {"date": "2026-12-05", "commit": "abc", "cores": 2},
               "noise_other_cores_mean": 0.02, "noisy": 0,
               "gwd_latency_p99_ms_100": 3.39, "z2m_latency_p99_ms_100": 3.35,
               "ratio_cpu_us_per_report": 0.54, "ratio_reports_per_s": 1.74,
               "ratio_rss_idle_mb_200": 0.85, "ratio_startup_all_ready_s_200": 1.2}
    trace = {"devices": 200,
             "latency": {s: {"100": [0.5 + i / 100 for i in range(100)]} for s in ("gwd", "z2m")},
             "timeline": {s: [[t / 2, 80.0 + t, 0.1 * t, "idle" if t > 2 else "startup"]
                              for t in range(6)] for s in ("gwd", "z2m")}}
    out = tmp_path / "peers.json"
    out.write_text(json.dumps(figures))
    (tmp_path / "peers-trace.json").write_text(json.dumps(trace))
    run = subprocess.run([sys.executable, "-m", "bench.peers.plot", str(out)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-4000:]
    png = (tmp_path / "peers.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_restart_is_timed_every_way_in_one_world() -> None:
    run = run_tool(["bench.peers.restart_ab", "--devices", "3", "--rounds", "1", "--idle",
                    "0", "--ways", "socket,status,mqtt"], timeout=270)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    summary = run.stdout.strip().splitlines()[-3:]
    assert [line.split(":")[0] for line in summary] == ["socket", "status", "mqtt"], summary
    assert all("ready_s " in line and "rss_mb " in line for line in summary), summary


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_floods_time_each_run_with_the_hosts_speed(tmp_path: Path) -> None:
    out = tmp_path / "floods.json"
    run = run_tool(["bench.peers.floods", "--devices", "3", "--runs", "2", "--reports",
                    "300", "--out", str(out)], timeout=270)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    written = json.loads(out.read_text())
    assert len(written["runs"]) == 2
    for each in written["runs"]:
        assert each["start"] < each["end"]
        assert each["cpu_us_per_report"] > 0 and each["reports_per_s"] > 0
        assert each["emulator_cpu_us_per_report"] > 0
        assert each["probe_us_before"] > 0 and each["probe_us_after"] > 0
        # 3 plugs' last values at least; the gaps between them, longest last
        gaps = each["longest_gaps_ms"]
        assert each["messages"] >= 3 and gaps == sorted(gaps) and gaps[0] >= 0
    assert 0 < written["noise_host_probe_us_p10"] < written["fast_limit_us"]
    lines = run.stdout.splitlines()
    assert sum(line.startswith("run ") for line in lines) == 2
    # every run in one of the three groups of the summary
    counts = [int(line.rsplit("n=", 1)[1].split()[0]) if "n=" in line else 0
              for line in lines if line.startswith(("host fast:", "host slow:",
                                                    "no probe inside:"))]
    assert len(counts) == 3 and sum(counts) == 2, lines[-5:]


def test_pairs_alternate_abba_and_each_pairs_ratio_compares_its_own_two_runs() -> None:
    assert [order(i) for i in range(4)] == [("gwd", "z2m"), ("z2m", "gwd"),
                                           ("gwd", "z2m"), ("z2m", "gwd")]
    runs = [{"pair": 0, "stack": "gwd", "cpu": 100.0}, {"pair": 0, "stack": "z2m", "cpu": 250.0},
            {"pair": 1, "stack": "z2m", "cpu": 200.0}, {"pair": 1, "stack": "gwd", "cpu": 120.0},
            {"pair": 2, "stack": "gwd", "cpu": 90.0}, {"pair": 2, "stack": "z2m", "cpu": 300.0},
            {"pair": 3, "stack": "z2m", "cpu": 0.0}, {"pair": 3, "stack": "gwd", "cpu": 5.0},
            {"pair": 4, "stack": "gwd", "cpu": 110.0}]  # a round cut short: no ratio
    summary = summarise(runs, ["cpu"])["cpu"]
    assert summary["gwd"] == {"median": 100.0, "min": 5.0, "max": 120.0, "n": 5}
    assert summary["z2m"] == {"median": 225.0, "min": 0.0, "max": 300.0, "n": 4}
    assert summary["ratio_of_medians"] == round(100 / 225, 4)
    # 0.4, 0.6 and 0.3: the pairs' ratios differ from the ratio of the medians
    assert summary["pair_ratios"] == {"median": 0.4, "min": 0.3, "max": 0.6, "n": 3}


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize(("extra", "figures", "pairs"), [
    (["--reports", "300"], ["cpu_us_per_report", "reports_per_s"], 2),
    # one pair: the order of a second one is the floods' to show (CI's time)
    (["--rate", "100", "--seconds", "1"],
     ["cpu_us_per_report_100", "latency_p50_ms_100", "latency_p99_ms_100"], 1)],
    ids=["floods", "paced"])
def test_pairs_run_both_stacks_alternately_on_their_own_emulators(
        tmp_path: Path, extra: list[str], figures: list[str], pairs: int) -> None:
    if not Z2M_MAIN.exists():
        pytest.skip(Z2M_MISSING)
    out = tmp_path / "pairs.json"
    run = run_tool(["bench.peers.pairs", "--devices", "3", "--pairs", str(pairs),
                    "--warmup", "0", *extra, "--out", str(out)], timeout=560)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    written = json.loads(out.read_text())
    assert [(r["pair"], r["stack"]) for r in written["runs"]] == [
        (0, "gwd"), (0, "z2m"), (1, "z2m"), (1, "gwd")][:2 * pairs]
    for each in written["runs"]:
        assert each["start"] < each["end"]
        assert all(each[figure] > 0 for figure in figures), each
        # it waited for quiet (at least one measuring window) and kept the idle side's CPU
        assert each["quiet_wait_s"] >= QUIET_WINDOW and each["others_cores"] >= 0, each
        # a paced run of 100 reports may cost the emulator less than /proc's 10 ms tick
        assert each["emulator_cpu_us_per_report"] >= (0 if "--rate" in extra else 1e-9), each
        if "--rate" in extra:
            assert each["delivered_ratio"] > 0 and each["emulator_behind_p99_ms"] >= 0, each
    assert list(written["summary"]) == figures
    for figure in figures:
        entry = written["summary"][figure]
        assert entry["gwd"]["n"] == entry["z2m"]["n"] == entry["pair_ratios"]["n"] == pairs
    lines = run.stdout.splitlines()
    assert sum(line.startswith("pair ") for line in lines) == 2 * pairs
    assert any(line.startswith(f"{figures[0]}: gwd ") and "pairs' ratios" in line
               for line in lines), lines[-3:]
