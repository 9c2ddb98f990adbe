"""The cloud: one MQTT connection in the 2Smart/Homie convention, and what rides on it.

:mod:`~gatewayd.cloud.net` drives paho-mqtt on the loop (connects on a thread; its client
reads and writes the socket and reads a 3.1.1 PUBACK as :mod:`~gatewayd.cloud.acks` says) and
:mod:`~gatewayd.cloud.attempts` says what an attempt came to;
:mod:`~gatewayd.cloud.link` publishes devices and keeps them published across reconnects,
through :mod:`~gatewayd.cloud.publisher` (which keeps each device's retained topics in
:mod:`~gatewayd.cloud.retained`);
:mod:`~gatewayd.cloud.commands` dispatches ``/set``; :mod:`~gatewayd.cloud.telemetry` is
the hub's own device; :mod:`~gatewayd.cloud.reqres` (the platform client) and
:mod:`~gatewayd.cloud.reqres_cipher` are the REQ/RES API and its one replaceable cipher;
:mod:`~gatewayd.cloud.notifications` tells the user what happened, within a budget;
:mod:`~gatewayd.cloud.ownership` releases an account when a paired hub is reset.
The device model itself (no I/O) is :mod:`gatewayd.homie`, shared with the children.

May import: homie, config, credentials, state (the pending release), runtime. Never
onboarding or a front end: they use the link, not the other way round.
"""
