"""NetworkManager's side of the Wi-Fi step, behind :mod:`gatewayd.ap` (the face of it).

:mod:`~gatewayd.nm.profiles` is what NetworkManager is given (the hotspot and client
profiles) and what its numbers mean (device states, reasons in words a person can act on,
the security a scan shows); :mod:`~gatewayd.nm.scan` the scan cache;
:mod:`~gatewayd.nm.wired` whether a cable is in and up, and NetworkManager's signals that
it may have changed;
:mod:`~gatewayd.nm.strength` the signal of the network the hub is a client of (the active
access point's strength), which the daemon gives the hub's telemetry, read on the control's
bus;
:mod:`~gatewayd.nm.presence` whether NetworkManager is on the system bus (it may be missing
at start and restart at any time) and whether the bus connection itself still stands.

May import: config, credentials, identity, :mod:`gatewayd.onboarding.steps` (results and
failure codes) and sdbus. Never the onboarding machine, :mod:`gatewayd.ap` or a front end.
"""
