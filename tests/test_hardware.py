"""The hub's button and LED (issue 7), and the gpiod backend against a fake ``gpiod`` module.

The kernel's gpio-sim is not available here, so :class:`FakeGpiod` stands in for the
``gpiod`` module at the library boundary: ``request_lines`` returns requests whose ``fd`` is
a real pipe that becomes readable when an edge is queued, exactly what the backend's
``loop.add_reader`` waits on. ``LineSettings``, the ``line`` enums and ``EdgeEvent`` are
gpiod's own (pure Python, no hardware needed).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import gpiod
import pytest
from gpiod.line import Bias, Direction, Edge, Value

from gatewayd.config import ButtonConfig, Config, LedConfig, load_config, with_overrides
from gatewayd.hardware.button import Button
from gatewayd.hardware.component import Hardware
from gatewayd.hardware.led import ONBOARDING_PATTERNS, PATTERNS, Led
from gatewayd.hardware.libgpiod import GpiodBackend
from gatewayd.hardware.lines import HardwareError
from gatewayd.hardware.simulated import SimulatedBackend
from gatewayd.onboarding.progress import LastFailure
from tests.fakes import progress
from tests.helpers import run_async

pytestmark = pytest.mark.timeout(60)
CHIP = "/dev/gpiochip0"


run = run_async


async def until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition"
                ) -> Any:
    """Wait on a condition by yielding to the loop (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)
    return value


# ---- a fake gpiod module ------------------------------------------------------------------------

class FakeRequest:
    def __init__(self, fake: FakeGpiod, chip: str, offset: int, settings: gpiod.LineSettings,
                 consumer: str | None) -> None:
        self.fake, self.chip, self.offset, self.consumer = fake, chip, offset, consumer
        self.settings = settings
        self.events: list[gpiod.EdgeEvent] = []
        self.writes: list[Value] = []
        self.attempts = 0
        self.reads = 0  # read_edge_events calls
        self.gone = False  # its chip was removed: the fd stays readable, every read fails
        self.released = False
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        self.output = settings.output_value if settings.direction == Direction.OUTPUT else None
        self.last_logical = self._logical()

    def _logical(self) -> bool:
        return self.fake.levels.get((self.chip, self.offset), False) != self.settings.active_low

    @property
    def fd(self) -> int:
        assert not self.released, "fd of a released request"
        return self._r

    def get_value(self, offset: int) -> Value:
        assert offset == self.offset and not self.released
        if self.output is not None:
            return self.output
        return Value.ACTIVE if self._logical() else Value.INACTIVE

    def set_value(self, offset: int, value: Value) -> None:
        assert offset == self.offset and not self.released
        assert self.settings.direction == Direction.OUTPUT, "set_value on an input"
        assert isinstance(value, Value)
        self.attempts += 1
        if self.fake.fail_writes:
            raise OSError(errno.EIO, "Input/output error")
        self.output = value
        self.writes.append(value)

    def physical_changed(self) -> None:
        if self.settings.edge_detection != Edge.BOTH:
            return
        logical = self._logical()
        if logical == self.last_logical:
            return
        self.last_logical = logical
        kind = (gpiod.EdgeEvent.Type.RISING_EDGE if logical
                else gpiod.EdgeEvent.Type.FALLING_EDGE)
        self.fake.seqno += 1
        self.events.append(gpiod.EdgeEvent(kind.value, time.monotonic_ns(), self.offset,
                                           self.fake.seqno, self.fake.seqno))
        os.write(self._w, b"e")

    def read_edge_events(self, max_events: int | None = None) -> list[gpiod.EdgeEvent]:
        assert not self.released
        self.reads += 1
        if self.gone:
            raise OSError(errno.ENODEV, "No such device")
        try:
            os.read(self._r, 4096)
        except BlockingIOError:
            pass
        count = max_events or len(self.events)
        taken, self.events = self.events[:count], self.events[count:]
        if self.events:
            os.write(self._w, b"e")  # still more queued: stay readable, like the kernel fd
        return taken

    def release(self) -> None:
        if not self.released:
            self.released = True
            os.close(self._r)
            os.close(self._w)
            self.fake.requests.pop((self.chip, self.offset), None)


