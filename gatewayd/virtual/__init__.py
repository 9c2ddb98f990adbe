"""Virtual devices: the plugin API a device type is written against.

A plugin imports from here (and builds its nodes with :mod:`gatewayd.homie`); this is the
documented API (docs/virtual-devices.md) and stays stable. The host that runs the
``[[virtual]]`` devices as children of the hub is :mod:`gatewayd.virtual.host`; the plugin
machinery is :mod:`gatewayd.virtual.plugin`; the built-in types are ``system``, ``gpio``,
``command`` and ``timer``. What a plugin's fault says to a person (gatewayd's own words
shown, a plugin's kept in the log) is :mod:`gatewayd.virtual.faults`; what the host
refuses of a plugin's description (text attributes, at most so many nodes and properties),
:mod:`gatewayd.virtual.checks`; how fast a device may publish (its budget),
:mod:`gatewayd.virtual.budget`.

May import: homie, config, hardware (line backends for ``gpio``), cloud.telemetry (the
``system`` readers), cloud.reqres (the platform client and its errors, which plugins
catch) and runtime (files, log budgets). The host reaches the cloud link only through
:class:`gatewayd.homie.ChildPublisher`.
"""

from gatewayd.cloud.reqres import PlatformError
from gatewayd.virtual.plugin import (
    DEVICE_PREFIX,
    ENTRY_POINT_GROUP,
    DeviceContext,
    NoOptions,
    OptionError,
    PlatformAccess,
    PluginError,
    PluginType,
    Registry,
    VirtualDevice,
    parse_options,
)

__all__ = ["DEVICE_PREFIX", "ENTRY_POINT_GROUP", "DeviceContext", "NoOptions", "OptionError",
           "PlatformAccess", "PlatformError", "PluginError", "PluginType", "Registry",
           "VirtualDevice", "parse_options"]
