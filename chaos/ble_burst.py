"""BLE wrong-code bursts against the secure service, with the reference phone client.

The phone is :func:`gatewayd.ble.phone.pair_secure` (bleak, as ``gatewayctl ble-pair``)
on the simulated world's second adapter (BlueZoo), the hub an unpaired ``gatewayd`` with
BLE on. Handshakes with seeded wrong setup codes follow one another as fast as the phone
can make them. The first ``[ble] max_failures`` must be answered ``wrong-setup-code``, the
rest ``locked``, and then the right code too must be refused as ``locked`` (else
``misanswers``). Nothing else may change: the state directory keeps its bytes, and pairing
over HTTP stays open (else ``state_changes``). Then the button (a new commissioning window)
lifts the lockout, and the right code pairs the hub.
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path
from typing import Any

from bench.harness import BenchWorld
from chaos.audit import audit, differences, snapshot
from chaos.settings import Settings
from chaos.tally import Tally, ensure_alive, stop_cleanly
from chaos.watch import HealthWatch, RssSampler
from chaos.world import Hub, HubDied
from gatewayd.ble import phone  # bleak itself only when a phone scans

PHONE_ADAPTER = "hci1"  # sim.json ble.phone_adapter


def _attempt(name: str, code: str, fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """One pairing through the secure service: ("ok", outcome) or (error code, details)."""
    try:
        outcome = asyncio.run(phone.pair_secure(adapter=PHONE_ADAPTER, name=name,
                                                setup_code=code, fields=fields,
                                                scan_timeout=20, timeout=60))
    except phone.BlePairError as exc:
        return exc.code, {"message": exc.message, **exc.details}
    return "ok", outcome


def run(world: BenchWorld, settings: Settings, seed: int, out_dir: Path,
        tally: Tally) -> None:
    """Counts go to ``tally`` as they happen: a campaign that fails half-way keeps them."""
    rng = random.Random(f"{seed}-ble")
    assert world.sim.bus is not None
    # bleak finds BlueZ on the system bus: the simulated world's
    os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = world.sim.bus.address
    hub = Hub(world, "ble-burst", ble=True)
    hub.start()
    hub.wait_pairable()
    hub.wait(lambda s: s["ble"]["advertising"], 30, "BLE advertising")
    ble = hub.status()["ble"]
    name, max_failures = ble["name"], ble["secure"]["max_failures"]
    code = hub.api("GET", "setup-code")["setup_code"]
    fields = {k: str(v) for k, v in world.pair_params().items()}
    files = snapshot(hub.state_dir)
    watch = HealthWatch(hub.port, out_dir / "health-ble_burst.txt")
    rss = RssSampler(hub.pid)
    answers: list[str] = []
    try:
        for n in range(settings.ble_wrong):
            wrong = code
            while wrong == code:
                wrong = f"{rng.randrange(10 ** 8):08d}"
            got, details = _attempt(name, wrong, fields)
            tally.inputs += 1
            answers.append(got)
            want = "wrong-setup-code" if n < max_failures else "locked"
            _check(hub, tally, files, f"wrong code #{n} ({wrong})", got, want, details,
                   locked=n + 1 >= max_failures)
        got, details = _attempt(name, code, fields)
        tally.inputs += 1
        answers.append(f"right code: {got}")
        locked = settings.ble_wrong >= max_failures
        _check(hub, tally, files, "the right code after the burst", got,
               "locked" if locked else "ok", details, locked=locked)
        hub.api("POST", "button", {"press": "short"})  # a new window; failures forgiven
        hub.wait(lambda s: not s["ble"]["secure"]["locked"] and s["ble"]["advertising"], 30,
                 "the window to open again, unlocked")
        got, details = _attempt(name, code, fields)
        tally.inputs += 1
        answers.append(f"after the button: {got}")
        if got != "ok":
            tally.problem("misanswers", f"after the button the right code got {got}: "
                                        f"{details.get('message')}")
    except (HubDied, TimeoutError) as exc:
        tally.problem("crashes", f"during the BLE burst: {exc}\n{hub.log_tail(10)}")
    finally:
        tally.health = watch.stop()
        tally.rss_growth_mb, _, tally.rss_peak_mb = rss.stop()
    ensure_alive(hub, tally, "after the BLE burst")
    log_errors = stop_cleanly(hub, tally)
    for problem in audit(hub.state_dir):
        tally.problem("corrupt", f"after the BLE burst: {problem}")
    tally.figures.update({"max_failures": max_failures, "answers": answers,
                          "log_errors": log_errors})


def _check(hub: Hub, tally: Tally, files: dict[str, tuple[int, bytes]], where: str, got: str,
           want: str, details: dict[str, Any], *, locked: bool) -> None:
    if got != want:
        tally.problem("misanswers", f"{where}: got {got} ({details.get('message')}), want "
                                    f"{want}")
    status = hub.status()
    if status["ble"]["secure"]["locked"] != locked:
        tally.problem("misanswers", f"{where}: the secure service says locked="
                                    f"{status['ble']['secure']['locked']}, want {locked}")
    changed = differences(files, snapshot(hub.state_dir))
    if changed:
        tally.problem("state_changes", f"{where}: refused, but {', '.join(changed)} changed")
    if not (status["state"] == "unpaired" and status["onboarding"]["pairing_open"]):
        tally.problem("state_changes", f"{where}: the hub is now {status['state']} "
                                       f"(pairing open: {status['onboarding']['pairing_open']})")
