"""Start-up cost of the daemon's modules: import time and memory, median of N runs.

On a Pi Zero 2 W (512 MB) every import counts. Reported as medians and as a ratio to a
bare interpreter start, because this machine is shared and absolute times are noisy.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

RUNS = 9
PROBE = """
import resource, sys, time
t = time.perf_counter()
{imports}
elapsed = time.perf_counter() - t
heavy = sorted(m for m in ("zigpy", "bellows", "bleak", "dbus_fast", "segno")
               if m in sys.modules)
print({{"elapsed": elapsed, "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "heavy": heavy}})
"""

CASES = {
    "bare interpreter": "",
    "gatewayd.cli (--help path)": "import gatewayd.cli",
    "gatewayd.daemon (full core)": "import gatewayd.daemon",
}


def measure(imports: str) -> tuple[float, float, list[str]]:
    times, rss = [], []
    heavy: list[str] = []
    for _ in range(RUNS):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", PROBE.format(imports=imports)],
                             capture_output=True, text=True, check=True).stdout
        wall = time.perf_counter() - start
        data = eval(out)
        times.append(wall)
        rss.append(data["rss_kb"])
        heavy = data["heavy"]
    return statistics.median(times), statistics.median(rss), heavy


def main() -> None:
    results = {}
    for name, imports in CASES.items():
        results[name] = measure(imports)
    base_t, base_rss, _ = results["bare interpreter"]
    rows = []
    for name, (t, rss, heavy) in results.items():
        rows.append({"case": name, "median_s": round(t, 3), "ratio": round(t / base_t, 2),
                     "rss_mb": round(rss / 1024, 1), "extra_rss_mb": round((rss - base_rss)
                                                                           / 1024, 1),
                     "heavy_imported": heavy})
        print(f"{name:32s} {t * 1000:7.1f} ms  x{t / base_t:4.1f}  RSS {rss / 1024:5.1f} MB "
              f"(+{(rss - base_rss) / 1024:.1f})  heavy: {heavy or '-'}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