class FakeGpiod:
    """The gpiod v2 surface gatewayd uses, over in-memory chips."""

    LineSettings = gpiod.LineSettings
    EdgeEvent = gpiod.EdgeEvent
    line = gpiod.line

    def __init__(self, chips: tuple[str, ...] = (CHIP,)) -> None:
        self.chips = set(chips)
        self.levels: dict[tuple[str, int], bool] = {}  # physical levels, True = high
        self.requests: dict[tuple[str, int], FakeRequest] = {}
        self.seqno = 0
        self.fail_writes = False
        self.request_calls = 0

    def request_lines(self, path: str, config: dict[Any, Any], consumer: str | None = None,
                      event_buffer_size: int | None = None,
                      output_values: dict[Any, Any] | None = None) -> FakeRequest:
        self.request_calls += 1
        if path not in self.chips:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        ((offset, settings),) = config.items()
        assert isinstance(offset, int) and isinstance(settings, gpiod.LineSettings)
        if (path, offset) in self.requests:
            raise OSError(errno.EBUSY, "Device or resource busy")
        if settings.direction == Direction.INPUT and (path, offset) not in self.levels:
            # What a floating line settles to with its bias.
            self.levels[(path, offset)] = settings.bias == Bias.PULL_UP
        req = self.requests[(path, offset)] = FakeRequest(self, path, offset, settings, consumer)
        return req

    def drive(self, chip: str, offset: int, high: bool) -> None:
        """Set a line's physical level, as a switch or a sensor would."""
        self.levels[(chip, offset)] = high
        req = self.requests.get((chip, offset))
        if req is not None:
            req.physical_changed()

    def remove_chip(self, chip: str) -> None:
        """The chip goes away (a USB GPIO expander unplugged): its requests' fds report
        POLLHUP|POLLERR for good and their reads fail with ENODEV; new requests ENOENT."""
        self.chips.discard(chip)
        for (path, _), req in self.requests.items():
            if path == chip:
                req.gone = True
                os.write(req._w, b"h")  # readable from now on: never read again

    def physical_output(self, chip: str, offset: int) -> bool:
        req = self.requests[(chip, offset)]
        return (req.output == Value.ACTIVE) != req.settings.active_low


# ---- the gpiod backend -------------------------------------------------------------------------

def test_gpiod_backend_requests_outputs_and_inputs_with_v2_settings() -> None:
    fake = FakeGpiod()

    async def main() -> None:
        backend = GpiodBackend(fake, consumer="test")
        out = backend.output(CHIP, 17, active_low=True, initial=True)
        req = fake.requests[(CHIP, 17)]
        assert req.consumer == "test"
        assert req.settings.direction == Direction.OUTPUT and req.settings.active_low
        assert req.settings.output_value == Value.ACTIVE
        assert fake.physical_output(CHIP, 17) is False  # active low: on = driven low
        out.set(False)
        assert req.writes == [Value.INACTIVE] and fake.physical_output(CHIP, 17) is True
        changes: list[bool] = []
        inp = backend.input(CHIP, 4, on_change=changes.append, active_low=True, bias="pull-up",
                            debounce_ms=5)
        ireq = fake.requests[(CHIP, 4)]
        assert ireq.settings.edge_detection == Edge.BOTH and ireq.settings.bias == Bias.PULL_UP
        assert inp.value is False  # pulled up, active low: idle
        fake.drive(CHIP, 4, False)
        await until(lambda: changes == [True], what="the input's change")
        with pytest.raises(HardwareError, match="busy"):
            backend.output(CHIP, 4)
        with pytest.raises(HardwareError, match="/dev/gpiochip9 line 1: No such file"):
            backend.output("/dev/gpiochip9", 1)
        out.close()
        inp.close()
        assert fake.requests == {}

    run(main())


def test_gpiod_v1_module_is_refused_with_a_clear_message() -> None:
    class V1:
        Chip = object

    with pytest.raises(HardwareError, match="libgpiod v1"):
        GpiodBackend(V1()).output(CHIP, 1)


def test_debounce_turns_a_bounce_burst_into_one_change_and_ignores_short_pulses() -> None:
    fake = FakeGpiod()

    async def main() -> None:
        changes: list[bool] = []
        GpiodBackend(fake).input(CHIP, 22, on_change=changes.append, bias="pull-down",
                                 debounce_ms=20)
        # A short pulse (shorter than the debounce time) is noise: no change at all.
        fake.drive(CHIP, 22, True)
        fake.drive(CHIP, 22, False)
        # A contact that bounces and settles high: one change.
        for level in (True, False, True, False, True):
            fake.drive(CHIP, 22, level)
            await asyncio.sleep(0)
        await until(lambda: changes, what="the settled change")
        fake.drive(CHIP, 22, False)
        await until(lambda: len(changes) == 2, what="the release")
        assert changes == [True, False]

    run(main())


