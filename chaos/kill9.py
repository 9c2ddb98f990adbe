"""kill -9 at random moments: pairing, Zigbee joins, report streams, resets, start-up.

Two hubs, one after the other: a minimal one (60 % of the cycles: pairing, resets,
start-up; it restarts in a second or two) and one with the virtual Zigbee radio (joins,
report streams, resets, start-up). A cycle picks what the hub is doing (pairing when it is
unpaired, else one of its hub's scenarios), starts it, and sends SIGKILL after a seeded
random delay within the time that operation takes. Then:

1. the state directory is audited as the crash left it (a temp file may lie there);
2. gatewayd starts again on the same files, in the same world;
3. it must come back as its state file says: online if it is paired, pairable (unpaired,
   hotspot up) if it is not, within 60 s; otherwise that counts as a crash;
4. every Zigbee device that was ready before the kill must be ready again (else ``lost``);
5. the state directory is audited again, now also for temp files nobody cleaned up.
"""

from __future__ import annotations

import collections
import random
import statistics
import time
import urllib.parse
from pathlib import Path
from typing import Any

from bench.harness import BenchWorld
from chaos.audit import audit, paired
from chaos.settings import Settings
from chaos.tally import Tally
from chaos.world import Hub, HubDied, exchange, request

# How long after the start of each operation the kill may come (s): a little longer than
# the operation takes on the development machine, so some kills land after it is done.
WINDOWS = {"pair": 1.0, "join": 0.8, "stream": 1.5, "reset": 0.6, "boot": 4.0}
MINIMAL_SCENARIOS = ["reset", "boot"]  # when paired; unpaired, every cycle pairs
ZIGBEE_SCENARIOS = ["join", "join", "join", "stream", "stream", "reset", "boot"]
ZIGBEE_SHARE = 0.4  # of the cycles, on the Zigbee hub
MAX_PLUGS = 12
RESUME_SECONDS = 60.0


def _ready(status: dict[str, Any]) -> set[str]:
    return {d["device_id"] for d in status.get("devices", [])
            if d.get("provider") == "zigbee" and d.get("state") == "ready"}


def _start_operation(hub: Hub, scenario: str, rng: random.Random) -> str:
    """Begin ``scenario``; returns what was done, for the report."""
    if scenario == "pair":
        query = urllib.parse.urlencode(hub.world.pair_params())
        answer = exchange(hub.port, request("GET", f"/pair?{query}"))
        if answer.status != 200:
            raise RuntimeError(f"/pair answered {answer.status}: {answer.body[:200]!r}")
        return "pair"
    if scenario == "join":
        hub.wait(lambda s: s["zigbee"]["up"], RESUME_SECONDS, "the Zigbee radio")
        hub.api("POST", "zigbee/permit-join", {"seconds": 60})
        hub.api("POST", "zigbee/sim", {"action": "join", "kind": "plug"})
        return "join"
    if scenario == "stream":
        hub.api("POST", "zigbee/sim", {"action": "stream", "count": 600, "rate": 300,
                                       "offset": rng.randrange(1, 20000), "modulo": 30000})
        return "stream"
    if scenario == "reset":
        full = rng.random() < 0.3
        hub.api("POST", "reset", {"full": full})
        return "reset --full" if full else "reset"
    raise ValueError(scenario)


def _resume(hub: Hub, tally: Tally, where: str, expect_paired: bool | None) -> float | None:
    """Start the hub again and wait until it is back as its state says; the seconds."""
    began = time.monotonic()
    try:
        hub.start()
        if expect_paired:
            hub.wait_online(RESUME_SECONDS)
        else:
            hub.wait_pairable(RESUME_SECONDS)
    except (HubDied, TimeoutError) as exc:
        state = "online" if expect_paired else "unpaired and pairable"
        tally.problem("crashes", f"{where}: did not come back {state}: {exc}\n"
                                 f"{hub.log_tail(10)}")
        if hub.alive():
            hub.kill9()
        return None
    return time.monotonic() - began


def _restore(hub: Hub, tally: Tally, where: str, expected: set[str]) -> None:
    def back(status: dict[str, Any]) -> bool:
        return expected <= _ready(status)
    try:
        hub.wait(back, RESUME_SECONDS, "the Zigbee devices to be ready again")
    except (TimeoutError, HubDied):
        missing = expected - _ready(hub.status()) if hub.alive() else expected
        for device in sorted(missing):
            tally.problem("lost", f"{where}: {device} was ready before the kill, not after")


