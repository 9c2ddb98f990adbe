"""A damaged zigbee.db is moved aside and the radio starts with an empty one
(gatewayd/zigbee/db_file.py); other failures to open it are said, and the file kept.

Before, a damaged zigbee.db kept Zigbee down for good: "cannot open the Zigbee database
... (damaged, or its disk full?)", retried once a minute, though the stick still held the
network.
"""

from __future__ import annotations

import asyncio
import json
import logging
import stat
import threading
from pathlib import Path

import pytest

from gatewayd.config import ZigbeeConfig
from gatewayd.zigbee import new_network
from gatewayd.zigbee.db_file import BACKUP_FILE, DB_FILE, MAX_ASIDE
from gatewayd.zigbee.radio import (
    RadioError,
    forget_network,
    shutdown_controller,
    start_controller,
)
from tests.helpers import run_async
from tests.test_bridge import HUB_ID, dev_id
from tests.test_zigbee_stick_change import (
    Stick,
    blank_replacement,
    bridge_on,
    children,
    hub_with_devices,
)
from tests.zigbee_radios import sim

pytestmark = pytest.mark.timeout(180)


def damage(db: Path) -> bytes:
    """SQLite's schema page overwritten (the file header kept): 'malformed'."""
    with db.open("r+b") as f:
        f.seek(100)
        f.write(b"\xa5" * 3996)
    return db.read_bytes()


def test_a_damaged_database_is_moved_aside_and_the_network_on_the_stick_resumed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gatewayd")
    hub_dir = tmp_path / "hub"
    hub_dir.mkdir()

    async def main() -> None:
        async with Stick(tmp_path / "a.json") as a:
            plug, sensor = await hub_with_devices(a, hub_dir)
            backup = hub_dir / BACKUP_FILE  # the network backup outside zigbee.db
            assert stat.S_IMODE(backup.stat().st_mode) == 0o600
            assert json.loads(backup.read_text())["pan_id"] == f"{a.network.pan_id:04x}"
            damaged = damage(hub_dir / DB_FILE)
            caplog.clear()
            bridge, pub = await bridge_on(a, hub_dir)
            try:
                status = bridge.status()
                aside = Path(status["db_moved_aside"])
                assert (status["up"], status["error"], status["pan_id"]) == (
                    True, None, f"0x{a.network.pan_id:04x}")
                assert aside.parent == hub_dir and aside.name.startswith(f"{DB_FILE}.corrupt-")
                kept = await asyncio.to_thread(aside.read_bytes)
                assert kept == damaged  # for whoever looks into it
                assert pub.value(HUB_ID, "zigbee/status") == "ready"
                messages = [r.getMessage() for r in caplog.records]
                assert (f"zigbee: {hub_dir / DB_FILE} is damaged (SQLite: SQLITE_CORRUPT); "
                        f"moved aside to {aside.name}. Starting with an empty one: the "
                        "network on the stick is resumed (checked against the network "
                        f"backup in {BACKUP_FILE}), and each device is back once it is heard "
                        "(interviewed again, same id); a device that stays silent has to be "
                        "paired again") in messages, messages
                assert children(pub) == set()
                # Each device is back, under its id, once it talks.
                await sim(bridge, "report", ieee=plug, cluster="on_off",
                          attributes={"on_off": 1})
                await pub.state(dev_id(plug), "ready", 10)
                await sim(bridge, "report", ieee=sensor, cluster="temperature",
                          attributes={"measured_value": 2000})
                await pub.state(dev_id(sensor), "sleeping", 10)
            finally:
                await bridge.stop()

    run_async(main(), 150)


def test_a_damaged_database_with_a_blank_stick_restores_the_backup_kept_outside_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gatewayd")
    hub_dir = tmp_path / "hub"
    hub_dir.mkdir()

    async def main() -> None:
        async with Stick(tmp_path / "a.json") as a:
            await hub_with_devices(a, hub_dir)
        ours = a.network
        damage(hub_dir / DB_FILE)
        blank_replacement(tmp_path / "a.json", tmp_path / "b.json")
        async with Stick(tmp_path / "b.json") as b:
            bridge, pub = await bridge_on(b, hub_dir)
            try:  # the hub's network, not a new one
                assert (b.network.extended_pan_id, b.network.network_key) == (
                    ours.extended_pan_id, ours.network_key)
                assert pub.value(HUB_ID, "zigbee/pan-id") == f"0x{ours.pan_id:04x}"
                assert b.emu.ncp.commands["formNetwork"] == 1  # the restore's only
                assert bridge.status()["db_moved_aside"] is not None
            finally:
                await bridge.stop()

    run_async(main(), 150)


