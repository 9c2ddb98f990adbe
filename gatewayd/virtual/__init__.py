"""Virtual devices: the plugin API a device type is written against.

A plugin imports from here (and builds its nodes with :mod:`gatewayd.homie`); this is the
documented API (docs/virtual-devices.md) and stays stable. The host that runs the
``[[virtual]]`` devices as children of the hub is :mod:`gatewayd.virtual.host`; the plugin
machinery is :mod:`gatewayd.virtual.plugin`; the built-in types are ``system``, ``gpio``,
``command`` and ``timer``.

May import: homie, config, hardware (line backends for ``gpio``), cloud.telemetry (the
``system`` readers). The host reaches the cloud link only through its ``ChildPublisher``
Protocol.
"""

from gatewayd.virtual.plugin import (
    DEVICE_PREFIX,
    ENTRY_POINT_GROUP,
    DeviceContext,
    NoOptions,
    OptionError,
    PluginError,
    PluginType,
    Registry,
    VirtualDevice,
    parse_options,
)

__all__ = ["DEVICE_PREFIX", "ENTRY_POINT_GROUP", "DeviceContext", "NoOptions", "OptionError",
           "PluginError", "PluginType", "Registry", "VirtualDevice", "parse_options"]
