"""cloud-devices.json is written off the event loop (gatewayd/cloud/published.py).

Before, each save was an atomic write, fsyncs and all, on the loop that carries MQTT: on a
Pi's SD card every connection's pass (and every removal) held the link up meanwhile. The
write function handed to the record stands for a slow card (tests/test_zigbee_writes_off_loop.py).
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import stat
from pathlib import Path

import pytest

from gatewayd.cloud.published import FILE_NAME, PublishedDevices
from tests.helpers import NOBODY, ROOT_ONLY, run_async
from tests.test_zigbee_writes_off_loop import HOLD, SlowCard

ROOT = "3f2a9c01d4e5b6a7" * 4  # an account root: a hex user name
SHAPE, OTHER = "0123456789abcdef", "fedcba9876543210"


def test_the_loop_goes_on_while_the_record_is_written_and_the_latest_lands(
        tmp_path: Path) -> None:
    card = SlowCard(FILE_NAME)
    path = tmp_path / FILE_NAME

    async def main() -> None:
        record = PublishedDevices(path, write=card.write)
        record.note(ROOT, "virtual-kettle", SHAPE)
        record.save()
        assert await asyncio.to_thread(card.was_held.wait, HOLD)
        # Meanwhile the loop serves others: a message handed from one task to another.
        inbox: asyncio.Queue[str] = asyncio.Queue()
        sender = asyncio.create_task(inbox.put("a report"))
        assert await inbox.get() == "a report"
        await sender
        record.note(ROOT, "virtual-tea", SHAPE)
        record.save()
        record.note(ROOT, "virtual-kettle", OTHER)
        record.save()
        assert card.held, "the loop waited for cloud-devices.json to be written"
        card.go.set()
        await record.flush()  # what the daemon's stop awaits
        assert card.at_once == 1
        assert [list(json.loads(d)["roots"][ROOT].items()) for d in card.written] == [
            [("virtual-kettle", SHAPE)],
            [("virtual-kettle", OTHER), ("virtual-tea", SHAPE)]]  # the two saves: one write
        assert PublishedDevices(path).shape_of(ROOT, "virtual-kettle") == OTHER
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    run_async(main())


def test_a_failed_write_is_logged_and_written_at_the_next_save(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / FILE_NAME
    full = [True]

    def write(p: Path, data: bytes, mode: int, owner: tuple[int, int] | None) -> None:
        if full[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        p.write_bytes(data)

    async def main() -> None:
        record = PublishedDevices(path, write=write)
        record.note(ROOT, "virtual-kettle", SHAPE)
        with caplog.at_level(logging.WARNING):
            record.save()
            await record.flush()
        assert f"cannot write {path} (No space left on device)" in caplog.text
        full[0] = False
        record.save()  # nothing new, but the record was never written
        await record.flush()
        assert PublishedDevices(path).devices(ROOT) == ["virtual-kettle"]

    run_async(main())


@pytest.mark.skipif(os.geteuid() != 0, reason=ROOT_ONLY)
def test_the_record_belongs_to_the_state_directorys_owner(tmp_path: Path) -> None:
    """A daemon run as root keeps the service user's state directory the service user's:
    the record is written as that user's, private to it."""
    path = tmp_path / FILE_NAME

    async def main() -> None:
        record = PublishedDevices(path, owner=(NOBODY, NOBODY))
        record.note(ROOT, "virtual-kettle", SHAPE)
        record.save()
        await record.flush()

    run_async(main())
    st = path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY, NOBODY, 0o600)
    assert PublishedDevices(path).devices(ROOT) == ["virtual-kettle"]
