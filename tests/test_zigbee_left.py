"""zigbee-left.json: the devices that left, across restarts (gatewayd/zigbee/left.py)."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest

from gatewayd.zigbee.left import LEFT_FILE, MAX_BYTES, LeftDevices
from tests.helpers import run_async

A = "8b:b3:00:00:00:00:00:01"
B = "8b:b3:00:00:00:00:00:02"


def test_what_left_is_kept_in_a_private_file_until_it_rejoins(tmp_path: Path) -> None:
    path = tmp_path / LEFT_FILE

    async def main() -> None:
        left = LeftDevices(path)
        assert A not in left and not path.exists()
        left.add(A)
        left.add(B)
        await left.written()  # written off the loop (the bridge's stop awaits it too)
        assert json.loads(path.read_text()) == {"left": [A, B]}
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        left.discard(A)
        await left.flush()
        again = LeftDevices(path)  # a restart
        assert B in again and A not in again
        again.clear()  # a full reset
        await again.flush()
        assert not path.exists() and B not in again

    run_async(main())


@pytest.mark.parametrize(("content", "problem"), [
    (b"{not json", "not a JSON object"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"left": "8b:b3:00:00:00:00:00:01"}', "is not a list of IEEE addresses"),
    (b'{"left": ["8B:B3:00:00:00:00:00:01"]}', "is not a list of IEEE addresses"),
    (b'{"left": [1]}', "is not a list of IEEE addresses"),
    (b" " * (MAX_BYTES + 1), "larger than 256 KiB"),
    (b"[" * 100_000, "not a JSON object"),  # json's RecursionError, not a ValueError
])
def test_a_bad_file_is_named_in_the_log_and_changes_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, problem: str) -> None:
    """A damaged file must never keep the radio from starting: it is read as empty."""
    path = tmp_path / LEFT_FILE
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="gatewayd.zigbee.ieee_file"):
        left = LeftDevices(path)
    assert A not in left
    assert path.read_bytes() == content, "reading must not rewrite it"
    (record,) = caplog.records
    assert str(path) in record.getMessage() and problem in record.getMessage()