VIRTUAL = ZigbeeConfig(enabled=True, radio="virtual")


def test_a_database_that_cannot_be_opened_for_another_reason_is_said_and_kept(
        tmp_path: Path) -> None:
    (tmp_path / DB_FILE).mkdir()  # not a file SQLite can open: not damage either

    async def main() -> None:
        before = set(threading.enumerate())
        with pytest.raises(RadioError) as refused:
            await start_controller(VIRTUAL, tmp_path)
        await no_sqlite_thread_left(before)
        assert str(refused.value) == (
            f"cannot open the Zigbee database {tmp_path / DB_FILE} for writing: the service "
            "user must be able to write it and its directory")
        assert refused.value.details is not None  # SQLite's words: the log's

    run_async(main(), 60)
    assert (tmp_path / DB_FILE).is_dir()
    assert not list(tmp_path.glob(f"{DB_FILE}.corrupt-*"))


def test_damaged_copies_are_bounded(tmp_path: Path) -> None:
    """A storage that damages every new file is not filled with copies: past MAX_ASIDE the
    file stays and the radio is down saying so."""
    moved: list[Path] = []

    async def main() -> None:
        before = set(threading.enumerate())
        for _ in range(MAX_ASIDE + 1):
            (tmp_path / DB_FILE).write_bytes(b"not a database" * 512)
            try:
                app = await start_controller(VIRTUAL, tmp_path, moved_aside=moved.append)
            except RadioError as exc:
                await no_sqlite_thread_left(before)
                assert str(exc).startswith(f"the Zigbee database {tmp_path / DB_FILE} is "
                                           f"damaged and was not moved aside ({MAX_ASIDE} "
                                           "damaged copies are kept already")
                return
            await shutdown_controller(app)
            await no_sqlite_thread_left(before)
        raise AssertionError("every damaged database was moved aside")

    run_async(main(), 60)
    assert len(moved) == MAX_ASIDE
    assert len(list(tmp_path.glob(f"{DB_FILE}.corrupt-*"))) == MAX_ASIDE


async def no_sqlite_thread_left(before: set[threading.Thread]) -> None:
    """Every SQLite thread started since ``before`` ends (not a daemon thread: a process
    with one left does not exit), before the test's event loop closes under it."""
    for worker in set(threading.enumerate()) - before:
        if "_connection_worker_thread" in worker.name:
            await asyncio.to_thread(worker.join, 10)
            assert not worker.is_alive(), worker


def test_a_full_reset_forgets_the_backup_kept_outside_the_database(tmp_path: Path) -> None:
    """The daemon's full reset (radio.forget_network) and the offline one (new_network)."""
    (tmp_path / BACKUP_FILE).write_text("{}")
    forget_network(tmp_path)
    assert not (tmp_path / BACKUP_FILE).exists()
    (tmp_path / BACKUP_FILE).write_text("{}")
    assert BACKUP_FILE in new_network.forget(tmp_path)
    assert not (tmp_path / BACKUP_FILE).exists()


def test_a_full_reset_forgets_the_damaged_databases_moved_aside(tmp_path: Path) -> None:
    """They hold the old network's key and devices: a full reset (before handing the hub
    on) kept them, and they counted against MAX_ASIDE for the hub's life (a reviewer's
    reading). The daemon's full reset and the offline one."""
    aside = ["zigbee.db.corrupt-1700000000", "zigbee.db.corrupt-1700000000-wal",
             "zigbee.db.corrupt-1800000000"]
    for name in aside:
        (tmp_path / name).write_text("old network")
    forget_network(tmp_path)
    assert not list(tmp_path.glob("zigbee.db.corrupt-*"))
    for name in aside:
        (tmp_path / name).write_text("old network")
    assert set(aside) <= set(new_network.forget(tmp_path))
    assert not list(tmp_path.glob("zigbee.db.corrupt-*"))
