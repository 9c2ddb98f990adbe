"""Zero-touch provisioning: the hub gets its cloud account from the platform, not a person.

Modes (``[provisioning] mode``, docs/provisioning.md): ``token`` (a provisioning token
starts an *operation* with a verification code; a technician approves it; the hub gets an
expiring registration token it refreshes) and ``enroll`` (template id + serial + enroll
password -> a permanent account). ``pairing`` (the default) does not use this package.

:mod:`~gatewayd.provisioning.codec` is the wire format (topics, bodies, the verification
code, sealing to the hub's key; no I/O); :mod:`~gatewayd.provisioning.channel` the MQTT
session to the platform's provisioning endpoint; :mod:`~gatewayd.provisioning.flows` the
token and enroll exchanges; :mod:`~gatewayd.provisioning.service` the onboarding step that
ends in committed credentials or a named failure, and the keeper of an issued
registration (refresh, revocation).

May import: config, credentials, identity, state, runtime, :mod:`gatewayd.cloud` (the link,
its connection, the REQ/RES cipher) and :mod:`gatewayd.onboarding` (its step results
and failure codes, and the states and progress its listeners hear: the keeper follows the
machine). Nothing but the daemon and the simulator imports it.
"""
