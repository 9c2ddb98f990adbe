"""Link and offline handling of the onboarding machine (a base of
:class:`~gatewayd.onboarding.machine.Onboarding`, kept apart so each reads in one sitting).

A lost client link moves an ``online`` hub (or an unpaired one on its Wi-Fi) to ``offline``;
a link that returns starts the cloud step again. While ``offline``, one task waits: for a hub
with a saved Wi-Fi network, ``offline_grace`` and then the hotspot, with a client attempt
after a jittered wait of half to all of ``retry_interval`` (postponed while someone uses the
portal, but never beyond ``MAX_POSTPONED`` intervals after the last one); for a paired hub
that is a client of its saved network but whose cloud step could not reach the broker, no
hotspot (the network works): the cloud step again after the wait below, and the path
before once the link goes down too; for a hub paired without one (on Ethernet), the cloud
step again after a jittered wait that doubles from ``CLOUD_RETRY_FIRST`` up to
``retry_interval``, whenever there is an uplink (the hotspot only if there has been none
for ``offline_grace``). Every timer reads the machine's ``clock`` and waits with its
``sleep``. Whether the hub is on its cable, as seen when an attempt fails and at each cloud
retry, words what its progress says (on Ethernet with the cloud out of reach, or without
a network).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from gatewayd.config import Config
from gatewayd.credentials import CloudCredentials
from gatewayd.onboarding.parts import MachineParts
from gatewayd.onboarding.progress import LastFailure
from gatewayd.onboarding.steps import CLOUD_UNREACHABLE, WifiControl
from gatewayd.onboarding.table import Event, State
from gatewayd.state import StateStore

log = logging.getLogger(__name__)
CLOUD_RETRY_FIRST = 5.0  # seconds before the first cloud retry on a network (before jitter)
# Portal activity postpones the saved network's retry by at most this many retry intervals.
MAX_POSTPONED = 5


class OfflineHandling(MachineParts):
    """The link and offline part of the machine; the machine provides what is declared here."""

    config: Config
    store: StateStore
    wifi: WifiControl | None
    state: State | None
    clock: Callable[[], float]
    sleep: Callable[[float], Awaitable[None]]
    rng: random.Random
    last_activity: float
    last_failure: LastFailure | None
    offline_since: float | None
    _hotspot_wanted: bool
    _wifi_up: bool
    _cable: bool
    _cloud_retries: int
    _attempt_task: asyncio.Task[None] | None
    _offline_task: asyncio.Task[None] | None
    _cloud_wait_task: asyncio.Task[Any] | None  # the offline task while it waits on Wi-Fi
    _link_tasks: set[asyncio.Task[None]]

    def _on_link(self, up: bool, reason: str) -> None:
        """Called by the Wi-Fi control (on the loop) when the client link changes."""
        self._wifi_up = up
        if self.state == State.CONNECTING:
            return  # the attempt watches the link itself
        if not up and self._link_matters():
            log.warning("network lost: %s", reason)
            self._link_task(self._link_down(), "link-down")
        elif not up and self._waiting_on_wifi() and not self._hotspot_wanted:
            # The network is gone too now: the Wi-Fi-lost path, its grace counted from here.
            log.warning("network lost while the cloud was unreachable: %s", reason)
            self._start_offline_timer()
        elif up and self.state == State.OFFLINE and not self._attempt_running():
            st = self.store.state
            if st.cloud is not None or st.wifi is not None:
                self._link_task(self._relink(st.cloud), "relink")

    def _link_task(self, step: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``step`` on the loop, held (the loop keeps only a weak reference to a task)
        until it ends; an error in it is logged, and :meth:`stop` cancels it."""
        task = asyncio.get_running_loop().create_task(step, name=name)
        self._link_tasks.add(task)
        task.add_done_callback(self._link_task_done)

    def _link_task_done(self, task: asyncio.Task[None]) -> None:
        self._link_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("onboarding: %s failed", task.get_name(), exc_info=task.exception())

    def _link_matters(self) -> bool:
        """Losing the client link moves the machine: online, or on Wi-Fi but unpaired."""
        return self.state == State.ONLINE or (
            self.state == State.UNPAIRED and self.store.state.wifi is not None)

    async def _link_down(self) -> None:
        # Checked again when the task runs: the link may be back, or a reset came first.
        if not self._wifi_up and self._link_matters():
            await self._fire(Event.LINK_DOWN)

    def _attempt_running(self) -> bool:
        return self._attempt_task is not None and not self._attempt_task.done()

    async def _relink(self, cloud: CloudCredentials | None) -> None:
        """Back on the saved network: the cloud step (paired) or nothing (Wi-Fi only)."""
        # Checked again when the task runs: a retry may have begun meanwhile (connecting),
        # or a reset came first (unpaired); an attempt beside it would be a second one.
        if self.state != State.OFFLINE:
            return
        await self._fire(Event.LINK_UP)
        self._begin_attempt(None, cloud, source="reconnect", saved=True)

    def _cloud_only(self) -> bool:
        """Paired without a saved Wi-Fi network: the uplink is Ethernet, no hotspot helps."""
        st = self.store.state
        return st.cloud is not None and st.wifi is None

    def _start_offline_timer(self) -> None:
        self._cancel_offline_timer()
        if self.wifi is not None or self._cloud_only():
            self._offline_task = asyncio.create_task(self._offline_loop(), name="offline")

    def _cancel_offline_timer(self) -> None:
        if self._offline_task is not None and self._offline_task is not asyncio.current_task():
            self._offline_task.cancel()
        self._offline_task = None

    def _cloud_unreachable_on_wifi(self) -> bool:
        """Paired, a client of its saved Wi-Fi network, and the latest attempt's cloud step
        could not reach the broker (not a refusal): the network works, and the hotspot
        would take the hub off it for nothing."""
        st = self.store.state
        failure = self.last_failure
        return (self.wifi is not None and st.cloud is not None and st.wifi is not None
                and self.on_wifi and failure is not None and failure.code in CLOUD_UNREACHABLE)

    def _waiting_on_wifi(self) -> bool:
        """The offline task is waiting for the cloud on the hub's Wi-Fi network."""
        task = self._offline_task
        return (self.state == State.OFFLINE and task is not None and not task.done()
                and task is self._cloud_wait_task)

    async def _offline_loop(self) -> None:
        cfg = self.config.hotspot
        if self._cloud_only():
            await self._retry_cloud(cfg.retry_interval, cfg.offline_grace)
            return
        assert self.wifi is not None
        if not self._hotspot_wanted and self._cloud_unreachable_on_wifi():
            if await self._retry_cloud_on_wifi(cfg.retry_interval):
                return
            # The link went down meanwhile: the Wi-Fi-lost path.
        if not self._hotspot_wanted:
            await self.sleep(cfg.offline_grace)
            if self.state != State.OFFLINE:
                return
            log.warning("offline for %.0fs: hotspot back for re-pairing", cfg.offline_grace)
            await self._hotspot_for_repairing()  # never raises: the retries below go on
        last_retry = self.clock()
        while self.state == State.OFFLINE:
            # Jittered: a fleet whose network came back together does not retry in step.
            await self.sleep(cfg.retry_interval * self.rng.uniform(0.5, 1.0))
            if self.state != State.OFFLINE or self._attempt_running():
                continue
            # Activity postpones a retry, but not past MAX_POSTPONED intervals since the
            # last one: whoever keeps polling the open hotspot cannot hold the hub offline.
            overdue = self.clock() - last_retry >= MAX_POSTPONED * cfg.retry_interval
            if not overdue and self.clock() - self.last_activity < cfg.retry_interval:
                continue  # someone is on the hotspot portal right now
            try:
                await self._retry_saved()
            except Exception:  # NetworkManager failed: the next round tries again
                log.exception("retrying the saved network failed")
                await self._hotspot_back()
            last_retry = self.clock()

    async def _hotspot_for_repairing(self) -> None:
        """Offline too long: the hotspot (re-)opens pairing, and every front end hears it.
        A failure is logged, not raised: the caller's retries go on (the next brings the
        hotspot back)."""
        self._hotspot_wanted = True
        try:
            await self._show_hotspot()
        except Exception:
            log.exception("could not bring the hotspot back; the next retry tries again")
        self._tell_listeners()
        await self._notify_changed()

    async def _retry_cloud(self, cap: float, grace: float) -> None:
        """The cloud step again after a jittered, doubling wait (a fleet whose broker came
        back does not return in one wave); only with an uplink. Runs until the machine
        leaves ``offline``: a failed retry comes back here and waits longer. A hub with
        Wi-Fi whose cable stays out past ``grace`` shows its hotspot (re-pairing onto
        Wi-Fi); a retry that succeeds once the cable is back takes it down."""
        began = self.offline_since if self.offline_since is not None else self.clock()
        while self.state == State.OFFLINE:
            await self.sleep(self._cloud_retry_wait(cap))
            if self.state != State.OFFLINE or self._attempt_running():
                continue
            uplink = await self._uplink_known()
            if uplink != self._cable:  # the cable came out or went back in
                self._cable = uplink
                self._tell_listeners()
                await self._notify_changed()
            if not uplink:
                log.info("no uplink (Ethernet carrier down): cloud retry postponed")
                if (self.wifi is not None and not self.wifi.hotspot_active
                        and self.clock() - began >= grace):
                    log.warning("no uplink for %.0fs: hotspot up for re-pairing", grace)
                    await self._hotspot_for_repairing()
                continue
            self._cloud_retries += 1
            await self._fire(Event.RETRY)
            self._begin_attempt(None, self.store.state.cloud, source="retry", saved=True)
            return

    def _cloud_retry_wait(self, cap: float) -> float:
        """Before the next cloud retry: half to all (jitter) of a ceiling that doubles from
        ``CLOUD_RETRY_FIRST`` with each failed retry since the hub was online, up to ``cap``."""
        ceiling = min(cap, CLOUD_RETRY_FIRST * 2.0 ** min(self._cloud_retries, 30))
        return ceiling * self.rng.uniform(0.5, 1.0)

    async def _retry_cloud_on_wifi(self, cap: float) -> bool:
        """A paired hub on its Wi-Fi network whose broker is out of reach stays on the
        network, no hotspot, and retries the cloud step as a hub on Ethernet does (the
        same jittered, doubling wait). Returns False if the link is down when a retry is
        due (the caller then takes the Wi-Fi-lost path), True once a retry has begun or
        the machine has left ``offline``. A short press restarts this task on the
        hotspot; a link lost meanwhile restarts it on the Wi-Fi-lost path (``_on_link``)."""
        self._cloud_wait_task = asyncio.current_task()
        while self.state == State.OFFLINE:
            wait = self._cloud_retry_wait(cap)
            log.info("on Wi-Fi, the cloud unreachable: no hotspot; the cloud step again in "
                     "%.0f s", wait)
            await self.sleep(wait)
            if self.state != State.OFFLINE or self._attempt_running():
                continue
            if not self.on_wifi:
                return False
            self._cloud_retries += 1
            await self._fire(Event.RETRY)
            self._begin_attempt(None, self.store.state.cloud, source="retry", saved=True)
            return True
        return True

    async def _uplink_known(self) -> bool:
        """:meth:`has_uplink`, False (logged) if NetworkManager could not say: the retry
        loop must outlive a failed D-Bus call."""
        try:
            return await self.has_uplink()
        except Exception:
            log.exception("could not read the uplink's state")
            return False

    async def _note_cable(self) -> None:
        """Look whether the hub is on its cable (off its Wi-Fi), for what its progress says
        of a failed cloud step: on Ethernet with the cloud out of reach, or without a
        network. A hub without Wi-Fi control is taken to have it (as :meth:`has_uplink`);
        a carrier NetworkManager cannot tell is taken as down."""
        if self.on_wifi:
            self._cable = False
        elif self.wifi is None:
            self._cable = True
        else:
            try:
                self._cable = await self.wifi.ethernet_connected()
            except Exception:
                log.debug("could not read the Ethernet carrier", exc_info=True)
                self._cable = False

    async def _hotspot_back(self) -> None:
        """After a failed retry from the hotspot: the hotspot again, if it is down."""
        assert self.wifi is not None
        if self.state == State.OFFLINE and not self.wifi.hotspot_active:
            try:
                await self.wifi.start_hotspot()
            except Exception:
                log.exception("could not bring the hotspot back; the next round tries again")

    async def _retry_saved(self) -> None:
        """One periodic client attempt from the hotspot: the radio can do only one thing,
        and NetworkManager cannot scan in AP mode, so: hotspot down, scan, connect if the
        network is there, otherwise hotspot straight back."""
        assert self.wifi is not None
        st = self.store.state
        if st.wifi is None:
            return
        await self.wifi.stop_hotspot()
        await self.wifi.scan(st.wifi.ssid if st.wifi.hidden else None)
        if not self.wifi.visible(st.wifi.ssid):
            log.info("saved network %r still not visible; hotspot stays", st.wifi.ssid)
            await self.wifi.start_hotspot()
            return
        await self._fire(Event.LINK_UP)
        self._begin_attempt(st.wifi, st.cloud, source="retry", saved=True)
