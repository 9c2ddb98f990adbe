"""ZCL values for the simulated devices: names to zigpy definitions, JSON to wire types,
and the general (profile-wide) commands a device's firmware answers.

Plain functions over zigpy's cluster registry; :mod:`.device` holds the device itself.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import zigpy.types as t
from zigpy.zcl import Cluster, foundation

ClusterKey = tuple[int, bool, int]  # endpoint, is_server, cluster id

_CLUSTERS_BY_NAME: dict[str, type[Cluster]] = {
    cls.ep_attribute: cls for cls in Cluster._registry.values() if cls.ep_attribute
}


class VirtualRadioError(ValueError):
    """An injected event that cannot happen (closed permit join, unknown device...): the
    caller's mistake, so front ends answer it like any other bad value."""


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


def check_attribute(cluster: str, name: str) -> foundation.ZCLAttributeDef:
    """The ZCL definition of ``cluster.name``; VirtualRadioError naming what is unknown."""
    return attribute(cluster_class(cluster), name)


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


def typed(attr: foundation.ZCLAttributeDef, value: Any) -> Any:
    """A stored (JSON) value as the attribute's zigpy type, ready to serialize."""
    if isinstance(value, attr.type):
        return value
    if issubclass(attr.type, t.EUI64):
        return t.EUI64.convert(value)
    if isinstance(value, bool):
        value = int(value)
    return attr.type(value)


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
