"""Is the machine quiet enough to trust a run? (bench/README.md, "Stable numbers")

Two independent witnesses, both cheap:

* **Other processes' CPU.** Once a second, the machine's busy time (``/proc/stat``) minus
  the CPU time of the bench's own process tree (the bench, the world it started, the
  stacks under test; reaped children are in their parent's ``cutime``/``cstime``) is
  what the rest of the machine used. Steal time (a hypervisor giving our vCPU to someone
  else) is counted apart.
* **A calibration loop** timed before and after: a fixed piece of pure-Python work whose
  run-to-run spread on a quiet core is a few percent.
* **The host's speed through the run**: five times a second, the thread's CPU time for a
  small piece of the same work (best of three, about 1 ms in all: 0.3-0.6 % of a core).
  This machine's host runs a vCPU at one of two speeds, about 1.6 apart, switching
  within seconds (bench/README.md, "The host's two speeds"): ``window()`` gives the
  median for a phase or a single run (of a few seconds), so that two stacks measured one
  after the other can be compared. It measures the vCPU the monitor's thread is on.

``summary()`` gives ``noise_*`` figures for the results, and a list of reasons to
distrust the run (empty when it looks clean).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path

from bench.harness import CLK_TCK, proc_tree

OTHER_CORES_LIMIT = 0.3    # mean cores used by others over the run
OTHER_PEAK_LIMIT = 1.0     # one second in which others used a whole core
STEAL_LIMIT = 0.05         # share of the machine's time stolen
CALIBRATION_CV_LIMIT = 0.15
SAMPLE_PERIOD = 1.0        # seconds between the machine's CPU figures
PROBES_PER_SAMPLE = 5      # host probes in each period: a flood run lasts a few seconds


def _machine() -> tuple[int, int, int]:
    """(busy, steal, total) jiffies summed over all CPUs."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq
    return busy, steal, busy + idle + iowait + steal


def _ours(root: int) -> int:
    """Jiffies used by ``root``'s process tree, reaped children included."""
    total = 0
    for pid in proc_tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total


def _work(iterations: int) -> int:
    """The fixed pure-Python work both witnesses time."""
    acc = 0
    for i in range(iterations):
        acc += i * i % 7
    return acc


def calibrate(rounds: int = 15) -> list[float]:
    """Seconds per round of a fixed CPU-bound loop (~10 ms each on this machine)."""
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        _work(150_000)
        out.append(time.perf_counter() - start)
    return out


def probe(rounds: int = 3, iterations: int = 5_000) -> float:
    """CPU µs for 1/30 of a calibration round, best of ``rounds``: the host's speed now.
    Thread CPU time, so that waiting for the interpreter lock or a core is not counted;
    a pause between rounds lets the bench's other threads run."""
    best = float("inf")
    for _ in range(rounds):
        start = time.thread_time()
        _work(iterations)
        best = min(best, time.thread_time() - start)
        time.sleep(0)
    return best * 1e6


class NoiseMonitor:
    """Samples the machine once a second, and the host's speed five times a second, on a
    thread until ``stop()``."""

    def __init__(self) -> None:
        self.root = os.getpid()
        self.samples: list[tuple[float, float, float]] = []  # (t, other cores, steal share)
        self.probes: list[tuple[float, float]] = []  # (t, the host's speed as probe()'s µs)
        self.calibration = calibrate()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="noise")
        self._thread.start()

    def _run(self) -> None:
        busy, steal, total = _machine()
        ours, at = _ours(self.root), time.monotonic()
        tick = 0
        while not self._stop.wait(SAMPLE_PERIOD / PROBES_PER_SAMPLE):
            self.probes.append((time.monotonic(), probe()))
            tick += 1
            if tick % PROBES_PER_SAMPLE:
                continue
            busy2, steal2, total2 = _machine()
            ours2, at2 = _ours(self.root), time.monotonic()
            elapsed = at2 - at
            other = max(0, (busy2 - busy) - (ours2 - ours)) / CLK_TCK / elapsed
            steal_share = (steal2 - steal) / max(1, total2 - total)
            self.samples.append((at2, other, steal_share))
            busy, steal, total, ours, at = busy2, steal2, total2, ours2, at2

    def window(self, start: float, end: float) -> dict[str, float]:
        """Mean cores used by others, the steal share and the host's median speed
        (``probe()``'s µs: lower is faster) between two monotonic times."""
        # a machine sample covers the period before it; a probe is a moment
        inside = [s for s in self.samples if start <= s[0] <= end + SAMPLE_PERIOD]
        probes = [p for t, p in self.probes if start <= t <= end]
        return {"other_cores": statistics.fmean(s[1] for s in inside) if inside else 0.0,
                "steal": statistics.fmean(s[2] for s in inside) if inside else 0.0,
                "host_probe_us": statistics.median(probes) if probes else 0.0}

    def stop(self) -> tuple[dict[str, float], list[str]]:
        """The run's noise figures and the reasons to distrust it."""
        self._stop.set()
        self._thread.join(5)
        after = calibrate()
        both = self.calibration + after
        cv = statistics.pstdev(both) / statistics.fmean(both)
        drift = statistics.median(after) / statistics.median(self.calibration)
        others = [s[1] for s in self.samples] or [0.0]
        steal = statistics.fmean(s[2] for s in self.samples) if self.samples else 0.0
        speeds = sorted(p for _, p in self.probes) or [0.0]
        figures = {
            # the host's speed over the run: a spread near 1.6 is its two speeds
            "noise_host_probe_us_p10": round(speeds[int(0.1 * (len(speeds) - 1))], 1),
            "noise_host_probe_us_p90": round(speeds[int(0.9 * (len(speeds) - 1))], 1),
            "noise_other_cores_mean": round(statistics.fmean(others), 3),
            "noise_other_cores_p95": round(sorted(others)[int(0.95 * (len(others) - 1))], 3),
            "noise_other_cores_max": round(max(others), 3),
            "noise_steal_share": round(steal, 4),
            "noise_calibration_cv": round(cv, 4),
            "noise_calibration_drift": round(drift, 3),
            "loadavg_at_end": os.getloadavg()[0],
        }
        reasons = []
        if figures["noise_other_cores_mean"] > OTHER_CORES_LIMIT:
            reasons.append(f"other processes used {figures['noise_other_cores_mean']:.2f} "
                           f"cores on average (limit {OTHER_CORES_LIMIT})")
        if figures["noise_other_cores_max"] > OTHER_PEAK_LIMIT:
            reasons.append(f"other processes took up to {figures['noise_other_cores_max']:.2f}"
                           f" cores in one second (limit {OTHER_PEAK_LIMIT})")
        if steal > STEAL_LIMIT:
            reasons.append(f"{steal:.1%} of the CPU time was stolen by the hypervisor")
        if cv > CALIBRATION_CV_LIMIT or not 0.8 < drift < 1.25:
            reasons.append(f"the calibration loop varied by {cv:.0%} (drift x{drift:.2f})")
        figures["noisy"] = int(bool(reasons))
        return figures, reasons


def warn(reasons: list[str]) -> None:
    if not reasons:
        print("noise: the machine was quiet enough (bench/README.md, 'Stable numbers')",
              flush=True)
        return
    bar = "!" * 78
    print(f"\n{bar}\nWARNING: this machine was too noisy to trust this run's figures:",
          flush=True)
    for reason in reasons:
        print(f"  - {reason}", flush=True)
    print(f"Compare nothing across runs with this one; run again when the machine is quiet."
          f"\n{bar}\n", flush=True)
