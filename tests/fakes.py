"""Test doubles shared by the suite: stand-ins at our own boundaries, never in the package."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from gatewayd.credentials import CloudCredentials, WifiCredentials
from gatewayd.hub import Hub
from gatewayd.onboarding.pairing import PairingFailed, PairingRequest
from gatewayd.onboarding.progress import Progress
from gatewayd.onboarding.steps import Failure, StepResult


class StubCloud:
    """Stands in for the cloud link: succeeds unless told to fail (tests, early simulator)."""

    def __init__(self) -> None:
        self.next_failure: StepResult | None = None
        self.connected: CloudCredentials | None = None
        # Set to an unset event to hold attempts in the cloud step until the test sets it.
        self.gate: asyncio.Event | None = None
        self.timeouts: list[float] = []
        self.typed_in: list[bool] = []  # each attempt's: an account a person just gave

    async def connect(self, creds: CloudCredentials, timeout: float, *,
                      typed_in: bool = False) -> StepResult:
        self.timeouts.append(timeout)
        self.typed_in.append(typed_in)
        if self.gate is not None:
            await self.gate.wait()
        if self.next_failure is not None:
            return self.next_failure
        self.connected = creds
        return StepResult(ok=True)

    async def disconnect(self) -> None:
        self.connected = None


class NoOnboarding:
    """A hub whose onboarding service is not running: the pairing service refuses with a
    500 that says why (the portal keeps serving everything else)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    @property
    def pairing_open(self) -> bool:
        return not self.hub.state.paired

    @property
    def busy(self) -> bool:
        return False

    repairable = False  # never offline on a hotspot
    window_seconds = None

    @property
    def long_press_seconds(self) -> float | None:
        button = self.hub.config.button
        return button.long_press_seconds if button.enabled else None

    async def begin(self, request: PairingRequest) -> None:
        raise PairingFailed("Pairing is not available: the onboarding service is not running.")

    async def settle(self, timeout: float) -> None:
        pass

    async def has_uplink(self) -> bool:
        return True

    async def on_ethernet(self) -> bool:
        return False

    def progress(self) -> Progress:
        return Progress(state="paired" if self.hub.state.paired else "unpaired", step=None,
                        attempt=None, last_failure=None, pairing_open=self.pairing_open,
                        hotspot=False, wifi=self.hub.config.hotspot.enabled, network=None)

    def networks(self) -> list[dict[str, Any]]:
        return []

    def note_activity(self) -> None:
        pass


def progress(state: str = "unpaired", **fields: Any) -> Progress:
    """A progress value with the defaults of an idle unpaired hub, for listener tests."""
    values: dict[str, Any] = {"state": state, "step": None, "attempt": None,
                              "last_failure": None, "pairing_open": state == "unpaired",
                              "hotspot": state == "unpaired", "wifi": True, "network": None}
    values.update(fields)
    return Progress(**values)


class FakeWifi:
    """:class:`gatewayd.onboarding.steps.WifiControl` in memory: what the state machine
    asks of NetworkManager, with none of D-Bus (zigpy's test suite fakes its radio the
    same way). Tests that need NetworkManager's own behaviour use the mock on a private
    bus instead; these run the transition table in milliseconds.

    ``aps`` maps visible SSIDs to their passphrases. :attr:`calls` records what onboarding
    asked, in order, so a test can check the single-radio switch order.
    """

    def __init__(self, aps: dict[str, str] | None = None, *, ethernet: bool = False) -> None:
        self.aps: dict[str, str] = dict(aps or {})
        self.ethernet = ethernet
        self.hotspot = False
        self.active: str | None = None  # the client network we are on
        self.profiles: dict[str, str] = {}  # saved client profiles: ssid -> passphrase
        self.calls: list[str] = []
        self.scans: list[str | None] = []  # the SSID each scan looked for (hidden networks)
        self.timeouts: list[float] = []  # of each connect/reconnect
        self.connect_gate: asyncio.Event | None = None  # holds connect() until set
        self._on_link: Any = None
        self._on_hotspot_down: Any = None
        self._on_wired: Any = None

    # ---- WifiControl ------------------------------------------------------------------

    async def start(self, on_link: Any, on_hotspot_down: Any = None,
                    on_service: Any = None, on_wired: Any = None) -> None:
        self._on_link = on_link
        self._on_hotspot_down = on_hotspot_down
        self._on_wired = on_wired

    def wired_changed(self) -> None:
        """NetworkManager's word that a wired link came or went (nm/wired.py)."""
        if self._on_wired is not None:
            self._on_wired()

    running = True  # NetworkManager is there

    async def stop(self) -> None:
        self.calls.append("stop")

    async def scan(self, ssid: str | None = None) -> None:
        self.calls.append("scan")
        self.scans.append(ssid)

    def networks(self) -> list[dict[str, Any]]:
        return [{"ssid": ssid, "signal": 70, "security": "wpa2" if psk else "open"}
                for ssid, psk in self.aps.items()]

    async def ethernet_connected(self) -> bool:
        return self.ethernet

    async def start_hotspot(self) -> None:
        self.calls.append("hotspot-up")
        self.active = None  # one radio: the client link ends
        self.hotspot = True

    async def stop_hotspot(self) -> None:
        self.calls.append("hotspot-down")
        self.hotspot = False

    @property
    def hotspot_active(self) -> bool:
        return self.hotspot

    async def connect(self, wifi: WifiCredentials, timeout: float) -> StepResult:
        self.calls.append(f"connect {wifi.ssid}")
        self.timeouts.append(timeout)
        if self.connect_gate is not None:
            await self.connect_gate.wait()
        self.profiles[wifi.ssid] = wifi.psk
        return self._join(wifi)

    async def reconnect_saved(self, wifi: WifiCredentials, timeout: float) -> StepResult:
        self.calls.append(f"reconnect {wifi.ssid}")
        self.timeouts.append(timeout)
        return self._join(wifi)

    def visible(self, ssid: str) -> bool:
        return ssid in self.aps

    async def forget(self, ssid: str) -> None:
        self.calls.append(f"forget {ssid}")
        self.profiles.pop(ssid, None)
        if self.active == ssid:
            self.active = None

    async def forget_clients(self) -> None:
        self.calls.append("forget-clients")
        self.profiles.clear()
        self.active = None

    async def forget_others(self, keep: WifiCredentials | None) -> None:
        for ssid, psk in list(self.profiles.items()):
            if keep is None or ssid != keep.ssid or psk != keep.psk:
                del self.profiles[ssid]
                if self.active == ssid:
                    self.active = None

    # ---- the test's levers --------------------------------------------------------------

    def _join(self, wifi: WifiCredentials) -> StepResult:
        if self.hotspot:
            raise AssertionError("a client connection while the hotspot is up: one radio")
        if wifi.ssid not in self.aps:
            return StepResult(False, Failure.NETWORK_NOT_FOUND, f"{wifi.ssid!r} is not in range")
        if self.aps[wifi.ssid] != wifi.psk:
            return StepResult(False, Failure.WRONG_PASSWORD, "the password was not accepted")
        self.active = wifi.ssid
        return StepResult(True)

    def drop_link(self, reason: str = "the access point went away") -> None:
        """The client link drops (call on the loop), as NetworkManager would report it."""
        self.active = None
        self._on_link(False, reason)

    def drop_hotspot(self) -> None:
        """NetworkManager takes the hotspot down (call on the loop)."""
        self.hotspot = False
        if self._on_hotspot_down is not None:
            self._on_hotspot_down()

    def restore_link(self, ssid: str) -> None:
        """NetworkManager's autoconnect brought the saved network back."""
        self.active = ssid
        self._on_link(True, "")


