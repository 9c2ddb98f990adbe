"""The hub's words for what goes wrong with the radio, for the hub's Zigbee status
(``zigbee/status``, systemd's ``STATUS=``, ``gatewayctl status``) and the cloud's
notification; what the radio library or the OS raised goes to the log only.

Opening it (:func:`port_error`, :func:`silent`, for :mod:`~gatewayd.zigbee.radio`): the
OS's refusal by its errno (``str(OSError)`` showed ``[Errno 13] Permission denied:
'/dev/ttyUSB0'``), and a radio that does not answer by the kind of device: the baud rate
means something on a serial port only, not at ``tcp://`` or ``socket://``.

A running radio lost (:func:`radio_lost`, for the bridge): bellows hands the bridge its
``NcpFailure`` with an NCP reset code both when the NCP reset (an unsolicited RSTACK:
``RESET_WATCHDOG``, ``RESET_SOFTWARE``, ...) and when the *host* gave up: no ACK for a
frame after its retries (the NCP frozen, or a line so garbled that nothing it sends
arrives whole) is ``ERROR_EXCEEDED_MAXIMUM_ACK_TIMEOUT_COUNT``. That one is not a reset.

Imports no zigpy or bellows: the codes are compared as numbers.
"""

from __future__ import annotations

import errno

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


_DENIED = "permission denied"
_PORT_ERRORS = {
    errno.EACCES: _DENIED,
    errno.EPERM: _DENIED,
    errno.EBUSY: "it is busy: another program has it open",
    errno.EIO: "input/output error: the stick or its cable may be failing",
    errno.ENODEV: "there is no device behind it: is the Zigbee radio plugged in?",
    errno.ENXIO: "there is no device behind it: is the Zigbee radio plugged in?",
    errno.ENOTTY: "it is not a serial port",  # a file, /dev/null: "Inappropriate ioctl"
}


def port_error(exc: OSError, serial: bool) -> str:
    """Why the OS would not let the hub open or use the radio's port (``serial``: a device
    file, not ``tcp://``), from its errno; the OS's own short text for the others."""
    words = _PORT_ERRORS.get(exc.errno or 0)
    if words == _DENIED and serial:
        return f"{_DENIED}: the service user cannot open it; add it to the dialout group"
    return words or exc.strerror or type(exc).__name__


def silent(radio: str, path: str, where: str, baudrate: int, serial: bool) -> str:
    """The radio on ``path`` did not answer its library's first frames."""
    if radio == "virtual":
        return "the virtual radio does not answer"
    if serial:
        return (f"the radio on {path} does not answer ({where}); check zigbee.radio = "
                f"{radio!r} and zigbee.baudrate = {baudrate}")
    return (f"the radio at {path} does not answer ({where}); check zigbee.radio = {radio!r} "
            "and that what listens there is that radio's serial bridge")
