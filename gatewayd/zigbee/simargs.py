"""The arguments of simulated-radio events, checked in one place.

``gatewayctl zigbee sim`` (the hub's actions, :data:`gatewayd.zigbee.simlink.SIM_ACTIONS`)
and the NCP emulator's control port (its ops, :mod:`gatewayd.simulator.ncp.control`) take
the same arguments: an IEEE address, a device kind, a cluster... :data:`ARGS` says once
what each must be, and :func:`check_args` refuses a call with a message naming the
argument (``join: kind is required (one of button, ...)``, ``ieee: must be text such as
...``) before the radio sees it, so that no Python exception text (a missing positional
argument, ``'list' object has no attribute 'strip'``) reaches the user. Meanings and most
ranges (an unknown device, a cluster the device lacks) stay with the radios, which name
them; ``lqi``'s range is here, so that neither radio takes 300 as 255.

Standard library and the device catalog (plain data) only: the hub imports this without
zigpy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from gatewayd.zigbee.virtual.catalog import KINDS


class ArgumentError(ValueError):
    """An argument missing, unknown or of the wrong type; the message names it."""


@dataclass(frozen=True)
class Arg:
    expect: str  # what the value must be, as the message says it
    accepts: Callable[[Any], bool]


@dataclass(frozen=True)
class Signature:
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    # Where an argument means something else for this call (noise's rate is not a
    # stream's rate): its own description.
    own: tuple[tuple[str, Arg], ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        return self.required + self.optional


def _text(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _flag(value: Any) -> bool:
    return isinstance(value, bool)


def _or_null(accepts: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or accepts(value)


def _kind(value: Any) -> bool:
    return isinstance(value, str) and value in KINDS


FAULT_FLAG = Arg("true or false", _flag)
# The emulator's advice when a join finds permit join closed: its control port's own key,
# which the hub's ``zigbee sim join`` does not take (the link leaves the advice out).
WAIT_HINT = " (pass wait: true to wait in pairing mode)"
ARGS: dict[str, Arg] = {
    "kind": Arg(f"one of {', '.join(sorted(KINDS))}", _kind),
    "ieee": Arg("text such as 00:12:4b:00:01:02:03:04", _text),
    "install_code": Arg("hex text: the install code from the device's label, with its CRC",
                        _text),
    "wait": Arg("true or false", _flag),
    "silent": Arg("true or false", _flag),
    "lqi": Arg("an integer from 0 to 255", lambda v: _integer(v) and 0 <= v <= 255),
    "cluster": Arg("text: a zigpy cluster name such as on_off", _text),
    "attributes": Arg('an object of attribute names and raw values, such as {"on_off": 1}',
                      lambda v: isinstance(v, dict) and bool(v)),
    "endpoint": Arg("an endpoint number, or null for the first with the cluster",
                    _or_null(_integer)),
    "command": Arg("text: a zigpy command name such as toggle", _text),
    "args": Arg("an object of the command's arguments, or null",
                _or_null(lambda v: isinstance(v, dict))),
    "count": Arg("an integer: how many reports", _integer),
    "rate": Arg("a number: reports per second (0: as fast as they go)", _number),
    "attribute": Arg("text: a zigpy attribute name such as active_power", _text),
    "start_at": Arg("a number (the event loop's clock), or null for now",
                    _or_null(_number)),
    "modulo": Arg("an integer", _integer),
    "offset": Arg("an integer", _integer),
    "ms": Arg("a number of milliseconds from 0 to 60000, such as 200", _number),
    "reset": FAULT_FLAG, "drop": FAULT_FLAG, "unplug": FAULT_FLAG, "replug": FAULT_FLAG,
    "noise": Arg("a number from 0 up to 1, such as 0.01", _number),
    "delay_ms": Arg("a number of milliseconds from 0 to 60000", _number),
}
NOISE_RATE = Arg("a number from 0 up to 1: the share of bytes corrupted or lost, such as "
                 "0.01", _number)


def shown(value: Any) -> str:
    """A value as a message shows it: text quoted (and cut short), anything else by its
    JSON type, never Python's."""
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:40] + "...")
    if isinstance(value, bool):
        return "true or false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict):
        return "an empty object" if not value else "an object"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def _names(keys: Iterable[str]) -> str:
    return ", ".join(keys) or "nothing"


def check_args(name: str, args: dict[str, Any], signature: Signature) -> None:
    """Refuse ``args`` for the call ``name`` unless each is one it takes, of the right type,
    and every required one is there (ArgumentError naming the first that is not)."""
    unknown = sorted(set(args) - set(signature.keys))
    if unknown:
        raise ArgumentError(f"{name} takes no {', '.join(unknown)} (it takes "
                            f"{_names(signature.keys)})")
    own = dict(signature.own)
    for key in signature.required:
        if key not in args:
            raise ArgumentError(f"{name}: {key} is required "
                                f"({(own[key] if key in own else ARGS[key]).expect})")
    for key, value in args.items():
        arg = own[key] if key in own else ARGS[key]
        if not arg.accepts(value):
            raise ArgumentError(f"{key}: must be {arg.expect}, got {shown(value)}")
