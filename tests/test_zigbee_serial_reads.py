"""The radio's serial line read a few kilobytes at a time (gatewayd/zigbee/serial_reads.py).

A serial port: zigpy's ``create_serial_connection`` (what bellows opens a port with) on
a pseudo-terminal, a burst written at the other end. A ``tcp://`` port: unmodified
bellows on the EZSP NCP emulator, a plug joined through reads cut to a few bytes. Both
with ``READ_SIZE`` made small so that a read left at serialx's and asyncio's 256 KiB
would show.
"""

from __future__ import annotations

import asyncio
import os
import tty
from pathlib import Path
from typing import Any

import pytest
import zigpy.serial

from gatewayd.zigbee import serial_reads
from gatewayd.zigbee.serial_reads import small_reads
from tests.helpers import run_async
from tests.test_bridge import join, started
from tests.zigbee_radios import Radio

pytestmark = pytest.mark.timeout(120)


class Reads(asyncio.Protocol):
    def __init__(self, want: int) -> None:
        self.chunks: list[bytes] = []
        self.want = want
        self.done = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        if sum(map(len, self.chunks)) >= self.want:
            self.done.set()


def test_a_serial_port_reads_at_most_read_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serial_reads, "READ_SIZE", 64)
    burst = bytes(range(256)) * 40  # 10 240 bytes, more than a terminal's buffer

    async def main() -> None:
        ncp, host = os.openpty()
        tty.setraw(ncp)
        try:
            reads = Reads(len(burst))
            transport, _ = await zigpy.serial.create_serial_connection(
                asyncio.get_running_loop(), lambda: reads, url=os.ttyname(host),
                baudrate=115200)
            try:
                assert small_reads(transport)
                # the NCP's side writes in a thread: a terminal takes 4 KB at a time
                writing = asyncio.create_task(asyncio.to_thread(os.write, ncp, burst))
                async with asyncio.timeout(20):
                    await reads.done.wait()
                await writing
            finally:
                transport.close()
        finally:
            os.close(ncp)
            os.close(host)
        assert b"".join(reads.chunks) == burst
        assert max(map(len, reads.chunks)) <= 64

    run_async(main(), timeout=30.0)


def test_a_tcp_radio_reads_at_most_read_size(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serial_reads, "READ_SIZE", 5)  # an ASH frame is longer

    async def main() -> None:
        async with Radio("bellows", tmp_path) as radio:
            bridge, pub = await started(radio)
            try:
                ash: Any = bridge.fast.frames.ash
                assert ash is not None
                sizes: list[int] = []
                received = ash.protocol.data_received

                def read(data: bytes) -> None:
                    sizes.append(len(data))
                    received(data)

                ash.protocol.data_received = read
                await join(bridge, pub, "plug")  # an interview: frames cut across reads
                assert sizes and max(sizes) <= 5
            finally:
                await bridge.stop()

    run_async(main(), timeout=90.0)


def test_a_transport_without_max_size_is_left_alone() -> None:
    class Esphome:
        pass

    port = Esphome()
    assert not small_reads(port) and not hasattr(port, "max_size")
    assert not small_reads(None)
