"""The web portal on the hotspot and the LAN: the 2Smart app's pairing endpoints
(``/healthcheck``, ``/pair``), the JSON API under ``/api/v1``, the admin panel and the
captive-portal detection URLs.

:mod:`~gatewayd.portal.app` builds the Flask app; every view runs in a waitress thread and
reaches the core only through :mod:`~gatewayd.portal.core` (one hop through
:class:`gatewayd.runtime.corecall.CoreCall`); pairing goes through the one front door,
:meth:`gatewayd.onboarding.pairing.PairingService.submit`. :mod:`~gatewayd.portal.security`
holds the rate limits, CSRF, headers and the admin login; :mod:`~gatewayd.portal.signins`
counts sign-ins and logs lockouts (no Flask: the daemon makes it);
:mod:`~gatewayd.portal.refusals` words what the web server refuses before the app sees a
request, and holds the headers every answer carries (no Flask: the daemon hands it to the
web server).

May import: hub, config, runtime, :mod:`gatewayd.onboarding` (pairing, progress) and the
bridge (permit join). Never the control socket's package: the control socket mounts the
portal's JSON API, not the other way round.
"""
