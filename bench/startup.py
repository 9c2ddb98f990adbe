"""Import cost of the daemon's modules: time and memory, against a bare interpreter.

On a Pi Zero 2 W (512 MB) every import counts. Each case runs in a fresh interpreter;
reported as medians and as a ratio to a bare interpreter start, because this machine is
shared and absolute times are noisy.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from bench.harness import BenchError, Results
from bench.settings import Settings

PROBE = """
import json, sys
{imports}
heavy = sorted(m for m in ("zigpy", "bellows", "bleak", "dbus_fast", "segno", "cryptography",
                            "sqlite3", "flask")
               if m in sys.modules)
# VmHWM, not ru_maxrss: a forked child inherits its parent's ru_maxrss across exec.
hwm = next(int(line.split()[1]) for line in open("/proc/self/status")
           if line.startswith("VmHWM:"))
print(json.dumps({{"rss_kb": hwm, "heavy": heavy}}))
"""

CASES = {
    "bare": "",
    "cli": "import gatewayd.cli",
    # as the daemon's entry imports it (gatewayd/cli.py, run_daemon): what its libraries
    # import and it never uses deferred
    "daemon": "from gatewayd import cli; cli.defer_unused_imports(); import gatewayd.daemon",
}


def measure(imports: str, runs: int) -> tuple[list[float], list[float], list[str]]:
    times, rss = [], []
    heavy: list[str] = []
    for _ in range(runs):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", PROBE.format(imports=imports)],
                             capture_output=True, text=True, check=True).stdout
        times.append(time.perf_counter() - start)
        data = json.loads(out)
        rss.append(data["rss_kb"] / 1024)
        heavy = data["heavy"]
    return times, rss, heavy


def run(settings: Settings, results: Results) -> None:
    print("imports (fresh interpreter each run)", flush=True)
    runs = max(3, settings.repeats * 2 - 1)
    measured = {name: measure(imports, runs) for name, imports in CASES.items()}
    base_times, base_rss, _ = measured["bare"]
    results.add("python_start_ms", [t * 1000 for t in base_times], "ms")
    for name in ("cli", "daemon"):
        times, rss, heavy = measured[name]
        if heavy:
            raise BenchError(f"importing gatewayd.{name} loads {heavy}: they must stay lazy")
        results.add(f"import_{name}_ms", [t * 1000 for t in times], "ms")
        results.add(f"import_{name}_extra_rss_mb",
                    [r - b for r, b in zip(rss, base_rss, strict=True)], "MB")
