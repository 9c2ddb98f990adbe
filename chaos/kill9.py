"""kill -9 at random moments: pairing, Zigbee joins, report streams, resets, start-up,
provisioning.

Three hubs, one after the other: a minimal one (45 % of the cycles: pairing, resets,
start-up; it restarts in a second or two), one with the virtual Zigbee radio (35 %: joins,
report streams, resets, start-up) and one in provisioning token mode (20 %: its Wi-Fi
through ``/pair``, the platform's approval of its operation, revocation, reset, start-up).
A cycle picks what the hub is doing (pairing when it is unpaired, else one of its hub's
scenarios), starts it, and sends SIGKILL after a seeded random delay within the time that
operation takes. Then:

1. the state directory is audited as the crash left it (a temp file may lie there);
2. gatewayd starts again on the same files, in the same world;
3. it must come back as its state file says: online if it is paired, pairable (unpaired,
   hotspot up) if it is not, within 60 s; a provisioned hub without its account asks
   the platform about the operation it stored, or goes online if that was approved
   (docs/provisioning.md, "Power loss at any moment"); otherwise that counts as a crash;
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
from chaos.audit import audit, paired, stored
from chaos.settings import Settings
from chaos.tally import Tally
from chaos.world import Hub, HubDied, exchange, request
from gatewayd.simulator.provisioning_model import SIM_TOKEN

# How long after the start of each operation the kill may come (s): a little longer than
# the operation takes on the development machine, so some kills land after it is done.
WINDOWS = {"pair": 1.0, "join": 0.8, "stream": 1.5, "reset": 0.6, "boot": 4.0,
           "provisioning wifi": 1.5, "provisioning approve": 1.5,
           "provisioning reset": 0.6, "provisioning revoke": 1.0, "provisioning boot": 4.0}
PROVISIONED_SCENARIOS = ["reset", "revoke", "boot"]
MINIMAL_SCENARIOS = ["reset", "boot"]  # when paired; unpaired, every cycle pairs
ZIGBEE_SCENARIOS = ["join", "join", "join", "stream", "stream", "reset", "boot"]
ZIGBEE_SHARE = 0.35  # of the cycles, on the Zigbee hub
PROVISIONING_SHARE = 0.2  # on the provisioned hub (chaos.kill9_provisioning)
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
    """Three phases, one hub each (two hubs in one world would fight over its Wi-Fi): the
    minimal hub (pairing, resets, start-up) restarts in a second or two; the Zigbee hub
    (joins, report streams, resets, start-up) takes longer to come back; the provisioned
    hub (token mode: the platform issues its account) is killed around its operation.
    Counts go to ``tally`` as they happen: a campaign that fails half-way keeps them."""
    deadline = time.monotonic() + settings.campaign_seconds
    rng = random.Random(f"{seed}-kill9")
    phase = Phase(tally, deadline)
    zigbee_cycles = round(settings.kill_cycles * ZIGBEE_SHARE)
    provisioning_cycles = max(1, round(settings.kill_cycles * PROVISIONING_SHARE))
    phase.run(Hub(world, "kill9", zigbee=False), rng,
              settings.kill_cycles - zigbee_cycles - provisioning_cycles, MINIMAL_SCENARIOS)
    # Paired first: the minimal hub's cycles already kill pairings; these kill Zigbee work.
    phase.run(Hub(world, "kill9-zigbee", zigbee=True), rng, zigbee_cycles, ZIGBEE_SCENARIOS,
              pair_first=True)
    phase.run_provisioning(world, rng, provisioning_cycles)
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
        self._finish(hub)

    def _finish(self, hub: Hub) -> None:
        status = hub.status() if hub.alive() else {}
        self.devices_at_end = max(self.devices_at_end, len(_ready(status)))
        self.log_errors += len(hub.log_errors())
        code = hub.stop()
        if code != 0:
            self.tally.problem("crashes", f"{hub.name}: the last clean stop ended with {code}")
        for problem in audit(hub.state_dir):
            self.tally.problem("corrupt", f"{hub.name} after the campaign: {problem}")

    def _kill(self, hub: Hub, what: str, where: str) -> None:
        """The kill, counted, and the audit of what it left."""
        if hub.daemon is not None and hub.daemon.ready_at is None:
            self.before_ready += 1
        ended = hub.kill9()
        self.tally.inputs += 1
        self.scenarios[what] += 1
        if ended is not None:
            self.tally.problem("crashes", f"{where}: gatewayd had exited with {ended} before "
                                          f"the kill\n{hub.log_tail(10)}")
        for problem in audit(hub.state_dir, temp_files=False):
            self.tally.problem("corrupt", f"{where}, right after the kill: {problem}")

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
        self._kill(hub, what, where)
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

    # ---- the provisioned hub ------------------------------------------------------------------

    def run_provisioning(self, world: BenchWorld, rng: random.Random, cycles: int) -> None:
        """Token mode against the simulated platform: Wi-Fi through /pair, then the hub asks
        for its account and the campaign approves it; kills around all of it."""
        assert world.sim.provisioning is not None
        endpoint = world.sim.provisioning.endpoint()
        hub = Hub(world, "kill9-prov", provisioning={
            "mode": "token", "host": endpoint["host"], "port": endpoint["port"],
            "token": SIM_TOKEN, "retry_interval": 0.5})
        hub.start()
        hub.wait_pairable()
        for _ in range(cycles):
            if time.monotonic() > self.deadline:
                self.tally.complete = False
                break
            if not self._provisioning_cycle(hub, world, rng):
                break
        self._finish(hub)

    def _provisioning_cycle(self, hub: Hub, world: BenchWorld, rng: random.Random) -> bool:
        platform = world.sim.provisioning
        assert platform is not None
        n = self.cycle
        self.cycle += 1
        status = hub.status()
        if status["wifi"] is not None and status["state"] != "online":
            # asking the platform: wait for the operation (or the account, if approved)
            status = hub.wait(lambda s: (s["state"] == "online"
                                         or s["provisioning"]["verification_code"]) and s,
                              RESUME_SECONDS, "a provisioning operation")
        if status["state"] == "online":
            scenario = rng.choice(PROVISIONED_SCENARIOS)
        elif status["wifi"] is None:
            scenario = "wifi"
        else:
            scenario = "approve"
        delay = rng.uniform(0, WINDOWS[f"provisioning {scenario}"])
        where = f"cycle {n} ({hub.name}: {scenario}, kill after {delay * 1000:.0f} ms)"
        if scenario == "wifi":
            query = urllib.parse.urlencode({k: v for k, v in hub.world.pair_params().items()
                                            if k in ("ssid", "psk")})
            answer = exchange(hub.port, request("GET", f"/pair?{query}"))
            if answer.status != 200:
                raise RuntimeError(f"{where}: /pair answered {answer.status}: {answer.body!r}")
        elif scenario == "approve":
            try:
                platform.approve(status["provisioning"]["operation"])
            except ValueError:  # it expired or was replaced meanwhile: kill all the same
                scenario = "approve (gone)"
        elif scenario == "revoke":
            platform.revoke(status["device_id"])
        elif scenario == "reset":
            hub.api("POST", "reset", {"full": False})
        else:
            hub.kill9()
            hub.start(wait=False)
        time.sleep(delay)  # the moment of the kill, drawn from the seeded generator
        self._kill(hub, f"provisioning {scenario}", where)
        return self._provisioning_resume(hub, world, where, scenario)

    def _provisioning_resume(self, hub: Hub, world: BenchWorld, where: str,
                             scenario: str) -> bool:
        """Back as the state file says: online with its account; asking about the same
        operation (or online, if the platform approved it); pairable without Wi-Fi."""
        assert world.sim.provisioning is not None
        state = stored(hub.state_dir)
        operations = {op["id"]: op["state"]
                      for op in world.sim.provisioning.listing()["operations"]}
        began = time.monotonic()
        try:
            hub.start()
            if state is None or state.wifi is None:
                hub.wait_pairable(RESUME_SECONDS)
            elif state.cloud is not None and scenario != "revoke":
                hub.wait_online(RESUME_SECONDS)
            elif state.operation is not None and \
                    operations.get(state.operation.id) == "approved":
                hub.wait_online(RESUME_SECONDS)
            else:
                same = state.operation.id if state.operation is not None and \
                    operations.get(state.operation.id) == "pending" else None
                hub.wait(lambda s: s["state"] != "online" and s["provisioning"][
                    "verification_code"] and same in (None, s["provisioning"]["operation"]),
                    RESUME_SECONDS, "asking the platform (the same operation)")
        except (HubDied, TimeoutError) as exc:
            self.tally.problem("crashes", f"{where}: did not come back as its state says "
                                          f"({state!r:.200}): {exc}\n{hub.log_tail(10)}")
            return False
        self.resumes.append(time.monotonic() - began)
        for problem in audit(hub.state_dir, database=False):
            self.tally.problem("corrupt", f"{where}, after the restart: {problem}")
        return True
