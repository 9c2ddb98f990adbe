"""What the virtual-device host refuses of a plugin's description (:func:`check_description`).

The Homie model takes the attributes it publishes as given; a plugin's ``version = 2`` or
``unit=5`` would be published as nothing, and fail deep in the cloud link at every
connection. And nothing bounds its size: every property is about six retained messages,
rendered on the event loop at each connection. Here both are refused when the device is
described, by a :class:`gatewayd.homie.ModelError` naming the attribute or the count, so the
device becomes a placeholder saying so (docs/virtual-devices.md, "Limits").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gatewayd import homie

MAX_NODES = 64  # nodes of a device
MAX_NODE_PROPERTIES = 256  # properties of a node, its $options and $telemetry included
MAX_PROPERTIES = 1024  # properties of a device, every node's and its own included


def _text(value: Any, what: str) -> None:
    if not isinstance(value, str):
        raise homie.ModelError(f"{what} must be text, got {repr(value)[:40]} "
                               f"({type(value).__name__})")


def _properties(props: Iterable[homie.Property], where: str) -> None:
    for prop in props:
        for attr, value in (("$name", prop.name), ("$unit", prop.unit),
                            ("$format", prop.format)):
            _text(value, f"property {prop.id!r}{where}: {attr}")


def check_description(device: homie.Device) -> None:
    """ModelError naming the first attribute of ``device`` that is not text, or the count
    over a limit."""
    if len(device.nodes) > MAX_NODES:
        raise homie.ModelError(f"{device.id} has {len(device.nodes)} nodes; a device has at "
                               f"most {MAX_NODES}")
    total = len(device.options) + len(device.telemetry)
    for node in device.nodes.values():
        count = len(node.properties) + len(node.options) + len(node.telemetry)
        if count > MAX_NODE_PROPERTIES:
            raise homie.ModelError(f"node {node.id!r} has {count} properties; a node has at "
                                   f"most {MAX_NODE_PROPERTIES}, its $options and $telemetry "
                                   f"included")
        total += count
    if total > MAX_PROPERTIES:
        raise homie.ModelError(f"{device.id} has {total} properties; a device has at most "
                               f"{MAX_PROPERTIES}, its nodes' and its own $options and "
                               f"$telemetry included")
    _text(device.fw_version, "the plugin's version ($fw/version)")
    _text(device.fw_name, "$fw/name")
    _properties([*device.options.values(), *device.telemetry.values()], " of the device")
    for node in device.nodes.values():
        _text(node.name, f"node {node.id!r}: $name")
        _text(node.type, f"node {node.id!r}: $type")
        _properties([*node.properties.values(), *node.options.values(),
                     *node.telemetry.values()], f" of node {node.id!r}")
