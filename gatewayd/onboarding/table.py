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
    RESET = "reset"


# The whole behaviour in one table: (state, event) -> next state. ``None`` as the
# current state means "before boot". A missing pair is an event the state ignores.
# Which failure event an attempt ends with is decided in one place, _failure_event.
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
    (State.UNPAIRED, Event.RESET): State.UNPAIRED,
    (State.CONNECTING, Event.RESET): State.UNPAIRED,
    (State.ONLINE, Event.RESET): State.UNPAIRED,
    (State.OFFLINE, Event.RESET): State.UNPAIRED,
}