def test_a_button_whose_chip_goes_away_is_requested_again_and_says_so_meanwhile(
        caplog: pytest.LogCaptureFixture) -> None:
    """Review: a line whose reads kept failing (its chip removed: the fd stays readable,
    reads fail with ENODEV) stayed watched: the loop spun at a full core and logged tens of
    thousands of warnings a second, and the status showed no error. Now the line is let go
    and requested again, backing off; the status says why meanwhile, the log once."""
    fake = FakeGpiod()
    hooks = Hooks()

    async def main() -> None:
        button = Button(button_cfg(), GpiodBackend(fake, rerequest_first=0.05),
                        on_short_press=hooks.short, on_long_press=hooks.long)
        await button.start()
        gone = fake.requests[(CHIP, 5)]
        fake.remove_chip(CHIP)
        error = await until(lambda: button.status()["error"], what="the button's error")
        assert error == ("gpio /dev/gpiochip0:5: reading edge events failed: No such device; "
                         "requesting the line again")
        # Requested again (and refused: no chip) three times; the dead fd is read no more.
        await until(lambda: fake.request_calls >= 4, what="three new requests")
        assert gone.reads == 1 and gone.released
        assert "No such file or directory" in button.status()["error"]
        fake.chips.add(CHIP)  # plugged in again
        await until(lambda: button.status()["error"] is None, what="the line back")
        fake.drive(CHIP, 5, False)  # a short press works as before
        await until(lambda: button.pressed, what="the press")
        fake.drive(CHIP, 5, True)
        await until(lambda: not button.pressed, what="the release")
        await until(lambda: hooks.calls == ["short"], what="the short press")
        await button.stop()
        assert fake.requests == {}

    caplog.set_level(logging.INFO, logger="gatewayd.hardware")
    run(main())
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert said == ["gpio /dev/gpiochip0:5: reading edge events failed: No such device; "
                    "requesting the line again, backing off up to 60 s"]
    assert "gpio /dev/gpiochip0:5: the line is requested again" in caplog.messages


# ---- the button --------------------------------------------------------------------------------

def button_cfg(**kw: Any) -> ButtonConfig:
    values: dict[str, Any] = {"enabled": True, "chip": CHIP, "line": 5, "active_low": True,
                              "long_press_seconds": 0.3, "debounce_ms": 10}
    values.update(kw)
    return ButtonConfig(**values)


class Hooks:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def short(self) -> dict[str, Any]:
        self.calls.append("short")
        return {"window": "open"}

    async def long(self) -> None:
        self.calls.append("long")


def test_button_short_press_through_gpiod_calls_the_window_hook_once() -> None:
    fake = FakeGpiod()
    hooks = Hooks()

    async def main() -> None:
        button = Button(button_cfg(), GpiodBackend(fake), on_short_press=hooks.short,
                        on_long_press=hooks.long)
        await button.start()
        assert fake.levels[(CHIP, 5)] is True  # pull-up chosen for an active-low button
        for level in (False, True, False):  # press, with a bounce
            fake.drive(CHIP, 5, level)
            await asyncio.sleep(0)
        await until(lambda: button.pressed, what="the press")
        for level in (True, False, True):  # release, with a bounce
            fake.drive(CHIP, 5, level)
            await asyncio.sleep(0)
        await until(lambda: hooks.calls, what="the short-press hook")
        await until(lambda: button.last and button.last["ok"], what="the hook to finish")
        assert hooks.calls == ["short"]
        assert button.status()["presses"] == {"short": 1, "long": 0}
        await button.stop()
        assert fake.requests == {}

    run(main())


