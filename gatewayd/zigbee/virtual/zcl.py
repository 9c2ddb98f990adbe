"""ZCL values for the simulated devices: names to zigpy definitions, JSON to wire types,
and the general (profile-wide) commands a device's firmware answers.

What is injected (a raw attribute value, a command's arguments, an install code) is
checked here, and refused with a message naming it and what it must be: zigpy's own
errors say which Python conversion failed, which means nothing to whoever typed it.
Plain functions over zigpy's cluster registry; :mod:`.device` holds the device itself.
"""

from __future__ import annotations

import enum
import functools
import json
import math
from collections.abc import Callable
from typing import Any

import zigpy.types as t
import zigpy.util
from zigpy.zcl import Cluster, foundation

from gatewayd.runtime.jsonbody import BadBody
from gatewayd.zigbee.inputs import BridgeError, parse_install_code

ClusterKey = tuple[int, bool, int]  # endpoint, is_server, cluster id

_CLUSTERS_BY_NAME: dict[str, type[Cluster]] = {
    cls.ep_attribute: cls for cls in Cluster._registry.values() if cls.ep_attribute
}


class VirtualRadioError(ValueError):
    """An injected event that cannot happen (closed permit join, unknown device...): the
    caller's mistake, so front ends answer it like any other bad value."""


class NetworkInUse(PermissionError):
    """The network is held by another application (as a serial port another program has
    open): told apart from a world file that cannot be written."""


def world_file_error(path: object, exc: BaseException) -> VirtualRadioError:
    """The world file at ``path`` cannot be loaded (``exc``): said without Python's text."""
    if isinstance(exc, OSError):  # not a damaged file: one that cannot be read at all
        return VirtualRadioError(f"cannot read the virtual radio's world file {path}: "
                                 f"{exc.strerror or type(exc).__name__}")
    if isinstance(exc, VirtualRadioError | BadBody):
        why = str(exc)  # ours: "it is not JSON", "not an IEEE address: 'x'"
    elif isinstance(exc, KeyError):
        why = f"{exc.args[0]!r} is missing"
    else:
        why = "its entries do not have the form the virtual radio writes"
    return VirtualRadioError(f"{path} is not a virtual radio world file ({why}); delete it "
                             "to start an empty one")


def cluster_class(name: str) -> type[Cluster]:
    try:
        return _CLUSTERS_BY_NAME[name]
    except KeyError:
        raise VirtualRadioError(f"unknown cluster {name!r}") from None


def attribute(cls: type[Cluster], name: str) -> foundation.ZCLAttributeDef:
    attr = getattr(cls.AttributeDefs, name, None) if not name.startswith("_") else None
    if not isinstance(attr, foundation.ZCLAttributeDef):
        raise VirtualRadioError(f"cluster {cls.ep_attribute!r} has no attribute {name!r}")
    return attr


def attribute_id(cluster: str, name: str) -> int:
    return int(attribute(cluster_class(cluster), name).id)


def check_attribute(cluster: str, name: str, *, integer: bool = False
                    ) -> foundation.ZCLAttributeDef:
    """The ZCL definition of ``cluster.name``; VirtualRadioError naming what is unknown, or
    with ``integer`` (a report stream's numbered values) an attribute that is no integer."""
    definition = attribute(cluster_class(cluster), name)
    if integer and not issubclass(definition.type, t.FixedIntType):
        raise VirtualRadioError(f"{cluster}.{name} is {expected(definition.type)}; a stream "
                                "sends numbered integers: choose an integer attribute")
    return definition


def parse_eui64(value: str | t.EUI64) -> t.EUI64:
    if isinstance(value, t.EUI64):
        return value
    text = value.strip().lower().replace("-", ":")
    if ":" not in text and len(text) == 16:
        text = ":".join(text[i:i + 2] for i in range(0, 16, 2))
    try:
        return t.EUI64.convert(text)
    except (ValueError, TypeError):
        raise VirtualRadioError(f"not an IEEE address: {value!r}") from None


