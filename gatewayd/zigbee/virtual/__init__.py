"""The simulated Zigbee world: devices on the air and a zigpy radio of our own.

:mod:`~gatewayd.zigbee.virtual.catalog` lists the device kinds (plain data);
:mod:`~gatewayd.zigbee.virtual.device` is the one device model (what a device's firmware
answers, in real ZDO and ZCL frames) that every simulated radio carries, with its ZCL value
helpers in :mod:`~gatewayd.zigbee.virtual.zcl`;
:mod:`~gatewayd.zigbee.virtual.radio` is the zigpy-level radio (``radio = "virtual"``) and
its world file; :mod:`~gatewayd.zigbee.virtual.report_stream` is the load generator.

May import: zigpy, the standard library, :mod:`gatewayd.runtime`, and the bridge's input
checks :mod:`gatewayd.zigbee.inputs` (no zigpy, no I/O). Never the bridge.
"""
