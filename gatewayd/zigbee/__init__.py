"""Zigbee support: radio selection, the virtual radio, and the cluster mapping table.

Modules here that import zigpy (``radio`` once it starts a controller, ``child``,
``sim_device``, ``virtual_radio``) are imported only when Zigbee is enabled; the
bridge (:mod:`gatewayd.bridge`) loads them lazily. ``catalog`` and ``mapping`` are
plain data and never import zigpy. Nothing is imported from this package's
``__init__`` on purpose.
"""
