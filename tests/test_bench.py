"""The benchmark runner itself: a quick run against the real simulated world.

Figures are not asserted (timings belong to bench/, not to tests); what is checked is
that the runner measures every figure the issue names and writes them as promised.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = [pytest.mark.timeout(420), pytest.mark.slow]

REQUIRED = (
    "bridge_reports_per_s", "bridge_cpu_us_per_report", "bridge_latency_p50_ms",
    "bridge_latency_p99_ms", "set_roundtrip_p50_ms", "set_roundtrip_p99_ms",
    "rss_idle_mb_minimal", "rss_idle_mb_full", "rss_growth_mb_10min_flood",
    "startup_ready_s_minimal", "startup_ready_s_full", "pair_to_online_s",
    "portal_healthcheck_rps",
)


def test_quick_bench_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    run = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(out),
                          "--workdir", str(tmp_path / "work")],
                         cwd=REPO, capture_output=True, text=True, timeout=400)
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
    assert results["quick"] is True and results["settings"]["devices"] == 12
    assert "bridge_reports_per_s" in run.stdout  # the table
