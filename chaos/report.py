"""The one table, the verdict, and ``chaos/out/chaos.json``.

Columns: inputs tried; the pass/fail counts (5xx answers, crashes, corrupt files, state
changes after a refusal, lost latest values or devices, misanswers); healthcheck p99 and
max while the campaign ran (ms); the daemon's RSS growth over the campaign (MB); seconds.
The verdict is PASS when every count is 0 and no campaign was aborted; the latencies and
RSS are figures. The long form also checks the acceptance's amounts and its healthcheck
bound (p99 under 500 ms in every campaign), and says so.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from chaos.settings import Settings, http_inputs
from chaos.tally import FAIL_COUNTS, Tally

HEALTH_P99_MS = 500.0  # the acceptance's bound, "throughout"
COLUMNS = [("campaign", 12), ("inputs", 7), ("5xx", 4), ("crashes", 7), ("corrupt", 7),
           ("state", 5), ("lost", 4), ("misans", 6), ("hc p99", 7), ("hc max", 7),
           ("RSS +MB", 7), ("s", 5)]


def _ms(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.0f}"


def _row(cells: list[str]) -> str:
    return "  ".join(cell.rjust(width) if i else cell.ljust(width)
                     for i, (cell, (_, width)) in enumerate(zip(cells, COLUMNS, strict=True)))


def table(tallies: list[Tally]) -> str:
    lines = [_row([name for name, _ in COLUMNS]), _row(["-" * w for _, w in COLUMNS])]
    for t in tallies:
        data = t.to_json()
        name = t.campaign + ("*" if not t.complete else "") + ("!" if t.aborted else "")
        lines.append(_row([name, str(t.inputs), *(str(getattr(t, c)) for c in FAIL_COUNTS),
                           _ms(data["healthcheck_p99_ms"]), _ms(data["healthcheck_max_ms"]),
                           "-" if data["rss_growth_mb"] is None else f"{data['rss_growth_mb']:.1f}",
                           f"{t.seconds:.0f}"]))
    p99 = [v for v in (t.to_json()["healthcheck_p99_ms"] for t in tallies) if v is not None]
    peak = [v for v in (t.to_json()["healthcheck_max_ms"] for t in tallies) if v is not None]
    lines.append(_row(["-" * w for _, w in COLUMNS]))
    lines.append(_row(["total", str(sum(t.inputs for t in tallies)),
                       *(str(sum(getattr(t, c) for t in tallies)) for c in FAIL_COUNTS),
                       _ms(max(p99) if p99 else None), _ms(max(peak) if peak else None), "",
                       f"{sum(t.seconds for t in tallies):.0f}"]))
    return "\n".join(lines)


def acceptance(tallies: list[Tally], settings: Settings) -> list[str]:
    """The long form's acceptance, line by line ("ok" or "NOT MET ...")."""
    by_name = {t.campaign: t for t in tallies}

    def amount(campaign: str, want: int, what: str, count: Any = None) -> str:
        tally = by_name.get(campaign)
        got = (count(tally) if count else tally.inputs) if tally else 0
        mark = "ok" if got >= want else "NOT MET"
        return f"{mark:7s} {what}: {got} (want {want})"

    lines = [
        amount("http_fuzz", http_inputs(settings), "fuzzed HTTP inputs"),
        amount("kill9", settings.kill_cycles, "kill -9 cycles"),
        amount("broker_kill", settings.broker_kills, "broker kills"),
        amount("mqtt_flood", settings.mqtt_flood, "bad MQTT messages in the flood",
               lambda t: t.figures.get("flood", 0) if t.complete else 0),
    ]
    for t in tallies:
        p99 = t.to_json()["healthcheck_p99_ms"]
        if p99 is not None:
            mark = "ok" if p99 < HEALTH_P99_MS else "NOT MET"
            lines.append(f"{mark:7s} healthcheck p99 during {t.campaign}: {p99:.0f} ms "
                         f"(want < {HEALTH_P99_MS:.0f})")
    return lines


def render(tallies: list[Tally], settings: Settings, seed: int, command: str) -> str:
    passed = all(t.passed() for t in tallies)
    out = [f"chaos ({settings.form} form, seed {seed}): {command}", "", table(tallies), ""]
    if any(not t.complete for t in tallies):
        out.append("* stopped by its time bound before trying all its inputs")
    for t in tallies:
        if t.aborted:
            out.append(f"! {t.campaign} aborted: {t.aborted.strip().splitlines()[-1]}")
    for t in tallies:
        for problem in t.problems[:10]:
            out.append(f"{t.campaign}: {problem}")
        if len(t.problems) > 10:
            out.append(f"{t.campaign}: ... {len(t.problems) - 10} more in chaos.json")
    if settings.form == "long":
        out += ["", "acceptance:", *("  " + line for line in acceptance(tallies, settings))]
    out += ["", "PASS" if passed else "FAIL"]
    return "\n".join(out)


def write(path: Path, tallies: list[Tally], settings: Settings, seed: int, command: str,
          machine: dict[str, Any], seconds: float, *, finished: bool = True) -> None:
    """``finished`` False: written after a campaign, more to come (or the run was cut)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"form": settings.form, "seed": seed, "command": command, "finished": finished,
            "passed": all(t.passed() for t in tallies), "seconds": round(seconds, 1),
            "machine": machine, "campaigns": [t.to_json() for t in tallies]}
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
