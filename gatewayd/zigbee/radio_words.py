"""The hub's words for what goes wrong with a running radio, for the hub's Zigbee status
(``zigbee/status``, systemd's ``STATUS=``, ``gatewayctl status``) and the cloud's
notification; what the radio library raised goes to the log only.

bellows hands the bridge its ``NcpFailure`` with an NCP reset code both when the NCP
reset (an unsolicited RSTACK: ``RESET_WATCHDOG``, ``RESET_SOFTWARE``, ...) and when the
*host* gave up: no ACK for a frame after its retries (the NCP frozen, or a line so
garbled that nothing it sends arrives whole) is
``ERROR_EXCEEDED_MAXIMUM_ACK_TIMEOUT_COUNT``. That one is not a reset. Imports no
zigpy or bellows: the codes are compared as numbers.
"""

from __future__ import annotations

# bellows' NcpResetCode.ERROR_EXCEEDED_MAXIMUM_ACK_TIMEOUT_COUNT (ASH: the host's retries
# of a frame all went unacknowledged; the NCP's own ERROR frame uses it for the same).
ACK_TIMEOUTS = 0x51

CLOSED = "the radio closed the connection"
RESET = "the radio reset itself"
SILENT = "the radio stopped answering"
FAILED = "the connection to the radio failed"


def radio_lost(exc: BaseException | None) -> str:
    """What the radio library's ``connection_lost(exc)`` means, in the hub's words."""
    if exc is None:
        return CLOSED
    code = getattr(exc, "code", None)  # bellows' NcpFailure
    if code is None:
        return FAILED
    try:
        silent = int(code) == ACK_TIMEOUTS
    except (TypeError, ValueError):  # a code that is not a number: not bellows' reset code
        return FAILED
    return SILENT if silent else RESET