def run(world: BenchWorld, settings: Settings, seed: int, out_dir: Path,
        tally: Tally) -> None:
    """Counts go to ``tally`` as they happen: a campaign that fails half-way keeps them."""
    """Two phases, one hub each (two hubs in one world would fight over its Wi-Fi): the
    minimal hub (pairing, resets, start-up) restarts in a second or two; the Zigbee hub
    (joins, report streams, resets, start-up) takes longer to come back."""
    deadline = time.monotonic() + settings.campaign_seconds
    rng = random.Random(f"{seed}-kill9")
    phase = Phase(tally, deadline)
    zigbee_cycles = round(settings.kill_cycles * ZIGBEE_SHARE)
    phase.run(Hub(world, "kill9", zigbee=False), rng, settings.kill_cycles - zigbee_cycles,
              MINIMAL_SCENARIOS)
    # Paired first: the minimal hub's cycles already kill pairings; these kill Zigbee work.
    phase.run(Hub(world, "kill9-zigbee", zigbee=True), rng, zigbee_cycles, ZIGBEE_SCENARIOS,
              pair_first=True)
    tally.figures.update({
        "scenarios": dict(sorted(phase.scenarios.items())),
        "killed_before_ready": phase.before_ready,
        "resume_s_median": round(statistics.median(phase.resumes), 2) if phase.resumes
        else None,
        "resume_s_max": round(max(phase.resumes), 2) if phase.resumes else None,
        "zigbee_devices_at_end": phase.devices_at_end,
        "log_errors": phase.log_errors,
    })


class Phase:
    """The cycles of one hub; counts go to the campaign's tally."""

    def __init__(self, tally: Tally, deadline: float) -> None:
        self.tally = tally
        self.deadline = deadline
        self.scenarios: collections.Counter[str] = collections.Counter()
        self.resumes: list[float] = []
        self.before_ready = 0
        self.devices_at_end = 0
        self.log_errors = 0
        self.cycle = 0

    def run(self, hub: Hub, rng: random.Random, cycles: int, paired_scenarios: list[str], *,
            pair_first: bool = False) -> None:
        tally = self.tally
        hub.start()
        hub.wait_pairable()
        if pair_first:
            hub.pair()
        for _ in range(cycles):
            if time.monotonic() > self.deadline:
                tally.complete = False
                break
            if not self._cycle(hub, rng, paired_scenarios):
                break
        status = hub.status() if hub.alive() else {}
        self.devices_at_end = max(self.devices_at_end, len(_ready(status)))
        self.log_errors += len(hub.log_errors())
        code = hub.stop()
        if code != 0:
            tally.problem("crashes", f"{hub.name}: the last clean stop ended with {code}")
        for problem in audit(hub.state_dir):
            tally.problem("corrupt", f"{hub.name} after the campaign: {problem}")

    def _cycle(self, hub: Hub, rng: random.Random, paired_scenarios: list[str]) -> bool:
        """One kill and its audit; False if the hub cannot be brought back at all."""
        tally = self.tally
        n = self.cycle
        self.cycle += 1
        status = hub.status()
        ready = _ready(status)
        if not status["paired"]:
            scenario = "pair"
        else:
            scenario = rng.choice(paired_scenarios)
            if scenario == "join" and len(ready) >= MAX_PLUGS:
                scenario = "stream"
            if scenario == "stream" and not ready:
                scenario = "join"
        delay = rng.uniform(0, WINDOWS[scenario])
        where = f"cycle {n} ({hub.name}: {scenario}, kill after {delay * 1000:.0f} ms)"
        if scenario == "boot":
            hub.kill9()
            hub.start(wait=False)
            what = "boot"
        else:
            what = _start_operation(hub, scenario, rng)
        time.sleep(delay)  # the moment of the kill, drawn from the seeded generator
        if hub.daemon is not None and hub.daemon.ready_at is None:
            self.before_ready += 1
        ended = hub.kill9()
        tally.inputs += 1
        self.scenarios[what] += 1
        if ended is not None:
            tally.problem("crashes", f"{where}: gatewayd had exited with {ended} before the "
                                     f"kill\n{hub.log_tail(10)}")
        for problem in audit(hub.state_dir, temp_files=False):
            tally.problem("corrupt", f"{where}, right after the kill: {problem}")
        resumed = _resume(hub, tally, where, paired(hub.state_dir))
        if resumed is None:
            try:  # go on from whatever state it is in
                hub.start()
                hub.wait(lambda s: s["state"] in ("online", "unpaired"), RESUME_SECONDS,
                         "online or unpaired")
            except (HubDied, TimeoutError) as exc:
                tally.problem("crashes", f"{where}: gave up on {hub.name}: {exc}")
                return False
            return True
        self.resumes.append(resumed)
        if not what.startswith("reset"):
            _restore(hub, tally, where, ready)
        for problem in audit(hub.state_dir, database=False):
            tally.problem("corrupt", f"{where}, after the restart: {problem}")
        return True
