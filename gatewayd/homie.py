"""The 2Smart/Homie 3.0.1 device model: devices, nodes and properties as plain objects.

A :class:`Device` renders itself to the retained MQTT messages of the 2Smart convention
(``<root>/sweet-home/<device-id>/...``); a :class:`Property` validates values against its
``$datatype``/``$format`` and parses ``/set`` payloads. Nothing here does I/O: the cloud
link decides when the messages go out.

Property *paths* address a property inside its device, exactly as its topic does after
``<root>/sweet-home/<device-id>/``: ``node/prop``, ``$options/prop``, ``$telemetry/prop``,
``node/$options/prop``, ``node/$telemetry/prop``.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

HOMIE_VERSION = "3.0.1"
ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]*[a-z0-9]$")
STATES = ("init", "ready", "disconnected", "sleeping", "lost", "alert")
GROUPS = ("$options", "$telemetry")  # 2Smart's property-format attribute groups
MAX_PAYLOAD = 65536  # a /set payload larger than this is refused unread
MAX_NUMBER = 400  # characters: any finite double written out without an exponent fits

# Error codes published on the errors topic: the 2Smart SDK's vocabulary, plus BUSY.
VALIDATION = "VALIDATION"
NOT_FOUND = "NOT_FOUND"
NOT_SETTABLE = "NOT_SETTABLE"
TIMEOUT = "TIMEOUT"
ERROR = "ERROR"
BUSY = "BUSY"

# ASCII digits only: \d would also take other scripts' digits, which int() reads too.
_INT = re.compile(r"^[+-]?[0-9]+$")
_FLOAT = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$")
_RANGE = re.compile(r"^(-?\d+(?:\.\d+)?):(-?\d+(?:\.\d+)?)$")
_COLOR_LIMITS = {"rgb": (255, 255, 255), "hsv": (360, 100, 100)}

SetHandler = Callable[[Any], Awaitable[Any]]


class ModelError(ValueError):
    """A device description that the convention does not allow (bad id, format, ...)."""


class CommandError(Exception):
    """A rejected command; published as ``{"code": code, "message": message}``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Datatype(enum.StrEnum):
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    STRING = "string"
    ENUM = "enum"
    COLOR = "color"


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT publication: QoS 1 unless said otherwise."""

    topic: str
    payload: str
    retain: bool = True
    qos: int = 1


def check_id(value: str, what: str = "id") -> str:
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise ModelError(f"{what} {value!r} must match {ID_RE.pattern} (lowercase letters, "
                         "digits, inner hyphens, at least 2 characters)")
    return value


def check_state(value: str) -> str:
    if value not in STATES:
        raise ModelError(f"state {value!r} must be one of {', '.join(STATES)}")
    return value


def _number_text(value: float) -> str:
    # Homie clients (and the 2Smart SDK's own validator) expect plain decimals, never
    # exponents: repr() gives the shortest round-tripping digits, Decimal writes them out.
    text = format(Decimal(repr(float(value))), "f")
    return text if "." in text else text + ".0"


class Property:
    """A property (or a ``$options``/``$telemetry`` entry, which share its format)."""

    def __init__(self, id: str, name: str = "", *,
                 datatype: Datatype | str = Datatype.STRING, format: str = "",
                 unit: str = "", settable: bool = False, retained: bool = True,
                 value: Any = None, on_set: SetHandler | None = None) -> None:
        self.id = check_id(id, "property id")
        self.name = name or id
        try:
            self.datatype = Datatype(datatype)
        except ValueError:
            raise ModelError(f"property {id!r}: datatype {datatype!r} must be one of "
                             f"{', '.join(d.value for d in Datatype)}") from None
        self.format = format
        self.unit = unit
        self.settable = settable
        self.retained = retained
        self.on_set = on_set
        self._range: tuple[float, float] | None = None
        self._choices: tuple[str, ...] = ()
        self._check_format()
        self.value: Any = None
        if value is not None:
            self.set(value)

    # ---- $format ------------------------------------------------------------------------

    def _check_format(self) -> None:
        fmt, dt = self.format, self.datatype
        where = f"property {self.id!r} ({dt.value})"
        if dt in (Datatype.INTEGER, Datatype.FLOAT):
            if fmt == "":
                return
            m = _RANGE.fullmatch(fmt)
            if not m:
                raise ModelError(f"{where}: $format {fmt!r} must be 'from:to', such as '0:100'")
            low, high = float(m.group(1)), float(m.group(2))
            if dt is Datatype.INTEGER and not (low.is_integer() and high.is_integer()):
                raise ModelError(f"{where}: $format {fmt!r} must use whole numbers")
            if low > high:
                raise ModelError(f"{where}: $format {fmt!r} has from > to")
            self._range = (low, high)
        elif dt is Datatype.ENUM:
            choices = tuple(fmt.split(",")) if fmt else ()
            if not choices or any(c == "" for c in choices):
                raise ModelError(f"{where}: $format must list the values, such as 'low,high'")
            if any(c != c.strip() for c in choices):
                # 'low, high' would make ' high' the value an app must send.
                raise ModelError(f"{where}: $format {fmt!r} has spaces around a value; "
                                 f"write the values without them, such as 'low,high'")
            if len(set(choices)) != len(choices):
                raise ModelError(f"{where}: $format {fmt!r} repeats a value")
            self._choices = choices
        elif dt is Datatype.COLOR:
            if fmt not in _COLOR_LIMITS:
                raise ModelError(f"{where}: $format must be 'rgb' or 'hsv'")
        elif fmt:
            raise ModelError(f"{where}: $format is not used with this datatype")

    # ---- values ---------------------------------------------------------------------------

    def validate(self, value: Any) -> Any:
        """The value in its canonical Python type; ValueError says what is wrong."""
        dt = self.datatype
        if dt is Datatype.BOOLEAN:
            if not isinstance(value, bool):
                raise ValueError(f"{self.id}: expected true or false, got {value!r}")
            return value
        if dt in (Datatype.INTEGER, Datatype.FLOAT):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{self.id}: expected a number, got {value!r}")
            if dt is Datatype.INTEGER:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError(f"{self.id}: expected a whole number, got {value!r}")
                value = int(value)
            else:
                value = float(value)
                if not math.isfinite(value):
                    raise ValueError(f"{self.id}: {value} is not a finite number")
            if self._range and not self._range[0] <= value <= self._range[1]:
                raise ValueError(f"{self.id}: {value} is outside the range {self.format}")
            return value
        if dt is Datatype.COLOR:
            return self._validate_color(value)
        if not isinstance(value, str):
            raise ValueError(f"{self.id}: expected text, got {value!r}")
        if len(value.encode("utf-8")) > MAX_PAYLOAD:
            raise ValueError(f"{self.id}: text longer than {MAX_PAYLOAD} bytes")
        if dt is Datatype.ENUM and value not in self._choices:
            raise ValueError(f"{self.id}: {value!r} is not one of {self.format}")
        return value

    def _validate_color(self, value: Any) -> tuple[int, int, int]:
        limits = _COLOR_LIMITS[self.format]
        if isinstance(value, str):
            parts: list[Any] = value.split(",")
            if not all(_INT.fullmatch(p.strip()) for p in parts):
                raise ValueError(f"{self.id}: color must be three whole numbers "
                                 f"'a,b,c' ({self.format}), got {value!r}")
            parts = [int(p) for p in parts]
        elif isinstance(value, tuple | list):
            parts = list(value)
        else:
            raise ValueError(f"{self.id}: expected a color ({self.format}), got {value!r}")
        if len(parts) != 3 or any(isinstance(p, bool) or not isinstance(p, int) for p in parts):
            raise ValueError(f"{self.id}: color must have three whole numbers ({self.format})")
        for part, limit in zip(parts, limits, strict=True):
            if not 0 <= part <= limit:
                bounds = ",".join(f"0-{x}" for x in limits)
                raise ValueError(f"{self.id}: color {tuple(parts)} outside {bounds} "
                                 f"({self.format})")
        return (parts[0], parts[1], parts[2])

    def set(self, value: Any) -> None:
        self.value = self.validate(value)

    def encode(self, value: Any) -> str:
        """The MQTT payload of a (validated) value."""
        value = self.validate(value)
        if self.datatype is Datatype.BOOLEAN:
            return "true" if value else "false"
        if self.datatype is Datatype.FLOAT:
            return _number_text(value)
        if self.datatype is Datatype.COLOR:
            return ",".join(str(p) for p in value)
        return str(value)

    @property
    def payload(self) -> str | None:
        return None if self.value is None else self.encode(self.value)

    def parse(self, payload: bytes | str) -> Any:
        """A ``/set`` payload as a value; CommandError(VALIDATION) if it does not fit."""
        if isinstance(payload, bytes):
            if len(payload) > MAX_PAYLOAD:
                raise CommandError(VALIDATION, f"payload longer than {MAX_PAYLOAD} bytes")
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                raise CommandError(VALIDATION, "payload is not UTF-8 text") from None
        else:
            text = payload
        dt = self.datatype
        try:
            if dt is Datatype.BOOLEAN:
                if text not in ("true", "false"):
                    raise ValueError(f"{self.id}: expected 'true' or 'false', got {text[:40]!r}")
                return self.validate(text == "true")
            if dt is Datatype.INTEGER:
                if len(text) > MAX_NUMBER or not _INT.fullmatch(text.strip()):
                    raise ValueError(f"{self.id}: expected a whole number, got {text[:40]!r}")
                return self.validate(int(text))
            if dt is Datatype.FLOAT:
                if len(text) > MAX_NUMBER or not _FLOAT.fullmatch(text.strip()):
                    raise ValueError(f"{self.id}: expected a number, got {text[:40]!r}")
                return self.validate(float(text))
            return self.validate(text)
        except ValueError as exc:
            raise CommandError(VALIDATION, str(exc)) from None

    def attributes(self) -> list[tuple[str, str]]:
        attrs = [("$name", self.name), ("$settable", _bool(self.settable)),
                 ("$retained", _bool(self.retained)), ("$datatype", self.datatype.value)]
        # An empty retained payload would *delete* the topic, so empty attributes are omitted.
        if self.unit:
            attrs.append(("$unit", self.unit))
        if self.format:
            attrs.append(("$format", self.format))
        return attrs

    def __repr__(self) -> str:
        return f"Property({self.id!r}, {self.datatype.value}, value={self.value!r})"


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _index(props: Iterable[Property], what: str) -> dict[str, Property]:
    out: dict[str, Property] = {}
    for prop in props:
        if prop.id in out:
            raise ModelError(f"{what}: duplicate property id {prop.id!r}")
        out[prop.id] = prop
    return out


class _Groups:
    """``$options`` and ``$telemetry``: shared by devices and nodes."""

    options: dict[str, Property]
    telemetry: dict[str, Property]

    def _group_messages(self, base: str) -> Iterator[Message]:
        for group, props in (("$options", self.options), ("$telemetry", self.telemetry)):
            if props:
                yield Message(f"{base}/{group}", ",".join(props))
            for prop in props.values():
                yield from _property_messages(f"{base}/{group}/{prop.id}", prop)

    def _group_paths(self, prefix: str) -> Iterator[tuple[str, Property]]:
        for group, props in (("$options", self.options), ("$telemetry", self.telemetry)):
            for prop in props.values():
                yield f"{prefix}{group}/{prop.id}", prop


def _property_messages(topic: str, prop: Property) -> Iterator[Message]:
    for attr, value in prop.attributes():
        yield Message(f"{topic}/{attr}", value)
    # A non-retained property carries events (a button press): it is no state to republish.
    payload = prop.payload if prop.retained else None  # read now: the latest value
    if payload is not None:
        yield Message(topic, payload)


class Node(_Groups):
    def __init__(self, id: str, name: str = "", *,
                 properties: Iterable[Property] = (), options: Iterable[Property] = (),
                 telemetry: Iterable[Property] = (), type: str = "",
                 state: str = "ready") -> None:
        self.id = check_id(id, "node id")
        self.name = name or id
        self.type = type
        self.state = check_state(state)
        self.properties = _index(properties, f"node {id!r}")
        self.options = _index(options, f"node {id!r} $options")
        self.telemetry = _index(telemetry, f"node {id!r} $telemetry")
        if not self.properties:
            # 2Smart creates a node only with at least one property.
            raise ModelError(f"node {id!r} needs at least one property")

    def messages(self, base: str) -> Iterator[Message]:
        yield Message(f"{base}/$name", self.name)
        if self.type:
            yield Message(f"{base}/$type", self.type)
        yield Message(f"{base}/$state", self.state)
        yield Message(f"{base}/$properties", ",".join(self.properties))
        yield from self._group_messages(base)
        for prop in self.properties.values():
            yield from _property_messages(f"{base}/{prop.id}", prop)

    def paths(self) -> Iterator[tuple[str, Property]]:
        for prop in self.properties.values():
            yield f"{self.id}/{prop.id}", prop
        yield from self._group_paths(f"{self.id}/")


class Device(_Groups):
    """A Homie device: the hub itself or a child ("Others") device."""

    def __init__(self, id: str, name: str, *, nodes: Iterable[Node] = (),
                 options: Iterable[Property] = (), telemetry: Iterable[Property] = (),
                 state: str = "ready", localip: str = "", mac: str = "", fw_name: str = "",
                 fw_version: str = "", implementation: str = "gatewayd") -> None:
        self.id = check_id(id, "device id")
        if not name:
            raise ModelError(f"device {id!r} needs a name")
        self.name = name
        self.state = check_state(state)
        self.localip = localip
        self.mac = mac
        self.fw_name = fw_name
        self.fw_version = fw_version
        self.implementation = implementation
        self.options = _index(options, f"device {id!r} $options")
        self.telemetry = _index(telemetry, f"device {id!r} $telemetry")
        self.nodes: dict[str, Node] = {}
        for node in nodes:
            if node.id in self.nodes or node.id.startswith("$"):
                raise ModelError(f"device {id!r}: duplicate node id {node.id!r}")
            self.nodes[node.id] = node

    def attributes(self) -> list[tuple[str, str]]:
        """Device attributes except ``$state`` (the link orders that one)."""
        attrs = [("$homie", HOMIE_VERSION), ("$name", self.name), ("$localip", self.localip),
                 ("$mac", self.mac), ("$fw/name", self.fw_name),
                 ("$fw/version", self.fw_version), ("$implementation", self.implementation),
                 ("$nodes", ",".join(self.nodes))]
        return [(k, v) for k, v in attrs if v]

    def base(self, root: str) -> str:
        return device_base(root, self.id)

    def messages(self, root: str) -> Iterator[Message]:
        """Every retained message of the device except ``$state``, rendered lazily.

        Values are read when each message is produced, so a consumer that sends as it
        iterates never sends a value older than the model's.
        """
        base = self.base(root)
        for attr, value in self.attributes():
            yield Message(f"{base}/{attr}", value)
        yield from self._group_messages(base)
        for node in self.nodes.values():
            yield from node.messages(f"{base}/{node.id}")

    def topics(self, root: str) -> set[str]:
        """Every retained topic the device may own (including unset values and ``$state``)."""
        base = self.base(root)
        topics = {m.topic for m in self.messages(root)} | {f"{base}/$state"}
        topics |= {f"{base}/{path}" for path, _ in self.paths()}
        return topics

    def paths(self) -> Iterator[tuple[str, Property]]:
        yield from self._group_paths("")
        for node in self.nodes.values():
            yield from node.paths()

    def find(self, path: str) -> Property:
        """The property at ``path`` (see the module doc); KeyError if there is none."""
        parts = path.split("/")
        if len(parts) == 2 and parts[0] in GROUPS:
            group = self.options if parts[0] == "$options" else self.telemetry
            return group[parts[1]]
        node = self.nodes[parts[0]]
        if len(parts) == 2:
            return node.properties[parts[1]]
        if len(parts) == 3 and parts[1] in GROUPS:
            group = node.options if parts[1] == "$options" else node.telemetry
            return group[parts[2]]
        raise KeyError(path)

    def __repr__(self) -> str:
        return f"Device({self.id!r}, nodes={list(self.nodes)})"


# ---- topics ------------------------------------------------------------------------------

def device_base(root: str, device_id: str) -> str:
    """``<root>/sweet-home/<device-id>``: every topic of the device is under it."""
    return f"{root}/sweet-home/{device_id}"


def set_filters(root: str, device_id: str) -> list[str]:
    """Subscriptions that carry every ``/set`` of a device (properties, options, telemetry)."""
    base = device_base(root, device_id)
    return [f"{base}/+/+/set", f"{base}/+/+/+/set"]


def parse_set_topic(root: str, topic: str) -> tuple[str, str] | None:
    """``(device_id, path)`` of a ``/set`` topic under ``root``, else None."""
    prefix = f"{root}/sweet-home/"
    if not topic.startswith(prefix) or not topic.endswith("/set"):
        return None
    parts = topic[len(prefix):-len("/set")].split("/")
    if len(parts) not in (3, 4) or any(p == "" for p in parts):
        return None
    return parts[0], "/".join(parts[1:])


def error_topic(root: str, device_id: str, path: str) -> str:
    return f"{root}/errors/sweet-home/{device_id}/{path}"


class ChildPublisher(Protocol):
    """What a provider of child devices (the Zigbee bridge, the virtual-device host) needs
    from whatever publishes devices; :class:`gatewayd.cloud.link.CloudLink` provides it."""

    def add_device(self, device: Device) -> None: ...

    def remove_device(self, device_id: str) -> None: ...

    def set_value(self, device_id: str, node_id: str, property_id: str, value: Any) -> None: ...

    def set_state(self, device_id: str, state: str) -> None: ...