class FakeClock:
    """Monotonic time that only the test moves: pass it as ``clock=`` (read it) and its
    :meth:`sleep` as ``sleep=`` (wait on it). A sleeper wakes when :meth:`advance` reaches
    its deadline, so a 300-second timer takes no real time and a test can say exactly which
    side of a deadline it is on.

    :attr:`slept` records every sleep asked for, in order: a new entry is the positive sign
    that the code under test has finished what it did after waking (it is waiting again).
    """

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.slept: list[float] = []
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self._changed: asyncio.Condition | None = None

    def __call__(self) -> float:
        return self.now

    @property
    def changed(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def sleep(self, seconds: float) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self.now + max(seconds, 0.0), waiter)
        self._sleepers.append(entry)
        self.slept.append(seconds)
        async with self.changed:
            self.changed.notify_all()
        try:
            if entry[0] > self.now:
                await waiter
        finally:
            self._sleepers.remove(entry)

    @property
    def waiting(self) -> int:
        """How many sleeps are waiting now (each a timer of the code under test)."""
        return len(self._sleepers)

    def advance(self, seconds: float) -> None:
        """Move time on; every sleeper whose deadline has come wakes up."""
        self.now += seconds
        for deadline, waiter in self._sleepers:
            if deadline <= self.now and not waiter.done():
                waiter.set_result(None)

    async def sleeps(self, count: int, timeout: float = 10.0) -> None:
        """Wait (in real time, bounded) until the code has asked for ``count`` sleeps."""
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: len(self.slept) >= count),
                                   timeout)


class LogSignal(logging.Handler):
    """Sets an asyncio event when a record containing one of ``texts`` is logged: a log line
    the code emits at a moment the test must not guess with a sleep. Name each outcome the
    code may log there, the wrong ones too: a test then fails at once when the code decides
    wrongly, instead of after the timeout."""

    def __init__(self, *texts: str, logger: str = "gatewayd") -> None:
        super().__init__(logging.DEBUG)
        self.texts = texts
        self.logger = logging.getLogger(logger)
        self.records: list[logging.LogRecord] = []
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> LogSignal:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._level = self.logger.level
        if self.logger.getEffectiveLevel() > logging.DEBUG:
            self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self._level)

    def emit(self, record: logging.LogRecord) -> None:
        if any(text in record.getMessage() for text in self.texts):
            self.records.append(record)
            assert self._loop is not None and self._event is not None
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float = 10.0) -> logging.LogRecord:
        assert self._event is not None
        await asyncio.wait_for(self._event.wait(), timeout)
        return self.records[0]


async def first_of(*waits: Awaitable[Any]) -> None:
    """Wait until the first of ``waits`` is done (raising its error), cancel the others.

    For a moment when the code decides between outcomes: wait for each, the wrong ones
    too, and the test fails at once on a wrong decision instead of after a timeout."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
    for task in done:
        task.result()
