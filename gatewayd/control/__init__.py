"""The control socket's HTTP API (``/run/gatewayd/control.sock``), what ``gatewayctl`` calls.

:mod:`~gatewayd.control.app` builds the Flask app (status, reset, setup code, and the
portal's pairing API mounted without its rate limit or login: the socket's file mode is
the access control); :mod:`~gatewayd.control.devices`, :mod:`~gatewayd.control.zigbee` and
:mod:`~gatewayd.control.ble` add their endpoints. Handlers run in waitress threads and reach
the core only through :class:`gatewayd.runtime.corecall.CoreCall`.

The daemon imports only :mod:`~gatewayd.control.parts` (what the endpoints reach, no Flask)
and :mod:`~gatewayd.control.slots` (the socket's threads and slots for calls that wait long);
:mod:`~gatewayd.control.build` makes the whole app from those parts on the socket's first
request (:class:`gatewayd.runtime.webserver.LazyApp`).

May import: hub, runtime, hardware, the faces of their concerns (bridge, ble_commission,
the platform client :mod:`gatewayd.cloud.reqres`, and the Zigbee inputs and simulator link
:mod:`gatewayd.zigbee.inputs` and :mod:`gatewayd.zigbee.simlink`, none of which loads
zigpy), the pairing service and the portal's pairing API (:mod:`gatewayd.portal.api`, with
the error codes both answer, and :mod:`gatewayd.portal.core`), and the portal's record of
admin sign-ins (:mod:`gatewayd.portal.signins`: the parts hand it from the daemon to the
portal's app).
Nothing imports this package but the daemon.
"""
