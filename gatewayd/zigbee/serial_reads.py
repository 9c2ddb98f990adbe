"""The radio's serial line read a few kilobytes at a time, not 256 KiB.

serialx's serial-port transport (``os.read``) and asyncio's socket transport under its
``socket://`` and ``tcp://`` ports ask for 256 KiB with every read. Python allocates that
much for each read and shrinks it to what came, a few dozen bytes of ASH frames; the
unit sets glibc's mmap threshold to 128 KiB (``MALLOC_MMAP_THRESHOLD_``, for the memory
a burst leaves behind: bench/README.md, "Memory"), so each read was also an ``mmap``, a
page fault, an ``mremap`` and a ``munmap``: four more trips into the kernel, one set per
report at a paced rate (strace, bench/README.md "The serial line's reads"). A UART at
115 200 baud brings 11.5 KB a second, and a read that leaves bytes behind is followed by
another as soon as the loop polls, so :data:`READ_SIZE` loses nothing.

Both transports read their ``max_size`` attribute at every read; :func:`small_reads`
sets it on the instance. A transport without that attribute (an ESPHome port, another
serialx) reads as it was written to.
"""

from __future__ import annotations

from typing import Any

READ_SIZE = 4096


def small_reads(serial: Any) -> bool:
    """Have the transport bellows reads (its ``AshProtocol``'s ``_transport``) read at most
    :data:`READ_SIZE` bytes at a time; for a TCP port, the asyncio transport below it.
    False if neither has a ``max_size`` to set."""
    inner = getattr(serial, "_tcp_transport", None) or serial
    if inner is None or not isinstance(getattr(type(inner), "max_size", None), int):
        return False
    inner.max_size = READ_SIZE
    return True