def test_button_long_press_fires_while_held_and_release_adds_nothing() -> None:
    backend = SimulatedBackend()
    hooks = Hooks()

    async def main() -> None:
        button = Button(button_cfg(), backend, on_short_press=hooks.short,
                        on_long_press=hooks.long)
        await button.start()
        backend.drive(CHIP, 5, True)
        await until(lambda: hooks.calls == ["long"], what="the long press")
        assert button.pressed  # it fired while the button was still held
        backend.drive(CHIP, 5, False)
        await until(lambda: not button.pressed, what="the release")
        # The release has been handled (the line's value and the handler change together);
        # a wrong short press would be a task now: wait until every press has run.
        await until(lambda: not button._tasks, what="the presses to finish")
        assert hooks.calls == ["long"] and button.counts == {"short": 0, "long": 1}
        await button.stop()

    run(main())


def test_press_api_runs_the_same_actions_and_reports_failures() -> None:
    async def broken() -> None:
        raise RuntimeError("no BLE adapter")

    async def main() -> None:
        hooks = Hooks()
        hw = Hardware(button_cfg(enabled=False), LedConfig(), SimulatedBackend(),
                      on_short_press=hooks.short, on_long_press=hooks.long)
        await hw.start()
        assert await hw.press("short") == {"window": "open"}
        await hw.press("long")
        assert hooks.calls == ["short", "long"]
        assert hw.led.overlay == "reset"  # the long press shows on the LED at once
        with pytest.raises(ValueError, match="short, long"):
            await hw.press("medium")
        hw.button.hooks["short"] = broken
        with pytest.raises(RuntimeError):
            await hw.press("short")
        assert hw.status()["button"]["last"]["error"] == "the action failed; see the hub's log"
        await hw.stop()

    run(main())


def test_button_on_a_missing_chip_is_reported_and_the_hub_carries_on() -> None:
    async def main() -> None:
        hooks = Hooks()
        hw = Hardware(button_cfg(chip="/dev/gpiochip7"), LedConfig(enabled=True, line=27),
                      GpiodBackend(FakeGpiod()), on_short_press=hooks.short,
                      on_long_press=hooks.long)
        await hw.start()
        status = hw.status()
        assert "gpiochip7" in status["button"]["error"]
        assert status["led"]["error"] is None
        await hw.press("short")  # gatewayctl still works
        assert hooks.calls == ["short"]
        await hw.stop()

    run(main())


# ---- the LED -----------------------------------------------------------------------------------

def test_patterns_are_all_distinct_and_cover_every_hub_phase() -> None:
    required = {"pairing", "connecting", "online", "offline", "error", "identify"}
    assert required <= set(PATTERNS)
    shapes = [tuple(steps) for steps in PATTERNS.values()]
    assert len(set(shapes)) == len(shapes)
    assert set(ONBOARDING_PATTERNS.values()) <= set(PATTERNS)
    for steps in PATTERNS.values():
        assert all(s is None or s > 0 for _, s in steps)


class RecordingLine:
    def __init__(self) -> None:
        self.value = False
        self.writes: list[tuple[float, bool]] = []
        self.closed = False

    def set(self, active: bool) -> None:
        self.value = active
        self.writes.append((time.monotonic(), active))

    def close(self) -> None:
        self.closed = True


class RecordingBackend(SimulatedBackend):
    def __init__(self) -> None:
        super().__init__()
        self.line = RecordingLine()

    def output(self, chip: str, line: int, *, active_low: bool = False,
               initial: bool = False) -> Any:
        return self.line


@pytest.mark.parametrize("name", ["pairing", "connecting", "offline", "error", "identify"])
def test_led_plays_each_pattern_in_order_with_its_timing(name: str) -> None:
    scale = 0.02
    steps = PATTERNS[name]

    async def main() -> None:
        backend = RecordingBackend()
        led = Led(LedConfig(enabled=True), backend, time_scale=scale)
        await led.start()
        line = backend.line
        await until(lambda: line.writes, what="the first write")
        start = len(line.writes)
        led.set_pattern(name)
        await until(lambda: len(line.writes) >= start + 2 * len(steps) + 1,
                    what="two cycles of the pattern")
        writes = line.writes[start:start + 2 * len(steps) + 1]
        assert [w for _, w in writes[:-1]] == [lit for lit, _ in steps] * 2
        for (t0, _), (t1, _), (_, seconds) in zip(writes, writes[1:], steps * 2, strict=False):
            assert seconds is not None
            assert t1 - t0 >= seconds * scale - 0.002  # never shorter than the pattern says
        await led.stop()
        assert line.value is False and line.closed  # dark when the daemon stops

    run(main())


