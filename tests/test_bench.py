"""The benchmark runner itself: a quick run against the real simulated world.

Figures are not asserted (timings belong to bench/, not to tests); what is checked is
that the runner measures every figure the issue names and writes them as promised.
"""

from __future__ import annotations

import importlib.util
import json
import marshal
import math
import os
from pathlib import Path

import pytest

import gatewayd
from bench.harness import DaemonProcess, compile_daemon
from tests.helpers import run_tool

pytestmark = [pytest.mark.timeout(420), pytest.mark.slow]

REQUIRED = (
    "bridge_reports_per_s", "bridge_cpu_us_per_report", "bridge_latency_p50_ms",
    "bridge_latency_p99_ms", "set_roundtrip_p50_ms", "set_roundtrip_p99_ms",
    "rss_idle_mb_minimal", "rss_idle_mb_minimal_served", "rss_idle_mb_full",
    "rss_idle_mb_full_restarted", "rss_growth_mb_10min_flood",
    "startup_ready_s_minimal", "startup_ready_s_full", "pair_to_online_s",
    "portal_healthcheck_rps", "provisioning_all_online_s", "provisioning_hub_online_s",
    "status_p99_ms_after_ready",
)


def test_a_tool_past_its_timeout_is_interrupted_so_that_it_stops_what_it_started() -> None:
    with pytest.raises(AssertionError, match="took over 5 s") as failed:
        run_tool(["tests.tool_that_hangs"], timeout=5)
    output = str(failed.value).splitlines()
    assert "stopped what it started" in output
    child = int(output[1])  # the first line the tool printed
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


def test_quick_bench_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    # on a stall the failure shows what it was doing: the end of its output
    run = run_tool(["bench", "--quick", "--out", str(out), "--workdir", str(tmp_path / "work")],
                   timeout=400)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    results = json.loads(out.read_text())
    for name in REQUIRED:
        for key in (name, f"{name}_min", f"{name}_max"):
            value = results.get(key)
            assert isinstance(value, int | float) and math.isfinite(value), (key, value)
        assert results[f"{name}_min"] <= results[name] <= results[f"{name}_max"], name
    for name in ("bridge_reports_per_s", "portal_healthcheck_rps", "rss_idle_mb_full",
                 "startup_ready_s_full", "set_roundtrip_p50_ms"):
        assert results[name] > 0, name
    # The fixed-load run's reports reached the subscriber and were matched by number
    # (a few may be coalesced if the shared machine stalls the hub).
    assert results["bridge_latency_delivered_ratio"] > 0.5
    assert results["machine"]["cores"] >= 1 and results["machine"]["python"]
    assert results["quick"] == 1 and results["setting_devices"] == 12
    assert all(isinstance(v, int | float) for k, v in results.items() if k != "machine")
    assert "bridge_reports_per_s" in run.stdout  # the table


def test_publish_bench_measures_both_paces() -> None:
    run = run_tool(["bench.publish", "--count", "200", "--repeats", "2"], timeout=120)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    for name in ("publish_cpu_us_saturated", "publish_cpu_us_paced"):
        line = next(x for x in run.stdout.splitlines() if x.split()[:1] == [name])
        assert float(line.split()[1]) > 0 and "n=2" in line, line


def test_wakeup_bench_measures_each_pace_and_the_penalty() -> None:
    run = run_tool(["bench.wakeup", "--count", "50", "--spaced", "5", "--repeats", "2"],
                   timeout=120)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    for pace in ("back_to_back", "gap4ms", "gap20ms"):
        for name in (f"wakeup_rtt_us_{pace}", f"wakeup_cpu_us_{pace}"):
            line = next(x for x in run.stdout.splitlines() if x.split()[:1] == [name])
            assert float(line.split()[1]) > 0 and "n=2" in line, line
    # a difference of two medians: a sign either way is possible on a noisy machine
    assert any(x.split()[:1] == ["wakeup_penalty_cpu_us"] for x in run.stdout.splitlines())


@pytest.mark.timeout(240)
def test_memory_bench_measures_per_plug_and_traces_where_it_went() -> None:
    run = run_tool(["bench.memory", "--devices", "3", "--repeats", "1"], timeout=100)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    figures = {x.split()[0]: float(x.split()[1]) for x in run.stdout.splitlines()
               if x.split()[:1] and x.split()[0].startswith("memory_")}
    assert set(figures) == {"memory_rss_online_mb", "memory_rss_joined_mb",
                            "memory_rss_restored_mb", "memory_kb_per_plug"}, run.stdout
    assert figures["memory_rss_joined_mb"] > figures["memory_rss_online_mb"] > 20
    assert figures["memory_rss_restored_mb"] > 20  # the same hub again, its plugs restored
    traced = run_tool(["bench.memory", "--devices", "3", "--trace", "--top", "40"],
                      timeout=100)
    assert traced.returncode == 0, traced.stdout[-4000:] + traced.stderr[-4000:]
    assert "grew between online and joined" in traced.stdout
    # the join made zigpy's device objects in the daemon, which the trace saw
    assert "zigpy/device.py" in traced.stdout, traced.stdout


def test_latency_charges_a_coalesced_report_to_the_newer_value_that_replaced_it() -> None:
    from types import SimpleNamespace

    from bench.zigbee import Plugs, latencies

    plugs = Plugs(SimpleNamespace(root="r"), ["00:00:00:00:00:00:00:02",  # type: ignore[arg-type]
                                             "00:00:00:00:00:00:00:01"])
    first, second = plugs.topics  # sorted: ...:01 is plug 0
    offset, rate = 5, 10.0  # report k is due at k / 10 s; plug k % 2, raw offset + k // 2

    def power(raw: int) -> str:
        return str(raw / 10)

    records = [
        [0.05, first, power(5)],   # report 0: 50 ms late
        [0.15, second, power(5)],  # report 1: 50 ms late
        [0.45, first, power(7)],   # report 4: reports 2 (coalesced) and 4 arrive now
        [0.56, second, power(7)],  # report 5: reports 3 and 5 arrive now
        [0.57, second, power(99)],  # another run's value: not this run's report
    ]
    lat, seen = latencies(plugs, records, offset, 6, lambda k: k / rate)
    assert seen == 4
    assert sorted(round(x) for x in lat) == [50, 50, 50, 60, 250, 260]


def test_the_daemon_runs_compiled_as_on_a_hub_and_a_changed_module_is_compiled_again(
        tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    module = package / "mod.py"
    module.write_text("VALUE = 1\n")
    cached = Path(importlib.util.cache_from_source(str(module)))
    assert compile_daemon(package) and cached.exists()
    module.write_text("VALUE = 22\n")
    later = module.stat().st_mtime + 10  # compileall goes by the mtime alone
    os.utime(module, (later, later))
    assert compile_daemon(package)
    assert 22 in marshal.loads(cached.read_bytes()[16:]).co_consts  # after the header
    module.write_text("VALUE = (\n")
    assert not compile_daemon(package)
    # What the bench starts, the checkout's gatewayd, is compiled before each start.
    cached = Path(importlib.util.cache_from_source(str(Path(gatewayd.__file__).parent
                                                        / "daemon.py")))
    cached.unlink(missing_ok=True)
    daemon = DaemonProcess(tmp_path / "missing.toml", {}, tmp_path, tmp_path / "log")
    try:
        assert cached.exists()
    finally:
        daemon.stop()
