"""How an attempt ends (a base of :class:`~gatewayd.onboarding.machine.Onboarding`, kept apart
so each reads in one sitting): what it proved is stored, or what it changed is undone and the
user is told why.

An attempt always ends in a state. A success is committed to the state store; a store that
cannot be written fails the attempt (``storage-failed``), since credentials the hub would
forget at its next start must not be reported as paired. A failure is undone step by step
(the cloud link stopped, an unproven network forgotten, the last working one back), each step
tried even if one before it failed, and the failure event fired. If applying the outcome
raises all the same (a bug, a library failing unexpectedly), :meth:`_conclude_anyway` ends the
attempt as an internal error where a failure would have ended.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gatewayd.credentials import CloudCredentials, WifiCredentials
from gatewayd.onboarding.parts import MachineParts
from gatewayd.onboarding.progress import Attempt, LastFailure
from gatewayd.onboarding.steps import CloudStep, Failure, StepResult, WifiControl
from gatewayd.onboarding.table import Event, State, failure_event
from gatewayd.state import StateStore

log = logging.getLogger("gatewayd.onboarding.machine")  # one logger for the machine's lines
T = TypeVar("T")

# What an attempt that crashed (a bug, or a library failing unexpectedly) tells the user.
CRASHED = StepResult(False, Failure.WIFI_FAILED, "The hub hit an internal error while "
                     "connecting. Try again; if it keeps failing, restart the hub.")
FORGET_TIMEOUT = 5.0  # for deleting the profiles the hub has not stored (NetworkManager)
STORAGE_FAILED_REASON = ("The hub could not save the new settings: its storage is full or "
                         "failing. Nothing was changed; try again, and if it keeps failing, "
                         "the hub's storage needs attention.")


class AttemptOutcome(MachineParts):
    """The end of an attempt; the machine provides what is declared here."""

    store: StateStore
    wifi: WifiControl | None
    cloud: CloudStep
    state: State | None
    attempt: Attempt | None
    last_failure: LastFailure | None
    _hotspot_wanted: bool
    _wifi_up: bool
    window: Callable[[], bool] | None

    async def _conclude_anyway(self, applied: WifiCredentials | None,
                               cloud: CloudCredentials | None, saved: bool,
                               timeout: float) -> None:
        """:meth:`_conclude` raised: end the attempt as a failure on what is stored."""
        if self._attempt_ended():
            return  # the outcome's event fired; what failed came after it
        if self.last_failure is None:
            # It was a success being applied: undone as any failure (an unproven network
            # forgotten, the last one back), whose steps are each guarded.
            try:
                await self._conclude(CRASHED, applied, cloud, saved, timeout)
            except Exception:
                log.exception("undoing the attempt failed too")
            if self._attempt_ended():
                return
        # The failure path raised after it set last_failure (its first step): what is left
        # of it, each step on its own.
        try:
            await self.cloud.disconnect()
        except Exception:
            log.exception("stopping the cloud link after a failed attempt failed")
        try:
            await self._fire_failure(saved)
        except Exception:  # the state moved; entering it (the hotspot) is retried later
            log.exception("entering the state after a failed attempt failed")

    def _attempt_ended(self) -> bool:
        return self.state != State.CONNECTING

    async def _conclude(self, result: StepResult, applied: WifiCredentials | None,
                        cloud: CloudCredentials | None, saved: bool, timeout: float) -> None:
        """Apply an attempt's outcome: store what was proven, or undo and say why."""
        if result.ok and not saved:
            result = self._commit(applied, cloud)
            if result.ok:
                # The network just proven replaces any other we saved: left with autoconnect
                # on, an old one would take the hub back to it when this one drops, while
                # status names this one.
                await self._forget_unstored()
        if result.ok:
            self.last_failure = None
            await self._fire(Event.SUCCEEDED if cloud is not None else Event.JOINED)
            if self.wifi is not None and self.wifi.hotspot_active:
                await self.wifi.stop_hotspot()  # "No Wi-Fi" pairing done over the hotspot
            return
        assert result.failure is not None
        self.last_failure = LastFailure(code=str(result.failure), reason=result.reason,
                                        at=time.time(),
                                        attempt=self.attempt.id if self.attempt else None)
        kind = "provisioning" if self.attempt and self.attempt.source == "provisioning" \
            else "pairing"
        log.warning("%s attempt failed: %s (%s)", kind, result.failure, result.reason)
        # Each step of the undo is tried even if one before it failed: a cloud link that
        # fails to stop must not leave an unproven network behind.
        await self._undo("stopping the cloud link", self.cloud.disconnect())
        previous = self.store.state.wifi
        if self.wifi is not None and applied is not None and not saved and applied != previous:
            # Unproven credentials must not linger where autoconnect would find them. For
            # the stored SSID with another passphrase (a router's new password) the profile
            # is the attempt's, not the stored one: left, it would keep the hub on a
            # passphrase state.json does not have, deleted at the next start.
            await self._undo("forgetting the new network", self.wifi.forget(applied.ssid))
            self._wifi_up = False  # deleting the active profile ends the link
        if self.wifi is not None and applied is not None and previous is not None \
                and not saved and self.wifi.visible(previous.ssid):
            # Put the last working network back, so a failed re-pairing costs nothing.
            back = await self._undo("going back to the saved network",
                                    self.wifi.reconnect_saved(previous, timeout))
            self._wifi_up = back is not None and back.ok
        await self._fire_failure(saved)

    async def _fire_failure(self, saved: bool) -> None:
        """The failure event (:func:`failure_event` decides where a failed attempt lands),
        for the failure path and its last resort alike; ``saved``: the attempt was the
        hub's own, on what it stores."""
        # Before the state moves: what every front end hears of it says whether the hub
        # is on its cable (only the cloud step failed) or without a network.
        await self._note_cable()
        st = self.store.state
        event = failure_event(paired=st.paired, wifi_saved=st.wifi is not None,
                              off_saved_wifi=self.wifi is not None and not self.on_wifi)
        if event == Event.FAILED_SAVED and not st.paired:
            # A hub that is not paired has no cloud duty to wait for: the hotspot comes
            # back at once (with the reason), and the saved network is retried from there.
            self._hotspot_wanted = True
        elif saved and self._cloud_unreachable_on_wifi() \
                and not (self.window is not None and self.window()):
            # The hub's own retry found its network working and only the broker out of
            # reach: it stays on the network (no hotspot) and retries the cloud from there.
            # While the window a short press opens is open, the owner keeps the hotspot.
            self._hotspot_wanted = False
        await self._fire(event)

    async def _forget_unstored(self) -> None:
        """Delete every client profile but the stored network's: one an attempt saved
        before it was proven (a stop, a crash, an upgrade's restart during it), or one a
        later pairing replaced. Its passphrase goes with it, and autoconnect cannot find
        it. Logged, never raised: it must not fail what it follows."""
        if self.wifi is None:
            return
        try:
            async with asyncio.timeout(FORGET_TIMEOUT):
                await self.wifi.forget_others(self.store.state.wifi)
        except Exception:
            log.exception("forgetting Wi-Fi networks the hub has not stored failed")

    @staticmethod
    async def _undo(what: str, step: Awaitable[T]) -> T | None:
        """One step of undoing a failed attempt; None (logged) if it raised."""
        try:
            return await step
        except Exception:
            log.exception("after a failed attempt, %s failed", what)
            return None

    def _commit(self, applied: WifiCredentials | None, cloud: CloudCredentials | None
                ) -> StepResult:
        """Store what the attempt proved. Only that: a network not applied (Ethernet) is
        not stored; a cloud-only pairing keeps the stored network (commit_pairing)."""
        def write() -> None:
            if cloud is not None:
                state = self.store.commit_pairing(applied, cloud)
                log.info("paired: %s", state.redacted())
            elif applied is not None:
                state = self.store.commit_wifi(applied)
                log.info("joined Wi-Fi (cloud account still to come): %s", state.redacted())
        return committed(write)


def committed(write: Callable[[], object]) -> StepResult:
    """Run ``write``, which stores what an attempt proved (a person's pairing, a provisioned
    hub's issued account). A store that cannot be written fails the attempt: credentials
    the hub would forget at its next start must not be reported as paired."""
    try:
        write()
    except OSError as exc:
        log.error("could not save the new credentials: %s", exc.strerror or exc)
        return StepResult(False, Failure.STORAGE_FAILED, STORAGE_FAILED_REASON)
    return StepResult(True)