def test_led_steady_patterns_and_identify_overlay() -> None:
    async def main() -> None:
        backend = RecordingBackend()
        hw = Hardware(ButtonConfig(), LedConfig(enabled=True), backend,
                      on_short_press=None, on_long_press=None, led_time_scale=0.01)
        await hw.start()
        hw.led.set_pattern("online")
        await until(lambda: backend.line.value is True, what="steady on")
        result = await hw.identify(0.3)
        assert result == {"identify": True, "seconds": 0.3, "led": True}
        assert hw.status()["led"]["pattern"] == "identify"
        await until(lambda: backend.line.writes[-1][1] is False, what="identify blinking")
        await until(lambda: hw.led.pattern == "online", what="back to online")
        await until(lambda: backend.line.value is True, what="steady on again")
        with pytest.raises(ValueError):
            await hw.identify(0)
        await hw.stop()

    run(main())


def test_led_follows_onboarding_and_flashes_error_after_a_failed_attempt() -> None:
    async def main() -> None:
        hw = Hardware(ButtonConfig(), LedConfig(), SimulatedBackend(), on_short_press=None,
                      on_long_press=None)
        await hw.start()
        for state, pattern in ONBOARDING_PATTERNS.items():
            hw.onboarding_changed(state, progress(state))
            assert hw.led.pattern == pattern
        failed = LastFailure(code="wrong-password", reason="wrong", at=0.0, attempt=None)
        hw.onboarding_changed("unpaired", progress("unpaired", last_failure=failed))
        assert hw.led.pattern == "error" and hw.led.base == "pairing"
        await hw.stop()

    run(main())


def test_a_short_press_shows_on_the_led_while_its_action_runs() -> None:
    """Review: a short press gave no sign on the LED, even when it opened pairing."""
    entered, release = asyncio.Event(), asyncio.Event()

    async def reopen_the_hotspot() -> dict[str, Any]:  # takes seconds on a real hub
        entered.set()
        await release.wait()
        return {"hotspot": True}

    async def main() -> None:
        hw = Hardware(ButtonConfig(), LedConfig(), SimulatedBackend(),
                      on_short_press=reopen_the_hotspot, on_long_press=None)
        await hw.start()
        hw.onboarding_changed("offline", progress("offline"))
        press = asyncio.create_task(hw.press("short"))
        await entered.wait()
        assert hw.status()["led"]["pattern"] == "press"
        release.set()
        assert await press == {"hotspot": True}
        await until(lambda: hw.status()["led"]["pattern"] == "offline", what="the state again")
        await hw.stop()

    run(main())


def test_an_offline_hub_open_to_pairing_shows_the_pairing_pattern() -> None:
    """On its hotspot, pairing open (a short press's window on a paired hub, or a hub with
    no account): the slow blink that asks for the app, as an unpaired hub's."""
    async def main() -> None:
        hw = Hardware(ButtonConfig(), LedConfig(), SimulatedBackend(), on_short_press=None,
                      on_long_press=None)
        await hw.start()
        hw.onboarding_changed("offline", progress("offline", hotspot=True, pairing_open=True))
        assert hw.led.pattern == "pairing"
        hw.onboarding_changed("offline", progress("offline", hotspot=True))
        assert hw.led.pattern == "offline"
        await hw.stop()

    run(main())


