"""The onboarding state machine: hotspot <-> client <-> cloud, in one explicit table.

States (what `gatewayctl status`, the portal and BLE show):

- ``unpaired``   not paired to the cloud; pairing open. Either without a network (hotspot
                 up on Wi-Fi hubs without Ethernet, kept up by ``hotspot_watch``), or on
                 the LAN after a Wi-Fi-only attempt ("Wi-Fi first, cloud later", e.g.
                 Improv): ``progress().network == "wifi"``, hotspot down, the cloud part
                 is paired over the LAN or BLE
- ``connecting`` an attempt is running (step ``wifi`` and/or ``cloud``)
- ``online``     client network up and the cloud link established
- ``offline``    the hub has a saved network (paired, or Wi-Fi only) but is not on it;
                 NetworkManager's autoconnect retries; after ``offline_grace`` (at once
                 after a failed attempt of a hub that is not paired) the hotspot returns
                 while client attempts go on (after a jittered half to all of
                 ``retry_interval`` each). On it a hub that is
                 not paired takes pairing requests; a paired one only while the window a
                 short press opens is open, or from a signed-in admin. A hub
                 paired without a saved Wi-Fi network (on Ethernet) has no hotspot to
                 show: it retries the cloud step with a jittered backoff (5 s doubling to
                 ``retry_interval``) whenever it has an uplink. So does a paired hub that is
                 on its saved Wi-Fi network while the broker is out of reach: it stays on
                 the network, no hotspot, until the link goes down too

Credentials are committed to the state store only after an attempt succeeded:
a failed attempt leaves the previous working credentials untouched. A Wi-Fi-only success
commits the Wi-Fi network only; a later cloud-only success keeps it.

On a single radio the switch order is fixed: scan, stop the hotspot, connect the
client, and on failure bring the hotspot back. AP and station never run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gatewayd.config import Config
from gatewayd.credentials import CloudCredentials, WifiCredentials
from gatewayd.onboarding.conclusion import CRASHED, AttemptOutcome
from gatewayd.onboarding.hotspot_watch import HotspotWatch
from gatewayd.onboarding.offline import OfflineHandling
from gatewayd.onboarding.pairing import InvalidRequest, PairingRequest, check_open
from gatewayd.onboarding.progress import Attempt, LastFailure, Progress
from gatewayd.onboarding.steps import CloudStep, StepResult, WifiControl
from gatewayd.onboarding.table import TRANSITIONS, Event, State
from gatewayd.state import StateStore

log = logging.getLogger(__name__)
Listener = Callable[[State, Progress], None]


class Onboarding(OfflineHandling, HotspotWatch, AttemptOutcome):
    """Runs the table above; every change of state goes through :meth:`_fire`."""

    name = "onboarding"

    def __init__(self, config: Config, store: StateStore, wifi: WifiControl | None,
                 cloud: CloudStep, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self.store = store
        self.wifi = wifi  # None: an Ethernet-only ("No Wi-Fi") hub
        self.cloud = cloud
        # The offline timers read ``clock`` and wait with ``sleep``: tests pass a clock they
        # move themselves, so no test waits for a grace period or a retry interval.
        self.clock = clock
        self.sleep = sleep
        self.rng = rng or random.Random()  # noqa: S311 (retry jitter, not a secret)
        self.state: State | None = None
        self.step: str | None = None
        self.attempt: Attempt | None = None
        self.last_failure: LastFailure | None = None
        self.offline_since: float | None = None
        self.last_activity = 0.0
        # Whether the window a short press opens is open (the press's own, and the BLE
        # commissioning window's): wired by the daemon; None: the hub has none (tests).
        self.window: Callable[[], bool] | None = None
        self._hotspot_wanted = False  # offline longer than the grace period
        self._cloud_retries = 0  # failed cloud-only retries since the hub was last online
        self._wifi_up = False  # the Wi-Fi client link is up (as far as onboarding saw)
        self._cable = False  # the Ethernet carrier was up when last looked (_note_cable)
        self._entering = False  # between a transition and the end of its side effects
        # An attempt's outcome is known (and may show in progress) but not yet applied.
        self._concluding = False
        self._listeners: list[Listener] = []
        self._attempt_task: asyncio.Task[None] | None = None
        self._offline_task: asyncio.Task[None] | None = None
        self._cloud_wait_task: asyncio.Task[Any] | None = None  # offline, waiting on Wi-Fi
        self._watch_task: asyncio.Task[None] | None = None  # the unpaired hotspot's watchdog
        self._wired = asyncio.Event()  # NetworkManager told of a wired link come or gone
        self._link_tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self.changed = asyncio.Condition()

    # ---- observation ----------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    @property
    def pairing_open(self) -> bool:
        if self._entering:
            return False  # the hotspot may be coming back right now: one thing at a time
        if self.state == State.UNPAIRED:
            return True
        # Offline long enough that the hotspot came back: a hub that is not paired (Wi-Fi
        # only) is open on it as ever; a paired one only while the window a short press
        # opens is open (whoever is in Wi-Fi range is not its owner), or to its admin.
        if not self._offline_on_hotspot():
            return False
        return not self.store.state.paired or (self.window is not None and self.window())

    @property
    def repairable(self) -> bool:
        """Paired, offline, its hotspot up: a signed-in admin may pair it again."""
        return not self._entering and self.store.state.paired and self._offline_on_hotspot()

    @property
    def window_seconds(self) -> float | None:
        return self.config.ble.window_seconds if self.window is not None else None

    @property
    def long_press_seconds(self) -> float | None:
        button = self.config.button
        return button.long_press_seconds if button.enabled else None

    def _offline_on_hotspot(self) -> bool:
        return self.state == State.OFFLINE and self.wifi is not None and \
            self.wifi.hotspot_active

    @property
    def busy(self) -> bool:
        return self.state == State.CONNECTING or self._entering

    def networks(self) -> list[dict[str, Any]]:
        return self.wifi.networks() if self.wifi is not None else []

    def progress(self) -> Progress:
        return Progress(
            state=str(self.state) if self.state else "starting",
            step=self.step,
            attempt=self.attempt,
            last_failure=self.last_failure,
            pairing_open=self.pairing_open,
            hotspot=bool(self.wifi and self.wifi.hotspot_active),
            wifi=self.wifi is not None,
            network="wifi" if self.on_wifi else None,
            networkmanager=self.wifi.running if self.wifi is not None else None,
            cable=self._cable and not self.on_wifi,
        )

    @property
    def on_wifi(self) -> bool:
        """The hub is a client of a Wi-Fi network (not hotspot, not without a link)."""
        return self.wifi is not None and self._wifi_up and not self.wifi.hotspot_active

    def note_activity(self) -> None:
        """A person is using the hotspot portal: periodic client retries wait for them."""
        self.last_activity = self.clock()

    async def settle(self, timeout: float) -> None:
        """Return once no transition is under way (nor an attempt's ending, whose failure
        progress may already show), or after ``timeout``."""
        if not self._settled():
            with contextlib.suppress(TimeoutError):
                await self.wait_for(self._settled, timeout)

    async def has_uplink(self) -> bool:
        """On a network: Ethernet carrier, or a client of its Wi-Fi (an Ethernet-only hub,
        without Wi-Fi control, is taken to have its cable)."""
        if self.wifi is None or self.on_wifi:
            return True
        return await self.wifi.ethernet_connected()

    async def on_ethernet(self) -> bool:
        """A Wi-Fi hub on its cable (not a client of its Wi-Fi): Wi-Fi credentials are not
        applied, pairing is cloud only."""
        return (self.wifi is not None and not self.on_wifi
                and await self.wifi.ethernet_connected())

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(predicate), timeout)

    # ---- the machine ----------------------------------------------------------------------

    async def _fire(self, event: Event, **info: Any) -> State:
        key = (self.state, event)
        if key not in TRANSITIONS:
            log.debug("onboarding: %s ignored in state %s", event, self.state)
            return self.state or State.UNPAIRED
        target = TRANSITIONS[key]
        previous, self.state = self.state, target
        if target != State.CONNECTING:
            self.step = None
        log.info("onboarding: %s --%s--> %s", previous, event, target)
        hotspot = self._tell_listeners()
        self._entering = True
        try:
            await self._notify_changed()
            await self._enter(target, previous, event)
        finally:
            self._entering = False
        if self.progress().hotspot != hotspot:
            self._tell_listeners()  # entering raised (or dropped) the hotspot
        await self._notify_changed()
        self._watch_hotspot()  # unpaired, and the hotspot did not come up (a cable, say)
        return target

    def _tell_listeners(self) -> bool:
        """Every listener gets the state and progress now; returns whether the hotspot is up."""
        progress = self.progress()
        assert self.state is not None
        for listener in self._listeners:
            try:
                listener(self.state, progress)
            except Exception:
                log.exception("onboarding listener failed")
        return progress.hotspot

    async def _enter(self, state: State, previous: State | None, event: Event) -> None:
        del previous, event
        if state == State.UNPAIRED:
            self._cancel_offline_timer()
            self._hotspot_wanted = False
            self.offline_since = None
            if not self.on_wifi:
                # Without a network (or after a reset): the hotspot is the way in. A hub
                # that has just joined Wi-Fi stays on it: pairing goes on over the LAN.
                try:
                    await self._show_hotspot()
                except Exception:  # the watchdog (hotspot_watch) tries again
                    log.exception("could not raise the hotspot; trying again shortly")
        elif state == State.OFFLINE:
            if self.offline_since is None:
                self.offline_since = self.clock()
            # The retries first: they must go on even if NetworkManager fails the hotspot.
            self._start_offline_timer()
            if self._hotspot_wanted:
                # Back from a failed retry or re-pairing: the hotspot returns at once.
                await self._show_hotspot()
        elif state == State.ONLINE:
            self.offline_since = None
            self._hotspot_wanted = False
            self._cloud_retries = 0
            self._cancel_offline_timer()

    async def _show_hotspot(self) -> None:
        if self.wifi is None:
            return
        if await self.wifi.ethernet_connected():
            log.info("Ethernet is connected: no hotspot; pair over the LAN or BLE")
            return
        await self.wifi.scan()  # NetworkManager cannot scan well in AP mode: do it first
        self._wifi_up = False  # one radio: the client link ends here
        await self.wifi.start_hotspot()

    # ---- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self.wifi is not None:
            await self.wifi.start(self._on_link, self._on_hotspot_down, self._on_service,
                                  self._on_wired)
            # A stop or crash during an attempt left its unproven profile saved, with
            # autoconnect on: only the stored network's may stay.
            await self._forget_unstored()
        st = self.store.state
        if st.paired or (st.wifi is not None and self.wifi is not None):
            # Paired, or Wi-Fi only: rejoin the saved network first; no hotspot unless
            # that fails.
            await self._fire(Event.BOOT_PAIRED)
            self._begin_attempt(st.wifi, st.cloud, source="boot", saved=True)
        else:
            await self._fire(Event.BOOT_UNPAIRED)

    def _on_service(self, running: bool) -> None:
        """NetworkManager left the bus, or came (back) (called on the loop): every front end
        hears it (``networkmanager`` in progress), and once it is there the hub does what a
        start does with it."""
        if self.state is None:
            return  # the start is not over: it does that itself
        self._tell_listeners()
        self._link_task(self._notify_changed(), "networkmanager")
        if running:
            self._link_task(self._service_back(), "networkmanager-back")

    async def _service_back(self) -> None:
        """NetworkManager is (back) on the bus: profiles the hub has not stored go (a reset
        while it was away could not delete them), and an unpaired hub's hotspot comes up."""
        async with self._lock:  # a request's attempt saves a profile the hub has not stored
            if self.state != State.CONNECTING:
                await self._forget_unstored()
        await self._raise_missing_hotspot()

    async def stop(self) -> None:
        self._cancel_offline_timer()
        self._cancel_hotspot_watch()
        for task in list(self._link_tasks):
            task.cancel()
        interrupted = self._attempt_running()
        if self._attempt_task is not None:
            self._attempt_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._attempt_task
        await self.cloud.disconnect()
        if interrupted:
            await self._forget_unstored()  # the attempt's profile is not proven
        if self.wifi is not None:
            if self.wifi.hotspot_active:
                await self.wifi.stop_hotspot()
            await self.wifi.stop()

    async def reset(self, full: bool = False) -> None:
        """Called after the state store forgot the credentials."""
        del full
        # First, before anything is awaited: an offline retry under way (scanning, say)
        # read the network and account the store held before, and would begin an attempt
        # with them while the reset still runs (the state is offline until its end).
        self._cancel_offline_timer()
        await self._end_hotspot_watch()  # entering unpaired raises it, and starts it again
        if self._attempt_task is not None and not self._attempt_task.done():
            self._attempt_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._attempt_task
        await self.cloud.disconnect()
        if self.wifi is not None:
            await self.wifi.forget_clients()  # the passphrase lives in our NM profile
        self._wifi_up = False  # the profile is gone, and with it the link
        self.last_failure = None
        self.attempt = None
        self.offline_since = None
        await self._fire(Event.RESET)

    async def reopen_hotspot(self) -> bool:
        """Button short press while offline: bring the hotspot back now, not after the grace;
        while unpaired, raise it again if it is down (unless a cable is in).

        Returns whether a hotspot is up afterwards. Nothing changes in other states.
        """
        if self.state == State.UNPAIRED and self.wifi is not None:
            await self._raise_missing_hotspot()
            return self.wifi.hotspot_active
        if self.state != State.OFFLINE or self.wifi is None:
            return bool(self.wifi and self.wifi.hotspot_active)
        if not self.wifi.hotspot_active:
            self._hotspot_wanted = True
            await self._show_hotspot()
            self._start_offline_timer()
            self._tell_listeners()
            await self._notify_changed()
        return self.wifi.hotspot_active

    async def window_changed(self) -> None:
        """The window a short press opens has opened: pairing may be open now (progress)."""
        self._tell_listeners()
        await self._notify_changed()

    # ---- pairing --------------------------------------------------------------------------

    async def begin(self, request: PairingRequest) -> None:
        """Start an attempt and return at once; the outcome shows in progress(). Raises
        the :class:`~gatewayd.onboarding.pairing.PairingError` a request gets now.

        A Wi-Fi-only request (``request.cloud`` None) on a hub that is already paired
        means "a new network, the same account": it runs with the stored cloud account.
        """
        async with self._lock:
            # The pairing service checked before it awaited anything (the uplink, its D-Bus
            # calls): another request or the provisioning driver may have begun since.
            check_open(self, admin=request.admin)
            cloud = request.cloud if request.cloud is not None else self.store.state.cloud
            if cloud is None and self.wifi is None:
                raise InvalidRequest("ssid: a Wi-Fi-only pairing request needs a hub with "
                                     "Wi-Fi", "ssid")
            await self._fire(Event.PAIR)
            self._begin_attempt(request.wifi, cloud, source=request.source)

    def _begin_attempt(self, wifi: WifiCredentials | None, cloud: CloudCredentials | None,
                       source: str, saved: bool = False) -> None:
        self.attempt = Attempt(id=secrets.token_hex(4), source=source,
                               ssid=wifi.ssid if wifi else None, cloud=cloud is not None,
                               started=time.time())
        self.last_failure = None  # describes the latest attempt only
        self._attempt_task = asyncio.create_task(self._run_attempt(wifi, cloud, saved),
                                                 name="onboarding-attempt")

    async def _run_attempt(self, wifi: WifiCredentials | None, cloud: CloudCredentials | None,
                           saved: bool) -> None:
        """One attempt, always ending in an event. ``cloud`` None: Wi-Fi only (the hub
        joins the network and stays unpaired); ``saved``: credentials from the state
        store (boot, reconnect, retry), which are not committed again."""
        timeout = self.config.hotspot.connect_timeout
        applied: WifiCredentials | None = None
        try:
            result, applied = await self._attempt(wifi, cloud, timeout, saved)
        except asyncio.CancelledError:
            raise
        except Exception:  # an attempt must always end in a state, never hang
            log.exception("pairing attempt crashed")  # the details: for the log only
            result = CRASHED
        self._concluding = True
        try:
            await self._conclude(result, applied, cloud, saved, timeout)
        except asyncio.CancelledError:
            raise
        except Exception:
            # NetworkManager failing while a failure is undone, say: the attempt must still
            # end, or the hub answers "busy" to every request until it is restarted.
            log.exception("applying the pairing attempt's outcome failed")
            await self._conclude_anyway(applied, cloud, saved, timeout)
        finally:
            self._concluding = False
            await self._notify_changed()

    async def _attempt(self, wifi: WifiCredentials | None, cloud: CloudCredentials | None,
                       timeout: float, saved: bool
                       ) -> tuple[StepResult, WifiCredentials | None]:
        """The steps; returns the result and the Wi-Fi network actually applied."""
        if wifi is not None and self.wifi is not None and await self.wifi.ethernet_connected():
            log.info("Ethernet is connected: using it; the Wi-Fi credentials are not applied")
            wifi = None
            if self.attempt is not None:  # progress names only a network actually applied
                self.attempt = dataclasses.replace(self.attempt, ssid=None)
        applied: WifiCredentials | None = None
        if wifi is not None and self.wifi is not None:
            await self._enter_step("wifi")
            if self.wifi.hotspot_active:
                await self.wifi.stop_hotspot()
            self._wifi_up = False
            result = (await self.wifi.reconnect_saved(wifi, timeout) if saved
                      else await self.wifi.connect(wifi, timeout))
            applied = result.joined or wifi  # hidden, if only a directed scan found it
            self._wifi_up = result.ok
            if not result.ok:
                return result, applied
        if cloud is None:
            return StepResult(ok=True), applied  # Wi-Fi first, cloud later
        await self._enter_step("cloud")
        # A Wi-Fi-only request on a paired hub runs with the stored account: not typed in.
        typed_in = not saved and cloud != self.store.state.cloud
        return await self.cloud.connect(cloud, timeout, typed_in=typed_in), applied

    async def _enter_step(self, step: str) -> None:
        """An attempt's next step: every listener hears it (systemd's STATUS=, the LED), not
        only those waiting on :attr:`changed`."""
        self.step = step
        self._tell_listeners()
        await self._notify_changed()

    async def _notify_changed(self) -> None:
        async with self.changed:
            self.changed.notify_all()
