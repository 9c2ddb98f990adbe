from __future__ import annotations

import json
import os
import random
import signal
import stat
from pathlib import Path

import pytest

from gatewayd.credentials import CloudCredentials, WifiCredentials
from gatewayd.state import StateError, StateStore, parse_state
from tests.helpers import Gatewayd, ctl, ctl_json, ethernet_config, write_config

CLOUD = CloudCredentials(wsp="user@example.com", token="t0k-secret", host="127.0.0.1", port=1883)
WIFI = WifiCredentials(ssid="HomeNet", psk="supersecret")


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
        (b"{not json", "", "not valid JSON"),
        (b"[]", "", "top level"),
        (b'{"schema": 99}', "schema", "not supported"),
        (None, "setup_code", "8 digits"),
        (None, "cloud.brport", "port"),
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
    stale = tmp_path / f".state.json.{_dead_pid()}.tmp"
    stale.write_bytes(b'{"cloud": {"token": "the old account\'s"}}')
    running = tmp_path / f".state.json.{os.getppid()}.tmp"  # e.g. gatewayctl, writing now
    running.write_bytes(b"{")
    StateStore(tmp_path).open()
    assert not stale.exists() and running.exists()
    assert StateStore(tmp_path).reset().cloud is None


def test_daemon_refuses_corrupt_state_and_ctl_reset_recovers(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "g.toml", ethernet_config(tmp_path))
    state_dir = tmp_path / "state"
    StateStore(state_dir).open()
    (state_dir / "state.json").write_text('{"schema": 1, "setup_code": ')
    gw = Gatewayd(["--config", str(cfg)])
    assert gw.proc.wait(30) == 2
    out = gw.output()
    assert "state error" in out and str(state_dir / "state.json") in out
    assert "gatewayctl reset" in out
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
