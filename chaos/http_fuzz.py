"""HTTP fuzz: the portal of an unpaired hub against fuzzed, malformed and slow clients.

Inputs (:mod:`chaos.http_inputs`) go one at a time, each from the next of 200 loopback
addresses, mixed in a seeded order. After every refusal the state directory must be byte
for byte what it was. An input that happens to be a valid request starts an attempt: the
campaign waits for its outcome (a failed attempt must not change the state either), resets
a hub that paired, and goes on. Meanwhile slow clients trickle requests from a few other
addresses (more connections than one address may hold) and the healthcheck watcher measures
how an honest client fares.
"""

from __future__ import annotations

import collections
import random
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.harness import BenchWorld
from chaos import http_inputs
from chaos.audit import audit, differences, snapshot
from chaos.settings import Settings
from chaos.tally import Tally, ensure_alive, stop_cleanly
from chaos.watch import HealthWatch, RssSampler
from chaos.world import HOST, Hub, HubDied, exchange, source_address

TRICKLE_INTERVAL = 1.0  # seconds between two bytes (or lines) of a slow client
SLOW_PER_ADDRESS = 10  # connections a slow address tries to hold (the portal allows 8)


@dataclass
class SlowResult:
    mode: str
    refused: bool = False  # closed by the hub at once (over the per-address cap)
    closed_by_hub: bool = False
    held: float = 0.0  # seconds the connection stayed open


