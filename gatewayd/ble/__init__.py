"""BLE commissioning: the GATT layer, Improv Wi-Fi, the secure gatewayd service, the phone.

Codecs apart from I/O: :mod:`~gatewayd.ble.improv_codec` and
:mod:`~gatewayd.ble.secure_protocol` are pure (no sdbus, no bleak) and shared by both ends.
The hub's side: :mod:`~gatewayd.ble.gatt` (sdbus peripheral: application, characteristics,
advertisement), :mod:`~gatewayd.ble.improv_service` and :mod:`~gatewayd.ble.secure_service`
(services that reach the hub through small host Protocols; the secure session's plain-data
replies in :mod:`~gatewayd.ble.secure_messages`). The phone's side:
:mod:`~gatewayd.ble.phone` (bleak), behind ``gatewayctl ble-pair``; it imports only the
codecs, never the peripheral stack. The commissioning window that puts the services on the
air and hands pairing to onboarding is :mod:`gatewayd.ble_commission` (named by the design
card), which imports this package.

May import: the standard library, cryptography, sdbus (gatt and the services), bleak
(phone, lazily), :mod:`gatewayd.onboarding.pairing` for the refusal codes, and
:mod:`gatewayd.runtime` (the log budget).
"""