def install_code_key(text: str) -> t.KeyData:
    """The link key of an install code as printed (hex, its CRC last); VirtualRadioError
    in the words the hub's own check uses (:func:`gatewayd.zigbee.inputs.parse_install_code`,
    one check for the device's side and the hub's)."""
    if not isinstance(text, str):
        raise VirtualRadioError(f"install_code must be text, got {_got(text)}")
    try:
        code = parse_install_code(text)
    except BridgeError as exc:
        raise VirtualRadioError(f"install_code: {exc}") from None
    return zigpy.util.convert_install_code(code)


def typed(attr: foundation.ZCLAttributeDef, value: Any) -> Any:
    """A stored (JSON) value as the attribute's zigpy type, ready to serialize."""
    return _as_type(attr.type, value)


def _as_type(typ: type[Any], value: Any) -> Any:
    if isinstance(value, typ):
        return value
    if issubclass(typ, t.EUI64):
        return t.EUI64.convert(value)
    if isinstance(value, bool):
        value = int(value)
    return typ(value)


def expected(typ: type[Any]) -> str:
    """What a JSON value of the zigpy type ``typ`` must be, as a message says it."""
    if issubclass(typ, t.EUI64):
        return "an IEEE address such as 00:12:4b:00:01:02:03:04"
    if issubclass(typ, t.FixedIntType):  # enums and bitmaps are integers on the wire too
        return f"an integer from {typ.min_value} to {typ.max_value}{_names(typ)}"
    if issubclass(typ, float):
        return "a number"
    if issubclass(typ, str):
        return "text"
    return f"a ZCL {typ.__name__}"


def _names(typ: type[Any]) -> str:
    """How an enum's values may also be given (zigpy converts a member's name; a bitmap
    takes numbers only)."""
    if not issubclass(typ, enum.Enum) or issubclass(typ, enum.Flag):
        return ""
    return f" or a name such as {', '.join(m.name for m in list(typ)[:4])}"


def _got(value: Any) -> str:
    """A JSON value as a message shows it: text quoted and cut short, numbers as they
    are, anything else by its JSON type (never Python's repr)."""
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:40] + "...")
    if isinstance(value, bool | int | float) or value is None:
        return json.dumps(value)
    if isinstance(value, dict):
        return "an object"
    return "an array" if isinstance(value, list) else "a value of another type"


def checked(typ: type[Any], value: Any, what: str) -> Any:
    """``value`` as ``typ``; VirtualRadioError ``<what> must be <expected>, got <value>``
    if it is not one."""
    try:
        converted = _as_type(typ, value)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
        pass
    else:
        if _as_promised(typ, value):
            return converted
    raise VirtualRadioError(f"{what} must be {expected(typ)}, got {_got(value)}")


def _as_promised(typ: type[Any], value: Any) -> bool:
    """Whether ``value`` is what :func:`expected` says ``typ`` takes: zigpy converts more
    (text from anything, by ``str()``)."""
    if issubclass(typ, str):
        return isinstance(value, str)
    if issubclass(typ, t.FixedIntType):
        return _an_integer(typ, value)
    if issubclass(typ, float):  # JSON numbers only: zigpy also takes "12" and true
        return isinstance(value, int | float) and not isinstance(value, bool) \
            and math.isfinite(value)
    return True


def _an_integer(typ: type[Any], value: Any) -> bool:
    """Whether ``value`` is what :func:`expected` promises for an integer type: zigpy's
    types also take 21.7 (as 21), "12" (as 12), true (as 1) and, for flags, -1 (as all
    bits set)."""
    if isinstance(value, str):  # a member's name, for an enumeration
        return (issubclass(typ, enum.Enum) and not issubclass(typ, enum.Flag)
                and value in typ.__members__)
    if isinstance(value, bool):
        return issubclass(typ, t.Bool)  # a boolean attribute: JSON's true and false
    if isinstance(value, float):
        if not value.is_integer():
            return False
        value = int(value)
    return not isinstance(value, int) or typ.min_value <= value <= typ.max_value


