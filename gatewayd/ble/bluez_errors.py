"""BlueZ's D-Bus errors as exceptions sdbus raises and our GATT objects raise back.

A GATT callback that raises one of these answers the phone with that ATT error, through
bluetoothd; :data:`GONE` groups the errors that mean "that object or bluetoothd is gone".
"""

from __future__ import annotations

from sdbus import (
    DbusFailedError,
    DbusNameHasNoOwnerError,
    DbusServiceUnknownError,
    DbusUnknownMethodError,
    DbusUnknownObjectError,
)


class BluezError(DbusFailedError):
    """``org.bluez.Error.Failed``; the base of the other BlueZ errors here.

    Raised from a read/write handler, bluetoothd answers the ATT request with the application
    error code in the message if it is one (``BluezError("0x80")`` .. ``"0x9f"``), else 0x80.
    """

    dbus_error_name = "org.bluez.Error.Failed"


class NotPermittedError(BluezError):
    """ATT "read/write not permitted"."""

    dbus_error_name = "org.bluez.Error.NotPermitted"


class NotAuthorizedError(BluezError):
    dbus_error_name = "org.bluez.Error.NotAuthorized"


class InvalidValueLengthError(BluezError):
    dbus_error_name = "org.bluez.Error.InvalidValueLength"


class InvalidOffsetError(BluezError):
    dbus_error_name = "org.bluez.Error.InvalidOffset"


class InProgressError(BluezError):
    dbus_error_name = "org.bluez.Error.InProgress"


class NotSupportedError(BluezError):
    dbus_error_name = "org.bluez.Error.NotSupported"


class DoesNotExistError(BluezError):
    dbus_error_name = "org.bluez.Error.DoesNotExist"


class AlreadyExistsError(BluezError):
    dbus_error_name = "org.bluez.Error.AlreadyExists"


class InvalidArgumentsError(BluezError):
    dbus_error_name = "org.bluez.Error.InvalidArguments"


class InvalidLengthError(BluezError):
    dbus_error_name = "org.bluez.Error.InvalidLength"


class NotReadyError(BluezError):
    dbus_error_name = "org.bluez.Error.NotReady"


# Unregistering when bluetoothd, the adapter or the registration is already gone has nothing
# left to undo.
GONE = (DoesNotExistError, DbusServiceUnknownError, DbusNameHasNoOwnerError,
         DbusUnknownObjectError, DbusUnknownMethodError)
