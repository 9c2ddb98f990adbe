"""``bench/out/peers.png``: the side-by-side run at a glance (needs matplotlib, the
``[peers]`` extra). ``python -m bench.peers.plot bench/out/peers.json`` redraws it from
the JSON files a run left (``peers.json`` and ``peers-trace.json``).

Four panels: the latency CDFs at each offered load (the run with the median p99), RSS
over the whole run of each stack with its phases, and the ratios gwd / z2m of the
headline figures (left of 1: gatewayd needs less).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt  # after use(): the backend is chosen first
from matplotlib import ticker

COLORS = {"gwd": "#1f77b4", "z2m": "#d62728"}
TITLES = {"gwd": "gatewayd", "z2m": "Zigbee2MQTT"}
HIGHER_IS_BETTER = ("reports_per_s",)
HEADLINE = ("cpu_us_per_report", "reports_per_s", "latency_p99_ms_250", "latency_p99_ms_100",
            "set_roundtrip_p99_ms", "rss_idle_mb", "rss_after_flood_mb", "startup_all_ready_s")


def _sparse(x: float, _pos: int) -> str:
    """Minor ticks 0.2, 0.5, 2, 5, ... labelled: enough to read a value, no crowding."""
    mantissa = round(x / 10 ** math.floor(math.log10(x)))
    return f"{x:g}" if mantissa in (2, 5) else ""


def _plain_log_ticks(ax: Any) -> None:
    ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))  # 2, not 2x10^0
    ax.xaxis.set_minor_formatter(ticker.FuncFormatter(_sparse))


def _cdf(ax: Any, trace: dict[str, Any], figures: dict[str, Any], rate: str) -> None:
    for stack, runs in sorted(trace.get("latency", {}).items()):
        values = runs.get(rate)
        if not values:
            continue
        n = len(values)
        p99 = figures.get(f"{stack}_latency_p99_ms_{rate}")
        label = TITLES.get(stack, stack) + (f" (p99 {p99:.3g} ms)" if p99 else "")
        ax.plot([max(v, 0.1) for v in values], [(i + 1) / n for i in range(n)],
                color=COLORS.get(stack), label=label)
    ax.set_xscale("log")
    _plain_log_ticks(ax)
    ax.set_xlabel("latency, due at the radio to the subscriber (ms, log)")
    ax.set_ylabel("share of reports")
    ax.set_ylim(0, 1.01)
    ax.axhline(0.99, color="grey", linewidth=0.5, linestyle=":")
    ax.set_title(f"Latency at {rate} reports/s")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")


def _rss(ax: Any, trace: dict[str, Any]) -> None:
    for stack, samples in sorted(trace.get("timeline", {}).items()):
        if not samples:
            continue
        ax.plot([s[0] for s in samples], [s[1] for s in samples], color=COLORS.get(stack),
                label=TITLES.get(stack, stack))
        previous = None
        for t, rss, _cpu, phase in samples:
            if phase != previous:
                ax.annotate(phase, (t, rss), fontsize=6, color=COLORS.get(stack),
                            rotation=60, xytext=(0, 6), textcoords="offset points")
                previous = phase
    ax.set_xlabel("seconds since the stack was first started")
    ax.set_ylabel("RSS (MB)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Memory over the run ({trace.get('devices', '?')} plugs)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")


def _ratios(ax: Any, figures: dict[str, Any]) -> None:
    names, values = [], []
    for key in HEADLINE:
        match = next((k for k in figures if k.startswith(f"ratio_{key}")), None)
        if match is not None:
            names.append(match[len("ratio_"):])
            values.append(figures[match])
    better = [(v >= 1) if n.startswith(HIGHER_IS_BETTER) else (v <= 1)
              for n, v in zip(names, values, strict=True)]
    ax.barh(names, values, color=["#2ca02c" if b else "#ff7f0e" for b in better])
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    _plain_log_ticks(ax)
    ax.invert_yaxis()
    for i, v in enumerate(values):
        ax.annotate(f"x{v:.2f}", (v, i), fontsize=8, va="center", xytext=(3, 0),
                    textcoords="offset points")
    ax.set_title("gatewayd / Zigbee2MQTT, medians (green: gatewayd better)")
    ax.grid(True, axis="x", which="both", alpha=0.3)


def plot(figures: dict[str, Any], trace: dict[str, Any], out: Path) -> None:
    rates = sorted({r for runs in trace.get("latency", {}).values() for r in runs},
                   key=float)
    fig, axes = plt.subplots(2, 2, figsize=(14, 9.5))
    for ax, rate in zip(axes[0], rates[:2], strict=False):
        _cdf(ax, trace, figures, rate)
    _rss(axes[1][0], trace)
    _ratios(axes[1][1], figures)
    machine = figures.get("machine", {})
    noisy = " - NOISY MACHINE, see the warning" if figures.get("noisy") else ""
    fig.suptitle(f"gatewayd vs Zigbee2MQTT on the same EZSP emulator, "
                 f"{trace.get('devices', '?')} plugs\n{machine.get('date', '')}, commit "
                 f"{machine.get('commit', '?')}; other processes used "
                 f"{figures.get('noise_other_cores_mean', 0):.2f} of "
                 f"{machine.get('cores', '?')} cores{noisy}")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bench.peers.plot bench/out/peers.json", file=sys.stderr)
        return 2
    figures_file = Path(argv[0])
    trace_file = figures_file.with_name(figures_file.stem + "-trace.json")
    out = figures_file.with_suffix(".png")
    plot(json.loads(figures_file.read_text()), json.loads(trace_file.read_text()), out)
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
