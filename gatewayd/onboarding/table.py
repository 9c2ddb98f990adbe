"""The onboarding states, events and the whole transition table, as data.

``TRANSITIONS`` maps (state, event) to the next state; ``None`` as the current state means
"before boot", and a missing pair is an event the state ignores. The side effects of
entering a state live in :mod:`gatewayd.onboarding.machine`.
"""

from __future__ import annotations

import enum


class State(enum.StrEnum):
    UNPAIRED = "unpaired"
    CONNECTING = "connecting"
    ONLINE = "online"
    OFFLINE = "offline"


class Event(enum.StrEnum):
    BOOT_UNPAIRED = "boot-unpaired"  # nothing saved
    BOOT_PAIRED = "boot-paired"  # saved credentials: paired, or a Wi-Fi network only
    PAIR = "pair"
    SUCCEEDED = "succeeded"  # network (if any) and cloud up
    JOINED = "joined"  # a Wi-Fi-only attempt joined its network; no cloud account yet
    FAILED = "failed"  # nothing saved stands in for the attempt, or still on the network
    FAILED_SAVED = "failed-saved"  # saved credentials stand, but the hub is off its network
    LINK_DOWN = "link-down"
    LINK_UP = "link-up"
    # The cloud step again on a network that is up (Ethernet, or the hub's Wi-Fi while the
    # broker was out of reach): the link did not come back, it never went.
    RETRY = "retry"
    RESET = "reset"
    PROVISION = "provision"  # [provisioning] mode token/enroll: ask the platform for an account
    REVOKED = "revoked"  # the broker refuses the issued registration: provision again


# The whole behaviour in one table: (state, event) -> next state. ``None`` as the
# current state means "before boot". A missing pair is an event the state ignores.
# Which failure event an attempt ends with is decided in one place, failure_event.
TRANSITIONS: dict[tuple[State | None, Event], State] = {
    (None, Event.BOOT_UNPAIRED): State.UNPAIRED,
    (None, Event.BOOT_PAIRED): State.CONNECTING,
    (State.UNPAIRED, Event.PAIR): State.CONNECTING,
    (State.OFFLINE, Event.PAIR): State.CONNECTING,
    (State.CONNECTING, Event.SUCCEEDED): State.ONLINE,
    # On the network, not paired: pairing stays open on the LAN (portal, BLE) for the cloud.
    (State.CONNECTING, Event.JOINED): State.UNPAIRED,
    (State.CONNECTING, Event.FAILED): State.UNPAIRED,
    (State.CONNECTING, Event.FAILED_SAVED): State.OFFLINE,
    (State.ONLINE, Event.LINK_DOWN): State.OFFLINE,
    # A hub that joined Wi-Fi but is not paired yet lost its network.
    (State.UNPAIRED, Event.LINK_DOWN): State.OFFLINE,
    (State.OFFLINE, Event.LINK_UP): State.CONNECTING,
    (State.OFFLINE, Event.RETRY): State.CONNECTING,
    (State.UNPAIRED, Event.RESET): State.UNPAIRED,
    (State.CONNECTING, Event.RESET): State.UNPAIRED,
    (State.ONLINE, Event.RESET): State.UNPAIRED,
    (State.OFFLINE, Event.RESET): State.UNPAIRED,
    # Provisioning modes: the account comes from the platform instead of a person.
    (State.UNPAIRED, Event.PROVISION): State.CONNECTING,
    (State.ONLINE, Event.REVOKED): State.UNPAIRED,
    (State.OFFLINE, Event.REVOKED): State.UNPAIRED,
}


def failure_event(*, paired: bool, wifi_saved: bool, off_saved_wifi: bool) -> Event:
    """Where a failed attempt lands: the one place that decides it.

    - paired (a cloud account is stored): ``offline``, the old credentials stand (on its
      Wi-Fi network with the broker out of reach, it stays on it: see offline.py);
    - a Wi-Fi network is stored but the hub is not on it: ``offline`` (hotspot and
      periodic retries of the saved network);
    - otherwise ``unpaired``: with the hotspot when off any network, or still on the
      LAN when only the cloud part failed on a hub that joined Wi-Fi before.
    """
    if paired or (wifi_saved and off_saved_wifi):
        return Event.FAILED_SAVED
    return Event.FAILED
