"""What follows the machine from outside it: the BLE window's changes told to it, and the
user told when the hub fell back to its hotspot. Wired by the daemon."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from gatewayd.onboarding.machine import Onboarding
from gatewayd.onboarding.progress import Progress
from gatewayd.onboarding.table import State


async def follow_window(ble: Any, onboarding: Onboarding) -> None:
    """The BLE window opens and closes (a press, ``gatewayctl ble-window``, its time): pairing
    may open or close with it, and the LED and the progress follow."""
    while True:
        was = ble.window_open
        async with ble.changed:
            await ble.changed.wait_for(functools.partial(_moved, ble, was))
        await onboarding.window_changed()


def _moved(ble: Any, was: bool) -> bool:
    return bool(ble.window_open != was)


def fallback_notice(notify: Callable[[str, str, str], object],
                    hub_id: str) -> Callable[[State, Progress], None]:
    """An onboarding listener that tells the user when the hub fell back to its hotspot
    (offline with the hotspot up), once per fall."""
    shown = False

    def listener(state: State, progress: Progress) -> None:
        nonlocal shown
        fell_back = state == State.OFFLINE and progress.hotspot
        if fell_back and not shown:
            notify("hotspot-fallback", hub_id, "The hub lost its network and opened its "
                                               "hotspot so it can be paired again")
        shown = fell_back
    return listener