def test_a_paired_hub_shows_the_window_a_short_press_opens_until_it_closes(
        tmp_path: Path) -> None:
    """The daemon's wiring: a paired hub offline on its hotspot; the press opens pairing
    for ``[ble] window_seconds``, the LED slow-blinks, then shows ``offline`` again."""
    from dataclasses import replace

    from gatewayd.credentials import CloudCredentials, WifiCredentials
    from gatewayd.daemon import Daemon
    from gatewayd.identity import Identity
    from gatewayd.onboarding.machine import Onboarding
    from gatewayd.onboarding.table import State
    from gatewayd.runtime.logsetup import Redactor
    from gatewayd.state import StateStore
    from tests.fakes import FakeClock, FakeWifi, StubCloud
    from tests.helpers import base_config, write_config

    config = load_config(write_config(tmp_path / "g.toml", base_config(
        tmp_path, "[ble]\nenabled = false\n[led]\nenabled = true\n")))
    config = replace(config, ble=replace(config.ble, window_seconds=1.0))  # below its 10 s
    identity = Identity("dc-a6-32-12-34-56", "dc:a6:32:12:34:56", "Acme Hub")
    store = StateStore(config.state_dir)
    store.open(device_id=identity.device_id, mac=identity.mac)
    store.commit_pairing(WifiCredentials("HomeNet", "supersecret"),
                         CloudCredentials("user@example.com", "t0k", "127.0.0.1", 1883))
    clock = FakeClock()  # onboarding's timers: its offline grace

    class RouterOff(Daemon):
        def _build_machine(self, hub: Any, wifi: Any, cloud: Any) -> Onboarding:
            return Onboarding(self.config, self.store, FakeWifi({}), cloud, clock=clock,
                              sleep=clock.sleep)

    daemon = RouterOff(config, store, identity, Redactor(), simulate=True,
                       cloud_step=StubCloud())

    def led() -> dict[str, Any]:
        assert daemon.hub is not None
        return daemon.hub.status()["hardware"]["led"]  # type: ignore[no-any-return]

    async def scenario() -> None:
        await asyncio.wait_for(daemon.ready.wait(), 30)
        ob = daemon.onboarding
        assert ob is not None and daemon.hardware is not None
        await ob.wait_for(lambda: ob.state == State.OFFLINE, 10)
        await clock.sleeps(1)
        clock.advance(config.hotspot.offline_grace)  # the hotspot comes back
        await ob.wait_for(lambda: ob.progress().hotspot, 10)
        assert led()["base"] == "offline" and not ob.pairing_open
        await daemon.hardware.press("short")
        assert ob.pairing_open and led()["base"] == "pairing"
        await until(lambda: led()["base"] == "offline", 10, "the window to close")
        assert not ob.pairing_open

    async def main() -> None:
        running = asyncio.create_task(daemon.run())
        try:
            await scenario()
        finally:
            if daemon.hub is not None:
                daemon.hub.stop_requested.set()
            await running

    run(main(), timeout=45)


def test_the_led_follows_a_ble_window_opened_and_closed_from_elsewhere(tmp_path: Path) -> None:
    """The BLE window opens pairing on a paired hub offline on its hotspot too (`gatewayctl
    ble-window open`, a press), and closes it (`close`, its time): the LED follows both."""
    from gatewayd.onboarding.listeners import follow_window
    from tests.fakes import FakeWifi
    from tests.test_onboarding_machine import grace_over, offline_on_a_fake_clock

    class Commissioner:  # the window as the daemon follows it: open or not, and a condition
        def __init__(self) -> None:
            self.window_open = False
            self.changed = asyncio.Condition()

        async def window(self, is_open: bool) -> None:
            self.window_open = is_open
            async with self.changed:
                self.changed.notify_all()

    async def main() -> None:
        ble = Commissioner()
        hw = Hardware(ButtonConfig(), LedConfig(), SimulatedBackend(), on_short_press=None,
                      on_long_press=None)
        await hw.start()
        async with offline_on_a_fake_clock(tmp_path, FakeWifi({})) as (ob, clock):
            ob.subscribe(hw.onboarding_changed)
            ob.window = lambda: ble.window_open  # the daemon's wiring, without a press
            follow = asyncio.create_task(follow_window(ble, ob))
            await grace_over(clock)  # the hotspot is back
            assert ob.progress().hotspot and hw.led.base == "offline"
            await ble.window(True)
            await until(lambda: hw.led.base == "pairing", what="the window shown")
            await ble.window(False)
            await until(lambda: hw.led.base == "offline", what="the window closed")
            follow.cancel()
        await hw.stop()

    run(main())


def test_led_write_failure_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeGpiod()

    async def main() -> None:
        led = Led(LedConfig(enabled=True, chip=CHIP, line=27), GpiodBackend(fake),
                  time_scale=0.01)
        fake.fail_writes = True
        await led.start()
        led.set_pattern("connecting")
        req = fake.requests[(CHIP, 27)]
        await until(lambda: req.attempts >= 6, what="several failing writes")
        await led.stop()

    run(main())
    assert len([r for r in caplog.records if "Input/output error" in r.getMessage()]) == 1


