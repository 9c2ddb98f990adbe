"""The cloud: one MQTT connection in the 2Smart/Homie convention, and what rides on it.

:mod:`~gatewayd.cloud.net` drives paho-mqtt on the loop (connects on a thread; its client
reads and writes the socket and reads a 3.1.1 PUBACK as :mod:`~gatewayd.cloud.acks` says) to
an :mod:`~gatewayd.cloud.endpoint`, opening the connection as :mod:`~gatewayd.cloud.dial`
says (one deadline for the lookup, every address and TLS; or by an opener the daemon was
given: the simulator's uplink) and :mod:`~gatewayd.cloud.attempts` says what an attempt
came to;
:mod:`~gatewayd.cloud.link` publishes devices and keeps them published across reconnects,
through :mod:`~gatewayd.cloud.publisher` (which keeps each device's retained topics in
:mod:`~gatewayd.cloud.retained`), and routes what arrives through
:mod:`~gatewayd.cloud.inbound`; :mod:`~gatewayd.cloud.commands` dispatches ``/set``;
:mod:`~gatewayd.cloud.telemetry` is the hub's own device; :mod:`~gatewayd.cloud.reqres`
(the platform client) and :mod:`~gatewayd.cloud.reqres_cipher` are the REQ/RES API and
its one replaceable cipher;
:mod:`~gatewayd.cloud.notifications` tells the user what happened, within a budget;
:mod:`~gatewayd.cloud.ownership` releases an account when a paired hub is reset,
:mod:`~gatewayd.cloud.leftovers` clears removed children, also after a restart, and
:mod:`~gatewayd.cloud.stale` what an earlier run published that this one no longer has (a
device dropped from the configuration, the topics of a changed tree), remembered in
:mod:`~gatewayd.cloud.published`; all of them ask the broker what it keeps
(:mod:`~gatewayd.cloud.sweep`), the last two in one pass at a time
(:mod:`~gatewayd.cloud.passes`).
:mod:`~gatewayd.cloud.presence` says whether the hub shows its cloud as reachable (the
link down past a grace: the LED, STATUS= and the panel).
The device model itself (no I/O) is :mod:`gatewayd.homie`, shared with the children.

May import: homie, config, credentials, owed and state (what the hub still owes the
broker), runtime. Never
onboarding or a front end: they use the link, not the other way round.
"""

from gatewayd.runtime import deferred

# paho-mqtt 2.2.0 imports urllib.request (and with it http.client and part of the email
# package) for one thing: reading a proxy from the environment, which it does only when
# PySocks is installed, and gatewayd does not depend on it. The daemon's entry defers
# these modules before it imports paho (gatewayd/runtime/deferred.py): bound, run only
# if something uses them. An unattended minimal hub idles 0.7 MB lower, the full hub
# 0.3 MB (it loads part of the same for other reasons; bench/README.md, "Memory").
UNUSED_IMPORTS = ("urllib.request",)


def defer_unused_imports() -> list[str]:
    """Defer :data:`UNUSED_IMPORTS` if paho has not been imported yet (those deferred)."""
    return deferred.defer(*UNUSED_IMPORTS)
