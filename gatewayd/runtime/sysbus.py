"""The state of a connection to the system D-Bus, for every part of the hub that holds one.

NetworkManager's side stops the hub when its connection ends (the D-Bus daemon restarted);
BLE's side then skips unregistering from bluetoothd, which has already forgotten what the
ended connection registered: a call on it only fails.
"""

from __future__ import annotations

import errno
from typing import Any

from sdbus import DbusNoReplyError, SdBusLibraryError

# sd-bus fails every call still waiting for a reply with this text when its connection ends;
# a bus daemon that is merely slow answers "Method call timed out" instead.
_TERMINATED = "Connection terminated"
# What sd-bus returns for a call on a connection that has ended or is being torn down.
_ENDED = frozenset({errno.ENOTCONN, errno.ECONNRESET, errno.EPIPE})


def bus_lost(bus: Any) -> bool:
    """The bus connection has ended (sd-bus answers ENOTCONN from then on)."""
    try:
        bus.get_fd()
    except SdBusLibraryError:
        return True
    return False


def ended_with_bus(exc: BaseException) -> bool:
    """A call that failed because the bus connection ended, while it waited (no reply) or
    before it was sent (ENOTCONN, ECONNRESET, EPIPE): the connection may still be closing,
    so :func:`bus_lost` can say no a moment longer."""
    if isinstance(exc, DbusNoReplyError):
        return _TERMINATED in str(exc)
    if not isinstance(exc, SdBusLibraryError):
        return False
    # sdbus carries the errno only in its text ("... returned error number: 107").
    number = str(exc).rpartition("error number: ")[2]
    return number.isdigit() and int(number) in _ENDED