def command_payload(cmd: foundation.ZCLCommandDef, args: dict[str, Any], what: str) -> bytes:
    """The payload of the cluster command ``cmd`` (``what``: its name in messages, such as
    ``level.step``) from JSON arguments; VirtualRadioError naming the argument that is
    unknown, missing or not of the field's type."""
    fields = cmd.schema.fields
    takes = ", ".join(f.name for f in fields) or "no arguments"
    unknown = sorted(set(args) - {f.name for f in fields})
    if unknown:
        raise VirtualRadioError(f"{what} takes no {', '.join(unknown)} (it takes {takes})")
    values = {}
    for field in fields:
        if field.name in args:
            values[field.name] = checked(field.type, args[field.name],
                                         f"{what}: {field.name}")
        elif not field.optional:
            raise VirtualRadioError(f"{what}: {field.name} is required "
                                    f"({expected(field.type)})")
    try:
        return bytes(cmd.schema(**values).serialize())
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
        raise VirtualRadioError(f"{what}: these arguments do not make a {what} command "
                                f"(it takes {takes})") from None


@functools.cache
def attribute_names(cluster_id: int) -> tuple[str, dict[int, str]]:
    """A cluster's name and attribute names by id. Cached: rebuilding them for every
    device made saving a 200-device world take 29 ms, on the event loop."""
    cls = Cluster._registry[cluster_id]
    return cls.ep_attribute, {a.id: a.name for a in cls.AttributeDefs}


def plain(value: Any) -> Any:
    """A zigpy value as JSON: EUI64/keys as text, enums and bitmaps as numbers."""
    if isinstance(value, t.EUI64):
        return str(value)
    if isinstance(value, bool | str | float):
        return value
    if isinstance(value, int):
        return int(value)
    return str(value)


def general_command(key: ClusterKey, values: dict[int, Any], cls: type[Cluster],
                    command: foundation.GeneralCommand, args: Any,
                    reporting: set[tuple[int, int, int]],
                    changed: Callable[[], None]) -> tuple[int, bytes] | None:
    """A general command on one cluster of a device (``values`` is its attribute state):
    the response's command id and payload, or None if the firmware does not implement it.
    Configured reporting is added to ``reporting``; ``changed`` is told of writes."""
    gc = foundation.GeneralCommand
    if command == gc.Read_Attributes:
        records = []
        for attr_id in args.attribute_ids:
            attr = cls.attributes.get(attr_id)
            if attr is None or attr_id not in values:
                records.append(foundation.ReadAttributeRecord(
                    attrid=attr_id, status=foundation.Status.UNSUPPORTED_ATTRIBUTE))
                continue
            records.append(foundation.ReadAttributeRecord(
                attrid=attr_id, status=foundation.Status.SUCCESS,
                value=foundation.TypeValue(type=attr.zcl_type,
                                           value=typed(attr, values[attr_id]))))
        return gc.Read_Attributes_rsp, t.List[foundation.ReadAttributeRecord](
            records).serialize()
    if command in (gc.Write_Attributes, gc.Write_Attributes_Undivided):
        result = foundation.WriteAttributesResponse()
        for rec in args.attributes:
            attr = cls.attributes.get(rec.attrid)
            if attr is None:
                status = foundation.Status.UNSUPPORTED_ATTRIBUTE
            elif not attr.access & foundation.ZCLAttributeAccess.Write:
                status = foundation.Status.READ_ONLY
            else:
                values[rec.attrid] = plain(rec.value.value)
                status = foundation.Status.SUCCESS
            result.append(foundation.WriteAttributesStatusRecord(status=status,
                                                                 attrid=rec.attrid))
        changed()
        return gc.Write_Attributes_rsp, result.serialize()
    if command == gc.Configure_Reporting:
        configured = []
        for cfg in args.config_records:
            if cfg.attrid in values:
                reporting.add((key[0], key[2], cfg.attrid))
                status = foundation.Status.SUCCESS
            else:
                status = foundation.Status.UNSUPPORTED_ATTRIBUTE
            configured.append(foundation.ConfigureReportingResponseRecord(
                status=status, direction=foundation.ReportingDirection.SendReports,
                attrid=cfg.attrid))
        return gc.Configure_Reporting_rsp, foundation.ConfigureReportingResponse(
            configured).serialize()
    return None
