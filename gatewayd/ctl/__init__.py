"""``gatewayctl``: the command-line client of a running gatewayd.

:mod:`~gatewayd.ctl.client` is what every command shares (the control-socket client, its
errors, the output); the command modules (:mod:`~gatewayd.ctl.devices`,
:mod:`~gatewayd.ctl.ble`, :mod:`~gatewayd.ctl.zigbee`) import it downward, and
:mod:`~gatewayd.ctl.main` imports them to build the parser, so there is no cycle.
:mod:`~gatewayd.ctl.simjson` reads a simulator's ``sim.json`` (``--sim DIR``) for them all.
The console script is ``gatewayd.ctl.main:main``.

May import: config, state and :mod:`gatewayd.zigbee.new_network` (the offline reset; it
imports no zigpy), runtime (its JSON reader
:mod:`gatewayd.runtime.jsonbody`, for the JSON arguments) and, for ``ble-pair`` only, the
phone client :mod:`gatewayd.ble.phone`. Never the daemon side: gatewayctl talks over the socket.
"""
