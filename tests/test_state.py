from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from gatewayd.credentials import CloudCredentials, WifiCredentials
from gatewayd.owed import OwedClearing, Release
from gatewayd.runtime import atomicfile
from gatewayd.state import (
    Operation,
    Registration,
    StateBusy,
    StateError,
    StateStore,
    parse_state,
)
from tests.helpers import Gatewayd, ctl, ctl_json, ethernet_config, write_config

CLOUD = CloudCredentials(wsp="user@example.com", token="t0k-secret", host="127.0.0.1", port=1883)
WIFI = WifiCredentials(ssid="HomeNet", psk="supersecret")
# What every refusal of a damaged file ends with: what a reset would do.
ADVICE = ("('gatewayctl reset' moves it aside to state.json.corrupt-<time> and starts over, "
          "unpaired, keeping the setup code, device key and identity if still valid)")


def test_first_open_creates_private_state(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    state = store.open(device_id="dc-a6-32-00-00-01", mac="dc:a6:32:00:00:01")
    assert len(state.setup_code) == 8 and state.setup_code.isdigit()
    assert len(state.device_key) == 32
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    again = StateStore(tmp_path).open(device_id="other", mac="00:00:00:00:00:02")
    assert again == state, "identity and setup code are generated once and kept"


def test_vendor_preset_setup_code(tmp_path: Path) -> None:
    assert StateStore(tmp_path, "12345678").open().setup_code == "12345678"


def test_commit_and_reset_keep_identity(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    first = store.open(device_id="hub-1", mac="dc:a6:32:00:00:01")
    store.commit_pairing(WIFI, CLOUD)
    loaded = StateStore(tmp_path).open()
    assert loaded.cloud == CLOUD and loaded.wifi == WIFI and loaded.paired
    reset = store.reset()
    assert not reset.paired and reset.wifi is None
    assert (reset.setup_code, reset.device_id, reset.device_key) == (
        first.setup_code, first.device_id, first.device_key)


def test_wifi_first_then_cloud_keeps_both_and_reset_forgets_both(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.open(device_id="hub-1", mac="dc:a6:32:00:00:01")
    joined = store.commit_wifi(WIFI)
    assert joined.wifi == WIFI and joined.cloud is None
    assert not joined.paired and joined.paired_at is None
    loaded = StateStore(tmp_path).open()  # a Wi-Fi-only state survives a restart
    assert loaded.wifi == WIFI and not loaded.paired
    assert loaded.redacted()["wifi"] == {"ssid": "HomeNet", "hidden": False, "security": "psk"}
    paired = store.commit_pairing(None, CLOUD)  # the cloud part: the network stays
    assert paired.wifi == WIFI and paired.cloud == CLOUD and paired.paired
    assert StateStore(tmp_path).open() == paired
    other = WifiCredentials(ssid="Office", psk="correct horse")
    assert store.commit_pairing(other, CLOUD).wifi == other  # a new network replaces it
    assert store.commit_wifi(WIFI).cloud == CLOUD  # joining a network keeps the account
    reset = store.reset()
    assert reset.wifi is None and reset.cloud is None and not reset.paired


def test_cloud_only_commit_on_a_hub_without_wifi(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.open()
    state = store.commit_pairing(None, CLOUD)  # the "No Wi-Fi" variant, Ethernet hub
    assert state.wifi is None and state.paired


@pytest.mark.parametrize(
    ("content", "key", "reason"),
    [
        (b"{not json", "", "not JSON (line 1, column 2)"),
        (b"[" * 100_000, "", "nests deeper than 32 levels"),  # RecursionError escaped the parser
        # int() refuses more than 4300 digits with a ValueError, not a JSONDecodeError
        (b'{"schema": ' + b"1" * 5_000 + b"}", "", "holds a number of more than 4300 digits"),
        (b"[]", "", "top level"),
        (b'{"schema": 0}', "schema", "not supported"),
        (None, "setup_code", "8 digits"),
        (None, "cloud.port", "port"),
    ],
)
def test_corrupt_state_is_refused_with_file_key_reason(tmp_path: Path, content: bytes | None,
                                                       key: str, reason: str) -> None:
    store = StateStore(tmp_path)
    store.open()
    store.commit_pairing(WIFI, CLOUD)
    if content is None:
        data = json.loads(store.path.read_text())
        if key == "setup_code":
            data["setup_code"] = "12"
        else:
            data["cloud"]["port"] = 0
        content = json.dumps(data).encode()
    store.path.write_bytes(content)
    with pytest.raises(StateError) as info:
        StateStore(tmp_path).open()
    assert info.value.key == key
    assert reason in info.value.reason
    assert str(store.path) in str(info.value)
    assert "gatewayctl reset" in str(info.value)


def _writer(path: Path, seed: int, ack_fd: int) -> None:
    store = StateStore(path)
    store.open()
    rng = random.Random(seed)
    n = 0
    while True:
        n += 1
        token = f"{seed}-{n}-" + "x" * rng.randrange(1, 1000)
        store.commit_pairing(WIFI, CloudCredentials("a@b.example", token, "h.example", 1883))
        os.write(ack_fd, n.to_bytes(4, "big"))


def test_state_file_is_never_half_written(tmp_path: Path) -> None:
    """Kill writers at random points: the file is always the last acknowledged state or the
    one being written, whole, with mode 0600."""
    StateStore(tmp_path).open()
    rng = random.Random(1234)
    path = tmp_path / "state.json"
    for i in range(40):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                os.close(read_fd)
                _writer(tmp_path, i, write_fd)
            finally:
                os._exit(0)
        os.close(write_fd)
        acked = 0
        for _ in range(rng.randrange(1, 6)):  # wait for some whole commits...
            acked = int.from_bytes(os.read(read_fd, 4), "big")
        for _ in range(rng.randrange(0, 3000)):  # ...then kill somewhere inside the next one
            os.sched_yield()
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read_fd)
        state = parse_state(path, path.read_bytes())
        assert state.cloud is not None
        seed, n, _ = state.cloud.token.split("-", 2)
        assert int(seed) == i and int(n) >= acked  # never older than an acknowledged commit
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Temp files of killed writers are never read as state, and are private too.
    for leftover in tmp_path.glob(".state.json.*.tmp"):
        assert stat.S_IMODE(leftover.stat().st_mode) == 0o600


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_the_next_start_removes_temp_files_of_writers_that_died(tmp_path: Path) -> None:
    """A write cut short by kill -9 or a power cut leaves its temp file, and in it a copy
    of the credentials being written, which a factory reset would not forget (the chaos
    suite found them after restarts). The next open removes it; a writer that is still
    running keeps its own."""
    StateStore(tmp_path).open()
    dead = _dead_pid()
    stale = [tmp_path / f".{name}.{dead}.tmp" for name in ("state.json", "a", "b", "c")]
    for path in stale:
        path.write_bytes(b'{"cloud": {"token": "the old account\'s"}}')
    # Another writer, still running (e.g. gatewayctl): a child of ours, so that asking
    # whether it runs can be seen not to disturb it. It takes SIGHUP's default action back
    # (a nohup'd runner passes it on ignored), says so, and exits 0 at the end of its stdin.
    writer = subprocess.Popen(
        [sys.executable, "-c", "import signal, sys; signal.signal(signal.SIGHUP, "
         "signal.SIG_DFL); print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
        running = tmp_path / f".state.json.{writer.pid}.tmp"
        running.write_bytes(b"{")
        first = tmp_path / f".0.json.{writer.pid}.tmp"  # the running writer's, named first
        first.write_bytes(b"{")
        StateStore(tmp_path).open()
        # Every dead writer's file goes, whatever comes before it.
        assert not any(path.exists() for path in stale)
        assert running.exists() and first.exists()
    finally:
        assert writer.stdin is not None
        writer.stdin.close()
        assert writer.wait(30) == 0, "the running writer was signalled"
    assert StateStore(tmp_path).reset().cloud is None


@pytest.mark.parametrize("content", ['{"schema": 1, "setup_code": ',
                                     # a traceback and exit 1 (a restart loop), and a reset
                                     # that failed the same way
                                     '{"schema": 1, "created": ' + "1" * 5_000 + "}"])
def test_daemon_refuses_corrupt_state_and_ctl_reset_recovers(tmp_path: Path,
                                                             content: str) -> None:
    cfg = write_config(tmp_path / "g.toml", ethernet_config(tmp_path))
    state_dir = tmp_path / "state"
    StateStore(state_dir).open()
    (state_dir / "state.json").write_text(content)
    gw = Gatewayd(["--config", str(cfg)])
    assert gw.proc.wait(30) == 2
    out = gw.output()
    assert "state error" in out and str(state_dir / "state.json") in out
    assert "Traceback" not in out
    # What a reset would do, not a claim that the file was already kept aside.
    assert ("('gatewayctl reset' moves it aside to state.json.corrupt-<time> and starts over, "
            "unpaired, keeping the setup code, device key and identity if still valid)\n") in out
    assert "is kept" not in out and not list(state_dir.glob("state.json.corrupt-*"))
    assert not (tmp_path / "run" / "control.sock").exists()

    result = ctl("--config", str(cfg), "reset")
    assert "not running" in result.stdout
    assert list(state_dir.glob("state.json.corrupt-*")), "the bad file is kept for support"

    gw = Gatewayd(["--config", str(cfg)])
    try:
        gw.wait_socket(tmp_path / "run" / "control.sock")
        status = ctl_json("--socket", str(tmp_path / "run" / "control.sock"), "status")
        assert status["state"] == "unpaired"
    finally:
        assert gw.stop() == 0


def test_a_state_file_others_could_read_is_made_private_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = StateStore(tmp_path)
    store.open()
    store.commit_pairing(WIFI, CLOUD)
    for loose in (0o644, 0o640, 0o604, 0o660, 0o777):
        os.chmod(store.path, loose)  # an operator copied the file around
        caplog.clear()
        assert StateStore(tmp_path).open().cloud == CLOUD
        assert stat.S_IMODE(store.path.stat().st_mode) == 0o600, oct(loose)
        assert "tightened permissions" in caplog.text
    caplog.clear()
    os.chmod(store.path, 0o400)  # stricter than needed: left alone
    StateStore(tmp_path).open()
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o400
    assert "tightened" not in caplog.text


def test_state_files_over_256_kib_are_refused_unread(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.open()
    store.commit_pairing(WIFI, CLOUD)
    whole = store.path.read_bytes()
    store.path.write_bytes(whole + b" " * (256 * 1024 - len(whole)))  # exactly 256 KiB
    assert StateStore(tmp_path).open().cloud == CLOUD
    store.path.write_bytes(whole + b" " * (256 * 1024 - len(whole) + 1))  # one byte more
    with pytest.raises(StateError) as info:
        StateStore(tmp_path).open()
    assert "262145 bytes" in info.value.reason and "262144" in info.value.reason
    assert (info.value.file, info.value.key) == (store.path, "")
    assert str(info.value) == (f"{store.path}: file is 262145 bytes; refusing to read more "
                               f"than 262144 {ADVICE}")


def _valid(tmp_path: Path) -> dict[str, object]:
    store = StateStore(tmp_path)
    store.open(device_id="dc-a6-32-00-00-01", mac="dc:a6:32:00:00:01")
    store.commit_pairing(WIFI, CLOUD)
    data: dict[str, object] = json.loads(store.path.read_text())
    return data


@pytest.mark.parametrize(("change", "key", "reason"), [
    ({"schema": "1"}, "schema", "wrong type str"),
    ({"schema": True}, "schema", "wrong type bool"),
    ({"schema": 0}, "schema", "version 0 is not supported"),
    ({"schema": 2}, "schema", "written by a newer gatewayd (schema 2"),
    ({"setup_code": "1234567a"}, "setup_code", "8 digits"),
    ({"setup_code": "123456789"}, "setup_code", "8 digits"),
    ({"setup_code": 12345678}, "setup_code", "wrong type"),
    ({"device_key": "00" * 31}, "device_key", "64 hex digits"),
    ({"device_key": "zz" * 32}, "device_key", "64 hex digits"),
    ({"created": "yesterday"}, "created", "wrong type"),
    ({"identity": ["hub-1"]}, "identity", "object"),
    ({"identity": {"device_id": "Upper-Case"}}, "identity.device_id", "lowercase"),
    ({"identity": {"device_id": "hub-"}}, "identity.device_id", "lowercase"),
    ({"identity": {"mac": "dc:a6:32:00:00"}}, "identity.mac", "MAC"),
    ({"identity": {"mac": "DC:A6:32:00:00:01"}}, "identity.mac", "MAC"),
    ({"wifi": "HomeNet"}, "wifi", "wrong type"),
    ({"wifi": {"ssid": "HomeNet", "psk": "short"}}, "wifi.psk", "8-63"),
    # Named as in the file, not as the pairing API names them (brport, rootTopic).
    ({"cloud": {"wsp": "user@example.com", "token": "t", "host": "h", "port": 70000}},
     "cloud.port", "1-65535"),
    ({"cloud": {"wsp": "user@example.com", "token": "t", "host": "h", "port": 1883,
                "root_topic": "a/b"}}, "cloud.root_topic", "single MQTT topic level"),
    ({"paired_at": "now"}, "paired_at", "wrong type"),
    ({"paired_at": True}, "paired_at", "wrong type bool"),
    ({"paired_at": float("nan")}, "paired_at", "must be a finite number"),
    ({"created": float("inf")}, "created", "must be a finite number"),
    # An integer past a float's range: it crashed (OverflowError) where it was converted.
    ({"created": 10**400}, "created", "must be a finite number"),
    ({"paired_at": -(10**400)}, "paired_at", "must be a finite number"),
    ({"release": []}, "release", "object"),
    ({"release": {"cloud": None}}, "release.cloud", "object"),
    ({"release": {"cloud": {"wsp": "user@example.com", "token": "t", "host": "h",
                            "port": 1883}, "devices": [], "since": float("nan")}},
     "release.since", "must be a finite number"),
    ({"release": {"cloud": {"wsp": "user@example.com", "token": "t", "host": "h",
                            "port": 1883}, "devices": [], "since": 10**400}},
     "release.since", "must be a finite number"),
])
def test_each_part_of_the_state_is_checked(tmp_path: Path, change: dict[str, object], key: str,
                                           reason: str) -> None:
    data = _valid(tmp_path)
    data.update(change)
    path = tmp_path / "state.json"
    with pytest.raises(StateError) as info:
        parse_state(path, json.dumps(data).encode())
    assert info.value.key == key and reason in info.value.reason
    assert info.value.file == path  # the message names the file to look at
    assert str(info.value).startswith(f"{path}: {key}: ")


def test_a_pending_release_survives_a_restart_and_a_pairing_ends_it(tmp_path: Path) -> None:
    from gatewayd.state import Release

    store = StateStore(tmp_path)
    store.open(device_id="dc-a6-32-00-00-01", mac="dc:a6:32:00:00:01")
    store.commit_pairing(WIFI, CLOUD)
    release = Release(CLOUD, ("dc-a6-32-00-00-01", "virtual-lamp"), 1700000000.5)
    store.reset(release)
    again = StateStore(tmp_path).open()
    assert again.release == release and not again.paired
    assert again.redacted()["release_pending"] == {
        "root_topic": CLOUD.root, "devices": 2, "since": 1700000000.5}
    assert store.reset().release == release  # a second reset keeps what is still owed
    assert store.commit_pairing(None, CLOUD).release is None
    data = _valid(tmp_path / "other")
    for bad in ({"cloud": data["cloud"], "devices": ["Bad Id"], "since": 1.0},
                {"cloud": data["cloud"], "devices": "x", "since": 1.0},
                {"cloud": data["cloud"], "devices": [], "since": True},
                {"cloud": {**data["cloud"], "port": 0}, "devices": [], "since": 1.0}):  # type: ignore[dict-item]
        with pytest.raises(StateError) as info:
            parse_state(tmp_path / "x", json.dumps({**data, "release": bad}).encode())
        assert info.value.key.startswith("release.") and info.value.file == tmp_path / "x"
    assert info.value.key == "release.cloud.port"  # the file's key, not the pairing API's
    bad = {"cloud": {**data["cloud"], "root_topic": "$SYS"}, "devices": [], "since": 1.0}  # type: ignore[dict-item]
    with pytest.raises(StateError) as info:
        parse_state(tmp_path / "x", json.dumps({**data, "release": bad}).encode())
    assert str(info.value).startswith(
        f"{tmp_path / 'x'}: release.cloud.root_topic: must not start with '$'")


def test_a_reset_of_a_corrupt_file_keeps_it_aside_and_starts_fresh(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = StateStore(tmp_path, "87654321")
    store.path.parent.mkdir(parents=True, exist_ok=True)
    store.path.write_text("{broken")
    fresh = store.reset()
    assert "keeping its nothing" in caplog.text  # not JSON: no field can be told apart
    assert fresh.setup_code == "87654321" and not fresh.paired
    assert [p.name.split("-")[0] for p in tmp_path.glob("state.json.corrupt-*")] == [
        "state.json.corrupt"]
    assert StateStore(tmp_path).open() == fresh
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_the_state_is_stored_as_documented_and_shown_without_secrets(tmp_path: Path) -> None:
    from gatewayd.state import Release

    store = StateStore(tmp_path / "deeper" / "state")
    with pytest.raises(RuntimeError, match="call open\\(\\) first"):
        _ = store.state
    store.open(device_id="dc-a6-32-00-00-01", mac="dc:a6:32:00:00:01")
    assert stat.S_IMODE(store.dir.stat().st_mode) == 0o700
    before = time.time()
    state = store.commit_pairing(WIFI, CLOUD)
    assert before <= (state.paired_at or 0) <= time.time()
    data = json.loads(store.path.read_text())
    assert data == {"schema": 1, "setup_code": state.setup_code,
                    "device_key": state.device_key.hex(), "created": state.created,
                    "identity": {"device_id": "dc-a6-32-00-00-01", "mac": "dc:a6:32:00:00:01"},
                    "wifi": {"ssid": "HomeNet", "psk": "supersecret", "hidden": False},
                    "cloud": {"wsp": "user@example.com", "token": "t0k-secret",
                              "host": "127.0.0.1", "port": 1883, "mqtts_port": 0,
                              "root_topic": ""},
                    "paired_at": state.paired_at, "release": None}
    assert state.redacted() == {"paired": True, "paired_at": state.paired_at,
                                "release_pending": None, "owed_clearings": 0,
                                "wifi": WIFI.redacted(), "cloud": CLOUD.redacted()}
    release = Release(CLOUD, ("virtual-lamp",), 12.5)
    assert release.to_json() == {"cloud": data["cloud"], "devices": ["virtual-lamp"],
                                 "since": 12.5}
    assert store.commit_wifi(WIFI).paired_at == state.paired_at  # joining is not pairing


def test_an_old_state_without_identity_gets_the_hubs_at_the_next_start(
        tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.open()
    data = json.loads(store.path.read_text())
    del data["identity"]
    store.path.write_text(json.dumps(data))
    loaded = StateStore(tmp_path).open(device_id="dc-a6-32-00-00-09", mac="dc:a6:32:00:00:09")
    assert (loaded.device_id, loaded.mac) == ("dc-a6-32-00-00-09", "dc:a6:32:00:00:09")
    assert StateStore(tmp_path).open().device_id == "dc-a6-32-00-00-09"
    # A missing key is named.
    del data["created"]
    with pytest.raises(StateError) as info:
        parse_state(tmp_path / "x", json.dumps(data).encode())
    assert (info.value.key, info.value.reason) == ("created", "missing")
    assert parse_state(tmp_path / "x", json.dumps({**data, "created": 5,
                                                   "paired_at": 7}).encode()).paired_at == 7


def test_a_reset_keeps_the_identity_even_of_a_file_that_went_bad(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    first = store.open(device_id="dc-a6-32-00-00-01", mac="dc:a6:32:00:00:01")
    store.path.write_text("{broken")  # under the running daemon
    fresh = store.reset()
    assert (fresh.device_id, fresh.mac, fresh.setup_code) == (
        first.device_id, first.mac, first.setup_code)
    other = StateStore(tmp_path / "other")
    assert other.reset().device_id == ""  # no state at all: a fresh one
    assert not list((tmp_path / "other").glob("state.json.corrupt-*"))


def test_atomic_writes_leave_nothing_behind_when_they_fail(tmp_path: Path) -> None:
    from gatewayd.runtime.atomicfile import atomic_write

    target = tmp_path / "f.json"
    atomic_write(target, b"x" * 100_000, 0o640)
    assert target.read_bytes() == b"x" * 100_000
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    stale = tmp_path / f".f.json.{os.getpid()}.tmp"
    stale.write_text("left over")
    stale.chmod(0o666)
    atomic_write(target, b"new", 0o600)  # reuses the name, narrows its mode first
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not stale.exists()
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(IsADirectoryError):
        atomic_write(tmp_path / "dir.json", b"x")
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "missing" / "f.json", b"x")


def test_a_disk_that_fails_the_write_leaves_the_old_file_and_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    store = StateStore(tmp_path)
    store.open()
    before = store.path.read_bytes()

    def fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(atomicfile.os, "fsync", fsync)
    with pytest.raises(OSError) as failed:
        store.commit_pairing(WIFI, CLOUD)
    assert failed.value.errno == errno.EIO  # the disk's error, not one of the clean-up's
    monkeypatch.undo()
    assert store.path.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))  # no copy of the credentials left behind


OPERATION = {"id": "0123456789abcdef" * 2, "key": "ab" * 32, "started": 1700000000.5}
REGISTRATION = {"mode": "token", "device_id": "dc-a6-32-00-00-01", "issued_at": 1700000000.0,
                "expires_at": 1700086400.0}
REG = "provisioning.registration"


@pytest.mark.parametrize(("provisioning", "key", "reason"), [
    ("token", "provisioning", "must be an object"),
    ({"operation": []}, "provisioning.operation", "must be an object"),
    ({"operation": {**OPERATION, "id": "0" * 31}}, "provisioning.operation.id",
     "must be 32 hex digits"),
    ({"operation": {**OPERATION, "id": 7}}, "provisioning.operation.id", "must be 32 hex digits"),
    ({"operation": {**OPERATION, "key": "AB" * 32}}, "provisioning.operation.key",
     "must be 64 hex digits"),
    ({"operation": {**OPERATION, "key": None}}, "provisioning.operation.key",
     "must be 64 hex digits"),
    ({"operation": {**OPERATION, "started": "soon"}}, "provisioning.operation.started",
     "must be a finite number"),
    ({"operation": {**OPERATION, "started": True}}, "provisioning.operation.started",
     "must be a finite number"),
    ({"registration": "x"}, REG, "must be an object"),
    ({"registration": {**REGISTRATION, "mode": "pairing"}}, f"{REG}.mode",
     'must be "token" or "enroll"'),
    ({"registration": {**REGISTRATION, "device_id": "Bad Id"}}, f"{REG}.device_id",
     "must be a device id"),
    ({"registration": {**REGISTRATION, "device_id": 5}}, f"{REG}.device_id",
     "must be a device id"),
    ({"registration": {**REGISTRATION, "issued_at": None}}, f"{REG}.issued_at",
     "must be a finite number"),
    ({"registration": {**REGISTRATION, "expires_at": "never"}}, f"{REG}.expires_at",
     "must be a finite number"),
    ({"registration": {**REGISTRATION, "expires_at": float("inf")}}, f"{REG}.expires_at",
     "must be a finite number"),
    ({"operation": {**OPERATION, "started": float("nan")}}, "provisioning.operation.started",
     "must be a finite number"),
    ({"operation": {**OPERATION, "started": 10**400}}, "provisioning.operation.started",
     "must be a finite number"),
])
def test_each_part_of_the_provisioning_state_is_checked_by_name(
        tmp_path: Path, provisioning: object, key: str, reason: str) -> None:
    data = _valid(tmp_path)
    data["provisioning"] = provisioning
    path = tmp_path / "state.json"
    with pytest.raises(StateError) as info:
        parse_state(path, json.dumps(data).encode())
    assert (info.value.file, info.value.key, info.value.reason) == (path, key, reason)


def test_a_provisioned_state_reads_back_whole(tmp_path: Path) -> None:
    from gatewayd.state import Operation, Registration

    data = _valid(tmp_path)
    data["provisioning"] = {"operation": OPERATION,
                            "registration": {**REGISTRATION, "mode": "enroll",
                                             "expires_at": None}}
    state = parse_state(tmp_path / "state.json", json.dumps(data).encode())
    assert state.operation == Operation(OPERATION["id"], bytes.fromhex("ab" * 32),
                                        1700000000.5)
    assert state.registration == Registration("enroll", "dc-a6-32-00-00-01", 1700000000.0,
                                              None)
    del data["cloud"]  # a registration stands for the credentials it issued
    with pytest.raises(StateError) as info:
        parse_state(tmp_path / "state.json", json.dumps(data).encode())
    assert (info.value.key, info.value.reason) == (REG, "present without credentials")


def test_a_state_file_from_before_the_optional_fields_reads_with_their_defaults(
        tmp_path: Path) -> None:
    data = _valid(tmp_path)
    assert isinstance(data["cloud"], dict) and isinstance(data["wifi"], dict)
    for key in ("mqtts_port", "root_topic", "mqtt_user"):
        data["cloud"].pop(key, None)
    data["wifi"].pop("hidden", None)
    state = parse_state(tmp_path / "state.json", json.dumps(data).encode())
    assert state.cloud is not None and state.wifi is not None
    assert (state.cloud.mqtts_port, state.cloud.root_topic, state.cloud.mqtt_user) == (0, "", "")
    assert state.wifi.hidden is False
    data["cloud"].update(mqtts_port=8883, root_topic="acme", mqtt_user="vendor-7")
    data["wifi"]["hidden"] = True
    state = parse_state(tmp_path / "state.json", json.dumps(data).encode())
    assert state.cloud is not None and state.wifi is not None and state.wifi.hidden
    assert (state.cloud.mqtts_port, state.cloud.root_topic, state.cloud.mqtt_user) == (
        8883, "acme", "vendor-7")


def test_setup_codes_are_drawn_from_all_eight_digit_numbers() -> None:
    from gatewayd.state import new_setup_code

    codes = [new_setup_code() for _ in range(20)]
    assert all(len(code) == 8 and code.isdigit() for code in codes)
    # 20 draws below 10**6 out of 10**8: a chance of 10**-40 with the whole range.
    assert max(int(code) for code in codes) >= 10**6


def test_a_pending_release_keeps_the_whole_account_it_is_owed_to(tmp_path: Path) -> None:
    from gatewayd.state import Release

    full = CloudCredentials(wsp="user@example.com", token="t0k-secret", host="127.0.0.1",
                            port=1883, mqtts_port=8883, root_topic="acme", mqtt_user="vendor-7")
    store = StateStore(tmp_path)
    store.open(device_id="dc-a6-32-00-00-01", mac="dc:a6:32:00:00:01")
    store.commit_pairing(WIFI, full)
    store.reset(Release(full, ("dc-a6-32-00-00-01",), 1700000000.5))
    again = StateStore(tmp_path).open()
    assert again.release is not None and again.release.cloud == full
    data = json.loads(store.path.read_text())
    for key in ("mqtts_port", "root_topic", "mqtt_user"):
        del data["release"]["cloud"][key]  # written before these fields existed
    old = parse_state(store.path, json.dumps(data).encode())
    assert old.release is not None and old.release.cloud == CloudCredentials(
        wsp="user@example.com", token="t0k-secret", host="127.0.0.1", port=1883)


def test_a_reset_forgets_when_the_hub_was_paired(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.open(device_id="dc-a6-32-00-00-01", mac="dc:a6:32:00:00:01")
    assert store.commit_pairing(WIFI, CLOUD).paired_at is not None
    store.reset()
    again = StateStore(tmp_path).open()
    assert again.paired_at is None and again.cloud is None and again.wifi is None
    assert again.redacted().get("paired_at") is None
    # The account is forgotten, not kept to release (only keep_account does that).
    assert again.release is None and json.loads(store.path.read_text())["release"] is None


@pytest.mark.parametrize("hub_id", ["", "acme-hub-7"])
def test_a_reset_that_keeps_the_account_names_it_as_a_pending_release(
        tmp_path: Path, hub_id: str) -> None:
    """What `gatewayctl reset` does with the daemon stopped: the paired account stays as
    the release the daemon makes at the next pairing, under the hub's published id."""
    store = StateStore(tmp_path)
    store.open(device_id="dc-a6-32-12-34-56", mac="dc:a6:32:12:34:56")
    cloud = CloudCredentials("user@example.com", "t0k", "127.0.0.1", 1883)
    store.commit_pairing(None, cloud)
    before = time.time()
    again_store = StateStore(tmp_path)
    state = (again_store.reset(keep_account=True, hub_id=hub_id) if hub_id
             else again_store.reset(keep_account=True))
    assert state.release is not None and state.release.cloud == cloud
    assert state.release.devices == (hub_id or "dc-a6-32-12-34-56",)
    assert state.release.since >= before and not state.paired
    again = StateStore(tmp_path).reset(keep_account=True)  # nothing paired: nothing new
    assert again.release == state.release
    assert StateStore(tmp_path).reset().release == state.release  # kept until a pairing


def test_a_reset_forgets_an_operation_in_flight(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.open(device_id="dc-a6-32-12-34-56", mac="dc:a6:32:12:34:56")
    store.begin_operation(Operation(id="0" * 32, key=bytes(32), started=1.0))
    assert store.state.operation is not None
    assert store.reset().operation is None


def test_a_state_file_from_a_newer_gatewayd_is_left_alone_and_a_reset_keeps_the_label(
        tmp_path: Path) -> None:
    """A .deb downgrade: the file is sound, this gatewayd too old for it. Its advice was a
    reset, which then made a new setup code and blanked the device id: the label printed on
    the hub stopped working."""
    cfg = write_config(tmp_path / "g.toml", ethernet_config(tmp_path))
    state_dir = tmp_path / "state"
    store = StateStore(state_dir)
    store.open(device_id="dc-a6-32-00-00-07", mac="dc:a6:32:00:00:07")
    newer = {**json.loads(store.path.read_text()), "schema": 2, "a_new_feature": {}}
    content = json.dumps(newer).encode()
    store.path.write_bytes(content)
    gw = Gatewayd(["--config", str(cfg)])
    assert gw.proc.wait(30) == 2
    assert (f"gatewayd: state error: {store.path}: schema: written by a newer gatewayd "
            "(schema 2; this one reads schema 1) (reinstall the gatewayd that wrote it, or a "
            "newer one; nothing was changed)\n") in gw.output()
    assert "gatewayctl reset" not in gw.output()
    assert sorted(p.name for p in state_dir.iterdir()) == [".lock", "state.json"]
    assert store.path.read_bytes() == content

    ctl("--config", str(cfg), "reset")  # done anyway: the label still works
    after = json.loads(store.path.read_text())
    assert (after["schema"], after["setup_code"], after["device_key"], after["identity"]) == (
        1, newer["setup_code"], newer["device_key"], newer["identity"])
    (aside,) = state_dir.glob("state.json.corrupt-*")
    assert aside.read_bytes() == content


def test_a_reset_of_a_damaged_file_keeps_each_label_field_that_is_still_valid(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = _valid(tmp_path)
    store = StateStore(tmp_path)
    data["cloud"] = {**data["cloud"], "port": 0}  # type: ignore[dict-item]
    store.path.write_text(json.dumps(data))
    kept = store.reset()
    assert (kept.setup_code, kept.device_key.hex(), kept.device_id, kept.mac) == (
        data["setup_code"], data["device_key"], "dc-a6-32-00-00-01", "dc:a6:32:00:00:01")
    assert not kept.paired and StateStore(tmp_path).open() == kept
    assert "keeping its setup code, device key, device id, MAC" in caplog.text
    # The vendor preset (the label's) wins over a code the file still tells.
    store.path.write_text(json.dumps(data))
    assert StateStore(tmp_path, "87654321").reset().setup_code == "87654321"
    assert (f"{store.path}: the stored setup code is replaced by the [hub] setup_code preset"
            in caplog.messages)
    # Each field on its own rule: a bad one is made afresh (or left empty), not the others.
    data.update(setup_code="1234", identity={"device_id": "dc-a6-32-00-00-01", "mac": "x"})
    store.path.write_text(json.dumps(data))
    kept = StateStore(tmp_path, "87654321").reset()
    assert (kept.setup_code, kept.device_key.hex(), kept.device_id, kept.mac) == (
        "87654321", data["device_key"], "dc-a6-32-00-00-01", "")


MISSING = object()


@pytest.mark.parametrize(("change", "message"), [
    (b"{not json", f"not JSON (line 1, column 2) {ADVICE}"),
    (b"[]", f"top level must be an object {ADVICE}"),
    ({"schema": 2}, "schema: written by a newer gatewayd (schema 2; this one reads schema 1) "
                    "(reinstall the gatewayd that wrote it, or a newer one; nothing was changed)"),
    ({"created": MISSING}, f"created: missing {ADVICE}"),
    ({"created": float("nan")}, f"created: must be a finite number {ADVICE}"),
    ({"setup_code": "1234"}, f"setup_code: must be 8 digits {ADVICE}"),
    ({"device_key": 5}, f"device_key: wrong type int {ADVICE}"),
    ({"device_key": "00" * 31}, f"device_key: must be 64 hex digits {ADVICE}"),
    ({"identity": "hub-1"}, f"identity: must be an object {ADVICE}"),
    ({"identity": {"device_id": "Hub-1", "mac": ""}},
     f"identity.device_id: must be a lowercase id such as dc-a6-32-01-02-03 {ADVICE}"),
    ({"identity": {"device_id": "", "mac": "dc-a6-32-00-00-01"}},
     f"identity.mac: must be a MAC address aa:bb:cc:dd:ee:ff {ADVICE}"),
    ({"cloud": ["user@example.com"]}, f"cloud: wrong type list {ADVICE}"),
    ({"cloud": None, "provisioning": {"operation": None, "registration": REGISTRATION}},
     f"provisioning.registration: present without credentials {ADVICE}"),
])
def test_each_refusal_names_the_file_the_key_and_what_is_wrong_word_for_word(
        tmp_path: Path, change: bytes | dict[str, object], message: str) -> None:
    data = _valid(tmp_path)
    path = tmp_path / "state.json"
    raw = change if isinstance(change, bytes) else json.dumps(
        {k: v for k, v in {**data, **change}.items() if v is not MISSING}).encode()
    with pytest.raises(StateError) as info:
        parse_state(path, raw)
    assert info.value.file == path
    assert str(info.value) == f"{path}: {message}"


def test_a_reset_gives_the_hub_its_preset_setup_code_and_the_log_says_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A [hub] setup_code drop-in written after the first start: the label's code wins."""
    store = StateStore(tmp_path)
    first = store.open(device_id="dc-a6-32-00-00-01", mac="dc:a6:32:00:00:01")
    assert first.setup_code != "87654321"
    assert StateStore(tmp_path, "87654321").reset().setup_code == "87654321"
    assert json.loads(store.path.read_text())["setup_code"] == "87654321"
    assert caplog.messages == [
        f"{store.path}: the stored setup code is replaced by the [hub] setup_code preset"]


def test_a_reset_before_any_start_makes_the_state_directory_private(tmp_path: Path) -> None:
    """gatewayctl reset on a hub whose daemon never ran: the directory and its parents."""
    store = StateStore(tmp_path / "var" / "lib" / "gatewayd")
    state = store.reset()
    assert stat.S_IMODE(store.dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert StateStore(store.dir).open() == state


def test_a_reset_keeping_the_account_of_a_hub_without_an_id_names_no_device(
        tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.open()  # an old state file, from before the hub knew its id
    store.commit_pairing(None, CLOUD)
    state = store.reset(keep_account=True)
    assert state.release is not None and state.release.devices == ()
    assert StateStore(tmp_path).open().release == state.release  # the file reads back


def test_owed_clearings_are_kept_for_the_account_they_are_owed_to_only(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.open(device_id="dc-a6-32-00-00-01", mac="dc:a6:32:00:00:01")
    store.commit_pairing(None, CLOUD)
    other = CloudCredentials("other@example.com", "t0k", "127.0.0.1", 1883)
    ours, theirs = OwedClearing("lamp-1", CLOUD.root), OwedClearing("lamp-2", other.root)
    assert store.set_owed((ours, theirs)).owed == (ours,)
    assert json.loads(store.path.read_text())["owed_clearings"] == [
        {"device_id": "lamp-1", "root_topic": CLOUD.root}]
    assert StateStore(tmp_path).open().owed == (ours,)
    # A reset while offline keeps them: owed to the account its release gives up.
    assert store.reset(Release(CLOUD, ("dc-a6-32-00-00-01",), 1.0)).owed == (ours,)
    assert StateStore(tmp_path).open().owed == (ours,)
    store.commit_pairing(None, other)  # paired with another: the release clears them
    assert store.state.owed == ()
    assert "owed_clearings" not in json.loads(store.path.read_text())


def test_the_identity_settled_at_start_is_stored(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    state = store.open(device_id="dc-a6-32-00-00-01", mac="dc:a6:32:00:00:01")
    moved = replace(state, device_id="dc-a6-32-00-00-02", mac="dc:a6:32:00:00:02")
    assert store.rewrite(moved) == moved
    assert StateStore(tmp_path).open() == moved


def test_each_provisioning_step_stores_what_it_changes_and_keeps_the_rest(
        tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.open(device_id="dc-a6-32-00-00-01", mac="dc:a6:32:00:00:01")
    store.commit_pairing(WIFI, CLOUD)
    store.reset(Release(CLOUD, ("dc-a6-32-00-00-01",), 1.0))  # offline: a release pending
    store.commit_wifi(WIFI)
    store.begin_operation(Operation(id="0" * 32, key=bytes(32), started=1.0))
    issued = CloudCredentials("developer@example.com", "token-1", "broker.example", 8883)
    registration = Registration("token", "dc-a6-32-00-00-01", 1700000000.0, 1700086400.0)
    before = time.time()
    state = store.commit_provisioned(issued, registration)
    assert (state.cloud, state.registration, state.wifi) == (issued, registration, WIFI)
    assert state.operation is None and state.release is None  # the new account replaces it
    assert state.paired_at is not None and before <= state.paired_at <= time.time()
    assert StateStore(tmp_path).open() == state

    renewed = CloudCredentials("developer@example.com", "token-2", "broker.example", 8883)
    again = Registration("token", "dc-a6-32-00-00-01", 1700080000.0, 1700166400.0)
    after = store.renew_registration(renewed, again)
    assert after == replace(state, cloud=renewed, registration=again)
    assert StateStore(tmp_path).open() == after

    store.begin_operation(Operation(id="1" * 32, key=bytes(32), started=2.0))
    forgotten = store.forget_registration()
    assert (forgotten.cloud, forgotten.registration, forgotten.paired_at,
            forgotten.operation) == (None, None, None, None)
    assert forgotten.wifi == WIFI  # the hub is still on it
    assert StateStore(tmp_path).open() == forgotten


def test_one_process_at_a_time_holds_the_state_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "var" / "lib" / "gatewayd"
    first = StateStore(directory)
    first.claim(0)  # makes the directory, with its parents
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / ".lock").stat().st_mode) == 0o600
    with pytest.raises(StateBusy) as busy:
        StateStore(directory).claim(0)
    assert str(busy.value) == (f"another process holds {directory / '.lock'} (a gatewayd "
                               "running on this state directory)")
    # A second one waits for the first to let go, looking again every 0.1 s.
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        assert first._claim is not None
        os.close(first._claim)  # the first process ends while the second one waits
    monkeypatch.setattr(atomicfile.time, "sleep", sleep)
    second = StateStore(directory)
    second.claim(30.0)
    assert slept == [0.1]
    assert second._claim is not None
    os.close(second._claim)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give files away")
def test_files_root_writes_into_the_services_directory_stay_the_services(tmp_path: Path) -> None:
    """gatewayctl reset, or a gatewayd started by hand to debug, run as root: every file
    they leave must stay readable by the service's user, the directory's owner."""
    service = (12345, 23456)
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    os.chown(directory, *service)

    def owner(path: Path) -> tuple[int, int]:
        return path.stat().st_uid, path.stat().st_gid
    holder = StateStore(directory)
    holder.claim(0)
    assert owner(directory / ".lock") == service
    assert holder._claim is not None
    os.close(holder._claim)
    store = StateStore(directory, owner=atomicfile.directory_owner(directory))  # gatewayctl's
    store.open()
    assert owner(store.path) == service
    store.path.write_text("{broken")
    StateStore(directory, owner=atomicfile.directory_owner(directory)).reset()
    (aside,) = directory.glob("state.json.corrupt-*")
    assert owner(aside) == owner(store.path) == service