def test_a_failing_led_shows_its_error_in_the_status_while_writes_fail() -> None:
    """Review: a write failure was logged once, but `gatewayctl status` said led.error null."""
    fake = FakeGpiod()

    async def main() -> None:
        hw = Hardware(ButtonConfig(), LedConfig(enabled=True, chip=CHIP, line=27),
                      GpiodBackend(fake), on_short_press=None, on_long_press=None,
                      led_time_scale=0.01)
        fake.fail_writes = True
        await hw.start()
        hw.led.set_pattern("connecting")
        error = await until(lambda: hw.status()["led"]["error"], what="the LED's error")
        assert error == "gpio /dev/gpiochip0:27: cannot set the line: Input/output error"
        fake.fail_writes = False  # a loose contact that holds again
        await until(lambda: hw.status()["led"]["error"] is None, what="the error to clear")
        await hw.stop()

    run(main())


# ---- the long press resets the hub (Hub + Onboarding against the NetworkManager mock) ---------

@pytest.fixture
def nm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from gatewayd.simulator.dbus_daemon import PrivateBus
    from gatewayd.simulator.nm_mock import NetworkManagerMock

    bus = PrivateBus(tmp_path / "bus").start()
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)
    mock = NetworkManagerMock(bus, tmp_path / "nm").start()
    yield mock
    mock.stop()
    bus.stop()


@asynccontextmanager
async def paired_hub(tmp_path: Path) -> AsyncIterator[tuple[Any, Any]]:
    from gatewayd.ap import NetworkManagerControl
    from gatewayd.credentials import CloudCredentials, WifiCredentials
    from gatewayd.hub import Hub
    from gatewayd.identity import Identity
    from gatewayd.onboarding.machine import Onboarding
    from gatewayd.onboarding.pairing import PairingRequest
    from gatewayd.onboarding.table import State
    from gatewayd.runtime.logsetup import Redactor
    from gatewayd.runtime.sdnotify import Notifier
    from gatewayd.state import StateStore
    from tests.fakes import StubCloud

    identity = Identity("dc-a6-32-12-34-56", "dc:a6:32:12:34:56", "Acme Hub")
    cfg = with_overrides(Config(), hub={"state_dir": str(tmp_path / "state")},
                         hotspot={"connect_timeout": 5.0})
    store = StateStore(cfg.state_dir)
    store.open(device_id=identity.device_id, mac=identity.mac)
    hub = Hub(cfg, store, identity, Notifier(), Redactor())
    ob = Onboarding(cfg, store, NetworkManagerControl(cfg, identity), StubCloud())
    hub.on_reset(ob.reset)
    await ob.start()
    try:
        await ob.begin(PairingRequest(
            cloud=CloudCredentials("user@example.com", "t0k", "127.0.0.1", 1883),
            wifi=WifiCredentials("HomeNet", "supersecret"), source="test"))
        await ob.wait_for(lambda: ob.state == State.ONLINE, 15)
        assert store.state.paired
        yield hub, ob
    finally:
        await ob.stop()


@pytest.mark.slow
def test_long_press_wipes_credentials_and_brings_the_hotspot_back(nm: Any,
                                                                 tmp_path: Path) -> None:
    from gatewayd.ap import HOTSPOT_ID
    from gatewayd.onboarding.table import State

    backend = SimulatedBackend()
    short_calls: list[str] = []

    async def open_window() -> None:
        short_calls.append("window")

    async def main() -> None:
        async with paired_hub(tmp_path) as (hub, ob):
            hw = Hardware(button_cfg(chip="sim", line=3), LedConfig(), backend,
                          on_short_press=open_window, on_long_press=hub.reset)
            ob.subscribe(hw.onboarding_changed)
            await hw.start()
            backend.drive("sim", 3, True)  # press ... and hold
            await ob.wait_for(lambda: ob.state == State.UNPAIRED and ob.wifi is not None
                              and ob.wifi.hotspot_active, 15)
            await until(lambda: hw.button.last and hw.button.last["ok"], what="the reset")
            backend.drive("sim", 3, False)
            await until(lambda: not hw.button.pressed, what="the release")
            assert not hub.store.state.paired  # credentials wiped
            assert hub.store.state.wifi is None and hub.store.state.cloud is None
            assert ob.wifi is not None and ob.wifi.hotspot_active
            assert hw.led.base == "pairing"
            assert short_calls == []
            active = [a["id"] for a in nm.active_connections() if a["id"] != "lo"]
            assert active == [HOTSPOT_ID]
            await hw.stop()

    run(main(), timeout=45)
