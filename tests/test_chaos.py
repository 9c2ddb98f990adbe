"""The chaos suite (docs/chaos.md): its short form in CI, and its own parts.

The short form runs every campaign against the simulated world, smaller than ``make
chaos``; every pass/fail count must be 0. Its budget is the issue's, at most 3 minutes
(docs/chaos.md gives the measured times); like every speed it is measured, not asserted:
the timeout here only stops a run that hangs. Latencies and memory are figures too.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from werkzeug.wrappers import Request

from chaos import http_inputs, mqtt_inputs
from chaos.audit import audit, differences, snapshot
from chaos.tally import FAIL_COUNTS
from gatewayd.config import CloudConfig
from gatewayd.onboarding.pairing import InvalidRequest, request_from_fields
from gatewayd.portal.api import json_fields
from gatewayd.portal.pair import query_fields
from gatewayd.state import StateStore
from tests.helpers import REPO

CAMPAIGNS = {"http_fuzz", "kill9", "broker_kill", "mqtt_flood", "ble_burst"}
HANG_S = 600  # several times the budget: a hung run, not a slow one


@pytest.mark.slow
@pytest.mark.timeout(HANG_S + 60)
def test_the_short_form_finds_nothing_wrong(tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    # No --workdir: the suite's own /tmp directory keeps the sockets' paths short enough for
    # AF_UNIX; what went wrong is in chaos.json (problems, log tails).
    run = subprocess.run([sys.executable, "-m", "chaos", "--short", "--seed", "1", "--out",
                          str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=HANG_S)
    assert out.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads(out.read_text())
    campaigns = {c["campaign"]: c for c in results["campaigns"]}
    assert set(campaigns) == CAMPAIGNS
    for name, campaign in campaigns.items():
        assert campaign["aborted"] is None, (name, campaign["aborted"])
        assert campaign["complete"] and campaign["inputs"] > 0, (name, campaign)
        counts = {count: campaign[count] for count in FAIL_COUNTS}
        assert not any(counts.values()), (name, counts, campaign["problems"])
    assert results["passed"] and run.returncode == 0, run.stdout[-3000:]
    assert "PASS" in run.stdout and "http_fuzz" in run.stdout  # the table


# ---- its parts -------------------------------------------------------------------------------

VALID = {"ssid": "HomeNet", "psk": "supersecret", "wsp": "a@example.com", "token": "t-1",
         "host": "127.0.0.1", "brport": "1883"}


def test_the_same_seed_makes_the_same_inputs() -> None:
    def inputs(seed: int) -> list[bytes]:
        rng = random.Random(seed)
        made = [http_inputs.pair_query(rng, VALID, 80).data for _ in range(200)]
        made += [http_inputs.json_body(rng, VALID, 80).data for _ in range(200)]
        made += [http_inputs.raw_request(rng, 80).data for _ in range(200)]
        targets = mqtt_inputs.Targets("hub", ("zigbee-0011223344556677",))
        made += [mqtt_inputs.make(rng, targets).payload for _ in range(200)]
        return made

    assert inputs(7) == inputs(7)
    assert inputs(7) != inputs(8)


@pytest.mark.parametrize("strict", [False, True])
def test_the_generators_make_bytes_from_anything_they_made_before(strict: bool) -> None:
    # Mutations stack (a second one works on what the first made: surrogate escapes,
    # bytes); none may fail half-way through a long run.
    for seed in range(6):
        rng = random.Random(seed)
        for _ in range(3000):
            assert http_inputs.pair_query(rng, VALID, 80, strict=strict).data
        for _ in range(1000):
            assert http_inputs.json_body(rng, VALID, 80, strict=strict).data


def _refused(fields: Callable[[], Mapping[str, object]]) -> bool:
    try:
        request_from_fields(fields(), CloudConfig())
    except InvalidRequest:
        return True
    return False


def test_strict_inputs_are_all_refused_by_the_field_rules() -> None:
    # What the portal does with them, short of the web server: once a run has had its
    # attempts, no input may start another (each costs seconds; some 30).
    for seed in range(3):
        rng = random.Random(seed)
        for _ in range(2000):
            item = http_inputs.pair_query(rng, VALID, 80, strict=True)
            target = item.data.split(b" ", 2)[1]
            args = Request({"REQUEST_METHOD": "GET", "SERVER_NAME": "hub", "SERVER_PORT": "80",
                            "wsgi.url_scheme": "http",
                            "QUERY_STRING": target.partition(b"?")[2].decode("latin-1")}).args
            assert _refused(lambda a=args: query_fields(a)), item.label
            assert not item.label.startswith(("valid", "other-valid"))
            item = http_inputs.json_body(rng, VALID, 80, strict=True)
            body = item.data.partition(b"\r\n\r\n")[2]
            assert _refused(lambda b=body: json_fields(b)), item.label


def test_the_audit_finds_what_a_crash_may_leave(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    store = StateStore(state_dir)
    store.open(device_id="dc-a6-32-12-34-56", mac="dc:a6:32:12:34:56")
    assert audit(state_dir) == []
    before = snapshot(state_dir)

    state_file = state_dir / "state.json"
    good = state_file.read_bytes()
    state_file.write_bytes(good[: len(good) // 2])
    assert any("corrupt" in p for p in audit(state_dir))
    assert differences(before, snapshot(state_dir)) == ["state.json"]

    data = json.loads(good)
    data["paired_at"] = 1.0  # paired_at without an account: half paired
    state_file.write_bytes(json.dumps(data).encode())
    assert any("half paired" in p for p in audit(state_dir))

    state_file.write_bytes(good)
    os.chmod(state_file, 0o644)
    assert any("0644" in p for p in audit(state_dir))
    os.chmod(state_file, 0o600)

    # A write whose process is gone was left behind; one of a running process is under way.
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    left = state_dir / f".state.json.{gone}.tmp"
    left.write_bytes(b"{")
    assert audit(state_dir, temp_files=False) == []
    assert any("temp file" in p for p in audit(state_dir))
    left.rename(state_dir / f".state.json.{os.getpid()}.tmp")
    assert audit(state_dir) == []
    (state_dir / f".state.json.{os.getpid()}.tmp").unlink()

    db = state_dir / "zigbee.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (x)")
    conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(2000)])
    conn.commit()
    conn.close()
    os.chmod(db, 0o600)
    assert audit(state_dir) == []
    raw = bytearray(db.read_bytes())
    raw[4096:8192] = b"\xff" * 4096  # a torn page
    db.write_bytes(bytes(raw))
    assert any("zigbee.db" in p for p in audit(state_dir))
    assert audit(state_dir, database=False) == []
