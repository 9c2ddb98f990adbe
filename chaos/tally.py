"""What one campaign counts: the figures of its row in the table.

The pass/fail counts are ``http_5xx``, ``crashes``, ``corrupt``, ``state_changes``,
``lost`` and ``misanswers``; every one of them must be 0. Latencies and memory are
figures to read, as in the benchmarks. Every counted failure also leaves a line in
``problems`` saying what was sent (with the input's number in the seeded sequence) so
that it can be reproduced with ``python -m chaos --only CAMPAIGN --seed N``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from chaos.watch import Latencies
from chaos.world import Hub, HubDied

FAIL_COUNTS = ("http_5xx", "crashes", "corrupt", "state_changes", "lost", "misanswers")
MAX_PROBLEMS = 40  # the first ones tell the story; the counts keep the rest


@dataclass
class Tally:
    campaign: str
    inputs: int = 0  # inputs tried: requests, connections, kills, messages, handshakes
    http_5xx: int = 0  # answers with a status of 500 or more
    crashes: int = 0  # the daemon died by itself, or did not come back after a restart
    corrupt: int = 0  # problems found by chaos.audit in the state directory
    state_changes: int = 0  # the state changed although the input was refused
    lost: int = 0  # latest values (or joined devices) missing after the dust settled
    misanswers: int = 0  # a refusal other than the documented one (wrong code, no error)
    health: Latencies | None = None
    rss_growth_mb: float = math.nan
    rss_peak_mb: float = math.nan
    seconds: float = 0.0
    complete: bool = True  # False: the time bound stopped it before its counts
    aborted: str | None = None  # the campaign itself failed (its traceback): not a pass
    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def problem(self, count: str, message: str) -> None:
        """Count a failure of kind ``count`` (one of FAIL_COUNTS) and say what it was."""
        assert count in FAIL_COUNTS, count
        setattr(self, count, getattr(self, count) + 1)
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(f"{count}: {message}")

    def failures(self) -> int:
        return sum(getattr(self, name) for name in FAIL_COUNTS)

    def passed(self) -> bool:
        return self.failures() == 0 and self.aborted is None

    def to_json(self) -> dict[str, Any]:
        health = self.health
        return {
            "campaign": self.campaign, "inputs": self.inputs,
            **{name: getattr(self, name) for name in FAIL_COUNTS},
            "healthcheck_p50_ms": _ms(health.p50()) if health else None,
            "healthcheck_p99_ms": _ms(health.p99()) if health else None,
            "healthcheck_max_ms": _ms(health.max()) if health else None,
            "healthcheck_samples": len(health.samples) if health else 0,
            "healthcheck_failed": health.failed if health else 0,
            "rss_growth_mb": _round(self.rss_growth_mb),
            "rss_peak_mb": _round(self.rss_peak_mb),
            "seconds": round(self.seconds, 1), "complete": self.complete,
            "aborted": self.aborted,
            "passed": self.passed(), "figures": self.figures, "problems": self.problems,
        }


def _ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds * 1000, 1)


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 2)


def ensure_alive(hub: Hub, tally: Tally, where: str) -> bool:
    """Count a crash if the hub's process has ended by itself, and start it again so the
    campaign goes on. True if it was alive."""
    if hub.alive():
        return True
    tally.problem("crashes", f"{where}: gatewayd exited with {hub.exit_code()}; log tail:\n"
                             f"{hub.log_tail(15)}")
    hub.stop()
    try:
        hub.start()
    except HubDied as exc:
        tally.problem("crashes", f"{where}: could not start it again: {exc}")
    return False


def stop_cleanly(hub: Hub, tally: Tally) -> int:
    """The campaign's end: SIGTERM, counted as a crash unless it exits 0. Returns the number
    of ERROR lines in the hub's log (the ``log_errors`` figure), read before the stop."""
    errors = len(hub.log_errors())
    code = hub.stop()
    if code != 0:
        tally.problem("crashes", f"a clean stop ended with {code}")
    return errors