class SlowClients:
    """Connections that trickle requests (or nothing) until the hub closes them."""

    MODES = ("headers", "body", "idle", "bytes")

    def __init__(self, port: int, count: int, seconds: float, rng: random.Random) -> None:
        self.port = port
        self.until = time.monotonic() + seconds
        self.results: list[SlowResult] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        addresses = max(1, count // SLOW_PER_ADDRESS)
        self.threads = [
            threading.Thread(target=self._run, args=(f"127.0.0.{240 + i % addresses}",
                                                     rng.choice(self.MODES)),
                             name=f"slow-{i}", daemon=True)
            for i in range(count)]
        for thread in self.threads:
            thread.start()

    def _script(self, mode: str) -> list[bytes]:
        head = f"Host: {HOST}:{self.port}\r\n".encode()
        if mode == "headers":
            return [b"GET /healthcheck HTTP/1.1\r\n", head] + [
                b"X-Slow-%d: 1\r\n" % i for i in range(1000)]
        if mode == "body":
            start = (b"POST /api/v1/pair HTTP/1.1\r\n" + head +
                     b"Content-Type: application/json\r\nContent-Length: 10000\r\n\r\n{")
            return [start] + [b" "] * 10000
        if mode == "bytes":
            text = b"GET /pair?ssid=HomeNet HTTP/1.1\r\n" + head + b"\r\n"
            return [text[i:i + 1] for i in range(len(text))]
        return []

    def _run(self, source: str, mode: str) -> None:
        result = SlowResult(mode)
        opened = time.monotonic()
        try:
            sock = socket.create_connection((HOST, self.port), timeout=5,
                                            source_address=(source, 0))
        except OSError:
            result.refused = True
            self._record(result)
            return
        sock.settimeout(TRICKLE_INTERVAL)
        steps = iter(self._script(mode))
        try:
            while time.monotonic() < self.until and not self._stop.is_set():
                piece = next(steps, None)
                if piece is not None:
                    sock.sendall(piece)
                try:
                    if sock.recv(4096) == b"":
                        result.closed_by_hub = True
                        break
                    # an answer: the hub answered a request that was slow but complete
                except TimeoutError:
                    continue
        except OSError:
            result.closed_by_hub = True
        finally:
            sock.close()
        result.held = time.monotonic() - opened
        result.refused = result.closed_by_hub and result.held < 0.5
        self._record(result)

    def _record(self, result: SlowResult) -> None:
        with self._lock:
            self.results.append(result)

    def stop(self) -> list[SlowResult]:
        self._stop.set()
        for thread in self.threads:
            thread.join(TRICKLE_INTERVAL + 10)
        return self.results


def _schedule(settings: Settings, rng: random.Random) -> list[str]:
    kinds = (["pair"] * settings.pair_queries + ["json"] * settings.json_bodies
             + ["raw"] * settings.raw_requests)
    rng.shuffle(kinds)
    return kinds


def _settle_attempt(hub: Hub, tally: Tally, label: str, baseline: dict[str, tuple[int, bytes]]
                    ) -> dict[str, tuple[int, bytes]]:
    """An input was accepted: wait for the attempt's outcome, leave the hub pairable again.
    Returns the state to compare the next refusals with."""
    status = hub.wait(lambda s: s["state"] != "connecting" and s, 60,
                      "the fuzzed attempt to end")
    if status["state"] == "online":
        hub.reset()
    elif differences(baseline, snapshot(hub.state_dir)):
        tally.problem("state_changes", f"{label}: the attempt failed "
                      f"({(status['onboarding'].get('last_failure') or {}).get('code')}) "
                      "but the state changed")
    hub.wait_pairable(60)
    for problem in audit(hub.state_dir, database=False):
        tally.problem("corrupt", f"after the attempt of {label}: {problem}")
    return snapshot(hub.state_dir)


def run(world: BenchWorld, settings: Settings, seed: int, out_dir: Path,
        tally: Tally) -> None:
    """Counts go to ``tally`` as they happen: a campaign that fails half-way keeps them."""
    deadline = time.monotonic() + settings.campaign_seconds
    hub = Hub(world, "http-fuzz")
    hub.start()
    hub.wait_pairable()
    valid = {k: str(v) for k, v in world.pair_params().items()}
    makers = {"pair": random.Random(f"{seed}-pair"), "json": random.Random(f"{seed}-json"),
              "raw": random.Random(f"{seed}-raw")}
    kinds = _schedule(settings, random.Random(f"{seed}-order"))
    statuses: collections.Counter[str] = collections.Counter()
    accepted = 0
    watch = HealthWatch(hub.port, out_dir / "health-http_fuzz.txt")
    rss = RssSampler(hub.pid)
    slow = SlowClients(hub.port, settings.slow_clients, settings.slow_seconds,
                       random.Random(f"{seed}-slow"))
    baseline = snapshot(hub.state_dir)
    try:
        for n, kind in enumerate(kinds):
            if time.monotonic() > deadline:
                tally.complete = False
                break
            rng = makers[kind]
            strict = accepted >= settings.accepted_attempts
            if kind == "pair":
                item = http_inputs.pair_query(rng, valid, hub.port, strict=strict)
            elif kind == "json":
                item = http_inputs.json_body(rng, valid, hub.port, strict=strict)
            else:
                item = http_inputs.raw_request(rng, hub.port)
            answer = exchange(hub.port, item.data, source=source_address(n), timeout=15,
                              half_close=True)
            tally.inputs += 1
            where = f"input #{n} ({kind}: {item.label})"
            key = (str(answer.status) if answer.status else
                   "timeout" if answer.timed_out else "closed")
            statuses[f"{kind} {key}"] += 1
            for status in answer.statuses:
                if status >= 500 and status not in item.allowed:
                    tally.problem("http_5xx", f"{where}: {status} "
                                              f"{answer.body[:160]!r}")
            if not ensure_alive(hub, tally, where):
                hub.wait_pairable()
                baseline = snapshot(hub.state_dir)
                continue
            if kind in ("pair", "json") and answer.status == 200:
                accepted += 1
                try:
                    baseline = _settle_attempt(hub, tally, where, baseline)
                except (TimeoutError, HubDied) as exc:
                    tally.problem("crashes", f"{where}: no way back to pairable: {exc}")
                    ensure_alive(hub, tally, where)
                    baseline = snapshot(hub.state_dir)
                continue
            changed = differences(baseline, snapshot(hub.state_dir))
            if changed:
                tally.problem("state_changes", f"{where}: refused ({answer.status}) but "
                                               f"{', '.join(changed)} changed")
                baseline = snapshot(hub.state_dir)
    finally:
        results = slow.stop()
        tally.health = watch.stop()
        tally.rss_growth_mb, _, tally.rss_peak_mb = rss.stop()
    tally.inputs += len(results)
    _finish(hub, tally, statuses, results, accepted)


def _finish(hub: Hub, tally: Tally, statuses: collections.Counter[str],
            slow: list[SlowResult], accepted: int) -> None:
    ensure_alive(hub, tally, "after the fuzz")
    log_errors = stop_cleanly(hub, tally)
    for problem in audit(hub.state_dir):
        tally.problem("corrupt", f"after the fuzz: {problem}")
    tally.figures.update({
        "answers": dict(sorted(statuses.items())),
        "accepted_attempts": accepted,
        "slow_connections": len(slow),
        "slow_refused_at_once": sum(r.refused for r in slow),
        "slow_closed_by_hub": sum(r.closed_by_hub and not r.refused for r in slow),
        "slow_longest_held_s": round(max((r.held for r in slow), default=0.0), 1),
        "log_errors": log_errors,
    })
