"""Getting the hub onto a network and the cloud: the pairing front door and the state machine.

:mod:`~gatewayd.onboarding.pairing` validates requests from every entry point (HTTP, the
panel, the JSON API, Improv, the secure BLE service) through one method, in one order;
:mod:`~gatewayd.onboarding.table` is the explicit (state, event) -> state table that
drives the Wi-Fi control and the cloud step; :mod:`~gatewayd.onboarding.steps` holds what
the steps share (results, failure codes, the Wi-Fi and cloud Protocols);
:mod:`~gatewayd.onboarding.progress` is the typed progress every front end reads;
:mod:`~gatewayd.onboarding.offline` is the machine's link and offline handling (timers,
the hotspot's return, retries) and :mod:`~gatewayd.onboarding.conclusion` how an attempt
ends (what it proved stored, or what it changed undone);
:mod:`~gatewayd.onboarding.hotspot_watch` raises an unpaired hub's missing hotspot again;
:mod:`~gatewayd.onboarding.parts` declares what these parts of the machine call of one
another;
:mod:`~gatewayd.onboarding.cloud_step` is the cloud step on top of the cloud link;
:mod:`~gatewayd.onboarding.listeners` follows the machine from outside (the BLE window, the
hotspot fallback's notice).
NetworkManager control, the other step, is :mod:`gatewayd.ap` (named by the design card).

May import: config, credentials, state, runtime, and :mod:`gatewayd.cloud` (the cloud
step only). Never a front end (portal, control, ble, ctl).
"""
