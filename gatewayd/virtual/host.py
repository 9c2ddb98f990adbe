"""Virtual devices hosted on the hub: each ``[[virtual]]`` table becomes a ``virtual-<id>``
child device on the cloud link (a 2Smart "Others" device).

:class:`VirtualDevices` is the daemon component that hosts them. It isolates every plugin:

* each plugin method runs inside a guard; an exception is logged with its traceback, the
  device goes to ``$state = alert`` and everything else carries on. A successful later call
  of the same kind (the next poll, the next ``/set``) clears the fault;
* async methods are bounded by timeouts. A plugin that ignores the cancellation is left
  behind (and logged), never awaited, so it cannot hold up the daemon's stop either; its
  device gets no new poll or ``/set`` while that call still runs (``abandoned``);
* a device whose type does not load, or whose ``__init__``/``nodes()`` fails, is still
  published, as a placeholder with ``$state = alert`` and a ``status/error`` property,
  so the app shows what is wrong instead of a device that silently vanished.

Synchronous plugin code runs on the event loop and cannot be interrupted; the systemd
watchdog (``gatewayd.runtime.sdnotify``) catches a plugin that blocks the loop for good.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatewayd import homie
from gatewayd.cloud.reqres import PlatformClient
from gatewayd.config import VirtualDeviceConfig
from gatewayd.hardware.lines import HardwareError, LineBackend
from gatewayd.runtime.logsetup import LogBudget
from gatewayd.virtual.abandoned import MAX_ABANDONED, Abandoned, Hung, contained
from gatewayd.virtual.budget import Later, Outlet
from gatewayd.virtual.checks import check_description
from gatewayd.virtual.faults import fault_text
from gatewayd.virtual.hosted import Hosted
from gatewayd.virtual.kept import KeptValues
from gatewayd.virtual.planning import plan_devices
from gatewayd.virtual.plugin import (
    DeviceContext,
    PluginType,
    Registry,
    VirtualDevice,
)

__all__ = ["VirtualDevices"]
log = logging.getLogger(__name__)
IMPLEMENTATION = "gatewayd virtual"
FAILING_AFTER = 3  # faults in a row before the user is told the plugin keeps failing
MAX_POLL_TIMEOUT = 3600.0


# Calls skipped while one of the device's calls, abandoned, still runs: the ones that
# come again and again. start() and stop() come once each, and stop() may free a hung call.
SKIPPED_WHILE_ABANDONED = ("poll", "on_set")


@dataclass
class _Outcome:
    ok: bool
    value: Any = None
    timed_out: bool = False
    busy: bool = False  # not called: an abandoned call of the device still runs


class _PlatformFor:
    """A plugin's view of the platform client: its requests count against its own bound."""

    def __init__(self, client: PlatformClient, device_id: str) -> None:
        self._client = client
        self._caller = device_id

    async def request(self, endpoint: str, data: Any = None, *,
                      timeout: float = 10.0) -> Any:
        return await self._client.request(endpoint, data, timeout=timeout,
                                          caller=self._caller)


class VirtualDevices:
    """The ``virtual`` daemon component: builds, publishes and supervises virtual devices.

    ``publisher`` is the cloud link; ``gpio`` the GPIO backend for ``gpio`` devices.
    Constructing it validates the config (ConfigError); nothing runs before :meth:`start`.
    """

    name = "virtual"

    def __init__(self, configs: Sequence[VirtualDeviceConfig], publisher: homie.ChildPublisher, *,
                 registry: Registry | None = None, gpio: LineBackend | None = None,
                 file: str = "<config>", start_timeout: float = 10.0,
                 stop_timeout: float = 5.0, call_timeout: float = 8.0,
                 platform: PlatformClient | None = None,
                 kept_file: Path | None = None, max_abandoned: int = MAX_ABANDONED,
                 clock: Callable[[], float] | None = None, later: Later | None = None) -> None:
        # call_timeout stays below the cloud link's command timeout (10 s), so a hung /set
        # handler is caught here, recorded as a fault, and answered with TIMEOUT.
        self.publisher = publisher
        self.gpio = gpio
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.call_timeout = call_timeout
        self.registry = registry or Registry()
        self.platform = platform
        self.kept = KeptValues(kept_file)
        # What a user is told (gatewayd.cloud.notifications: kind, sender, message).
        self.notify: Callable[[str, str, str], object] = lambda kind, sender, message: None
        self.hosted: dict[str, Hosted] = {}
        for plan in plan_devices(configs, self.registry, file):
            name = plan.config.name or plan.config.id
            self.hosted[plan.device_id] = Hosted(
                plan, name, logging.getLogger(f"{__name__}.{plan.config.id}"))
        self._abandoned = Abandoned(max_abandoned)
        # The publishing budgets' time (gatewayd.virtual.budget): the event loop's by default.
        self._clock = clock
        self._later: Later = later or (lambda d, c: asyncio.get_running_loop().call_later(d, c))
        self._said = LogBudget(log, "virtual devices publishing over their budget",
                               later=self._later)

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Build and start every device, concurrently; never raises for a plugin's fault."""
        await self.kept.load(set(self.hosted))
        results = await asyncio.gather(*(self._start_one(h) for h in self.hosted.values()),
                                       return_exceptions=True)
        self._log_bugs("start", results)
        ready = sum(1 for h in self.hosted.values() if not h.faults)
        log.info("virtual devices: %d of %d running without faults", ready, len(self.hosted))

    async def stop(self) -> None:
        results = await asyncio.gather(*(self._stop_one(h) for h in self.hosted.values()),
                                       return_exceptions=True)
        self._log_bugs("stop", results)
        left = self._abandoned.cancel_all()
        if left:
            # Nothing ends a task that swallows CancelledError; no new ones start now.
            log.warning("virtual devices: %d plugin calls ignore their cancellation and still "
                        "run; they end with the daemon", left)
        try:
            await asyncio.wait_for(self.kept.flush(), self.stop_timeout)
        except TimeoutError:
            log.warning("virtual devices: the kept values were not written within %g s",
                        self.stop_timeout)

    def _log_bugs(self, what: str, results: list[Any]) -> None:
        # Plugin faults never get here (the guard keeps them); this is the host's own bug
        # or a publisher failure, and still must not stop the other devices or the daemon.
        for h, result in zip(self.hosted.values(), results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, BaseException):
                log.error("virtual devices: %s of %s failed", what, h.device_id,
                          exc_info=(type(result), result, result.__traceback__))

    async def _start_one(self, h: Hosted) -> None:
        plan = h.plan
        if plan.failure or plan.ptype is None:
            self._fault(h, "load", plan.failure or "the plugin did not load")
            self._publish_placeholder(h)
            return
        access = (_PlatformFor(self.platform, h.device_id) if self.platform is not None
                  else None)
        ctx = DeviceContext(plan.config, plan.index, h.device_id, h.name, h.log, self.gpio, self,
                            access)
        outcome = await self._guarded(h, "init", plan.ptype.cls, ctx, plan.options,
                                      timeout=self.call_timeout)
        if not outcome.ok:
            self._publish_placeholder(h)
            return
        h.plugin = outcome.value
        device = await self._describe(h, plan.ptype)
        if device is None:
            h.plugin = None  # never started, so never stopped either
            self._publish_placeholder(h)
            return
        h.device = device
        h.configured = self.kept.restore(device, type(h.plugin).kept_values)
        self._install_handlers(h, device)
        if not self._add(h, device):
            return
        h.outlet = Outlet(device, self.publisher, log=h.log, say=self._said, faults=h.faults,
                          changed=functools.partial(self._push_state, h),
                          clock=self._clock or asyncio.get_running_loop().time,
                          later=self._later)
        outcome = await self._guarded(h, "start", h.plugin.start, timeout=self.start_timeout)
        h.started = outcome.ok
        self._push_state(h)
        if outcome.ok and h.plugin.poll_interval is not None:
            h.poller = asyncio.get_running_loop().create_task(
                self._poll_loop(h), name=f"poll-{h.device_id}")

    async def _describe(self, h: Hosted, ptype: PluginType) -> homie.Device | None:
        plugin = h.plugin
        assert plugin is not None

        def build() -> homie.Device:
            nodes = list(plugin.nodes())
            options = list(plugin.device_options())
            telemetry = list(plugin.device_telemetry())
            for item in (*nodes, *options, *telemetry):
                if not isinstance(item, homie.Node | homie.Property):
                    raise TypeError(f"nodes()/device_options()/device_telemetry() returned "
                                    f"{type(item).__name__}")
            device = homie.Device(h.device_id, h.name, nodes=nodes, options=options,
                                  telemetry=telemetry, state="init",
                                  implementation=IMPLEMENTATION, fw_name=ptype.name,
                                  fw_version=ptype.cls.version or ptype.version)
            check_description(device)
            return device

        outcome = await self._guarded(h, "describe", build, timeout=self.call_timeout)
        return outcome.value if outcome.ok else None

    def _add(self, h: Hosted, device: homie.Device) -> bool:
        try:
            self.publisher.add_device(device)
        except Exception:
            h.log.exception("publishing %s failed", h.device_id)
            h.faults["publish"] = "the device could not be published"
            device.state = "alert"
            return False
        h.added = True
        return True

    def _publish_placeholder(self, h: Hosted) -> None:
        reason = "; ".join(h.faults.values()) or "the plugin failed"
        h.device = homie.Device(
            h.device_id, h.name, state="alert", implementation=IMPLEMENTATION,
            fw_name=h.plan.config.type,
            nodes=[homie.Node("status", "Status", properties=[
                homie.Property("error", "Error", value=reason[:1000])])])
        self._add(h, h.device)

    async def _stop_one(self, h: Hosted) -> None:
        background = {*h.tasks, *([h.poller] if h.poller is not None else [])}
        for task in background:
            task.cancel()
        if background:
            await asyncio.wait(background, timeout=self.stop_timeout)
        h.poller = None
        # stop() runs even after a failed start(): the plugin may hold half its resources.
        if h.plugin is not None and h.device is not None and not h.stopped:
            await self._guarded(h, "stop", h.plugin.stop, timeout=self.stop_timeout)
        h.stopped = True
        if h.outlet is not None:
            h.outlet.close()  # the values it held back go out: the cloud keeps the latest

    async def _poll_loop(self, h: Hosted) -> None:
        plugin = h.plugin
        assert plugin is not None
        interval = plugin.poll_interval
        if not isinstance(interval, int | float) or interval <= 0:
            self._fault(h, "poll", f"poll_interval must be a positive number, got {interval!r}")
            return
        timeout = min(plugin.poll_timeout or self.call_timeout, MAX_POLL_TIMEOUT)
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            await self._guarded(h, "poll", plugin.poll, timeout=timeout)
            # A fixed schedule; a poll that overran its slot starts the next one at once.
            due = max(due + interval, loop.time())
            await asyncio.sleep(due - loop.time())

    # ---- the guard -----------------------------------------------------------------------

    async def _guarded(self, h: Hosted, what: str, fn: Callable[..., Any], *args: Any,
                       timeout: float | None,
                       passthrough: tuple[type[BaseException], ...] = ()
                       ) -> _Outcome:
        """Call plugin code; a failure becomes a recorded fault, never an exception
        (except ``passthrough`` ones, which are the plugin's answers, not faults).
        ``timeout`` bounds an awaitable result; None: no bound (background tasks)."""
        busy = self._abandoned.blocking(h.device_id)
        if busy is not None and what in SKIPPED_WHILE_ABANDONED:
            self._fault(h, what, f"{what} skipped: {busy}")
            return _Outcome(False, busy=True)
        try:
            result = fn(*args)
            if inspect.isawaitable(result):
                result = await (result if timeout is None
                                else self._bounded(h, what, result, timeout))
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we are being cancelled (stop, the link's command timeout)
            # The plugin cancelled its own work, or raised CancelledError: its fault.
            self._fault(h, what, f"{what} was cancelled")
            return _Outcome(False)
        except Hung:
            self._fault(h, what, f"{what} did not finish within {timeout:g} s")
            return _Outcome(False, timed_out=True)
        except passthrough:
            raise
        except (Exception, SystemExit) as exc:  # SystemExit: sys.exit() in a plugin
            if isinstance(exc, HardwareError):  # says which line and why, in our words
                self._fault(h, what, f"{what}: {exc}", exc)
                return _Outcome(False)
            # The type decides whether its traceback is logged again; the words may vary.
            self._fault(h, what, fault_text(what, exc), exc, kind=type(exc).__name__)
            return _Outcome(False)
        self._clear(h, what)
        return _Outcome(True, result)

    async def _bounded(self, h: Hosted, what: str, aw: Awaitable[Any], timeout: float) -> Any:
        task = asyncio.get_running_loop().create_task(contained(aw),
                                                      name=f"{h.device_id} {what}")
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
        except asyncio.CancelledError:
            self._abandoned.add(task, h.device_id, what, "when gatewayd stopped waiting")
            raise
        if not done:
            # asyncio.wait_for would wait for the cancellation to finish, and a plugin that
            # swallows CancelledError would hang us with it: cancel and walk away.
            self._abandoned.add(task, h.device_id, what, f"after {timeout:g} s")
            raise Hung
        return task.result()

    def _fault(self, h: Hosted, what: str, message: str,
               exc: BaseException | None = None, kind: str | None = None) -> None:
        h.failures += 1
        h.in_a_row += 1
        if h.in_a_row == FAILING_AFTER:
            self.notify("plugin-failing", h.device_id,
                        f"{h.name} keeps failing ({what}: {message})")
        kind = kind or message
        repeated = what in h.faults and h.kinds.get(what) == kind
        h.faults[what], h.kinds[what] = message, kind
        if repeated:  # a poll failing every minute logs its traceback once, not forever
            h.log.debug("%s: %s (again, %d faults so far)", h.device_id, message, h.failures)
        else:
            h.log.error("%s: %s", h.device_id, message,
                        exc_info=(type(exc), exc, exc.__traceback__) if exc else None)
        self._push_state(h)

    def _clear(self, h: Hosted, what: str) -> None:
        h.in_a_row = 0
        h.kinds.pop(what, None)
        if h.faults.pop(what, None) is not None:
            h.log.info("%s: %s works again", h.device_id, what)
            self._push_state(h)

    def _push_state(self, h: Hosted) -> None:
        device = h.device
        if device is None:
            return
        state = "alert" if h.faults else h.plugin_state
        if not h.started and not h.faults:
            state = "init"
        if state == device.state:
            return
        device.state = state
        if h.added:
            try:
                self.publisher.set_state(h.device_id, state)
            except Exception:
                h.log.exception("publishing $state of %s failed", h.device_id)

    # ---- /set --------------------------------------------------------------------------------

    def _install_handlers(self, h: Hosted, device: homie.Device) -> None:
        for path, prop in device.paths():
            if prop.settable:
                node_id, _, prop_id = path.rpartition("/")
                prop.on_set = self._handler(h, node_id, prop_id, prop.on_set)

    def _handler(self, h: Hosted, node_id: str, prop_id: str,
                 own: Callable[[Any], Awaitable[Any]] | None
                 ) -> Callable[[Any], Awaitable[Any]]:
        async def on_set(value: Any) -> Any:
            plugin = h.plugin
            if plugin is None or h.stopped:
                raise homie.CommandError(homie.ERROR, f"{h.device_id} is not running")
            fn = own if own is not None else functools.partial(plugin.on_set, node_id, prop_id)
            outcome = await self._guarded(h, "on_set", fn, value, timeout=self.call_timeout,
                                          passthrough=(homie.CommandError,))
            if outcome.ok:
                path = f"{node_id}/{prop_id}"
                if path in h.configured and h.device is not None:
                    self._remember(h, path, value if outcome.value is None else outcome.value)
                return outcome.value
            if outcome.busy:
                raise homie.CommandError(homie.BUSY, f"{h.device_id} is still running an "
                                                     f"earlier call that did not end")
            if outcome.timed_out:
                raise homie.CommandError(homie.TIMEOUT, f"{h.device_id} did not apply the value "
                                                        f"within {self.call_timeout:g} s")
            # The details are in the hub's log; the cloud gets a plain sentence.
            raise homie.CommandError(homie.ERROR, f"{h.device_id} failed to apply the value")

        return on_set

    def _remember(self, h: Hosted, path: str, value: Any) -> None:
        assert h.device is not None
        try:
            value = h.device.find(path).validate(value)
        except ValueError:
            return  # refused by the link as well: nothing was set
        self.kept.remember(h.device_id, path, value, h.configured[path])

    # ---- the host API for plugins (VirtualDevice.publish and friends) --------------------

    def _hosted_for(self, plugin: VirtualDevice) -> Hosted:
        h = self.hosted.get(plugin.ctx.device_id)
        if h is None or h.plugin is not plugin:
            raise RuntimeError("unknown virtual device")
        return h

    def publish(self, plugin: VirtualDevice, node_id: str, property_id: str, value: Any, *,
                force: bool = False) -> bool:
        h = self._hosted_for(plugin)
        if h.stopped or h.outlet is None:
            return False
        return h.outlet.publish(node_id, property_id, value, force=force)

    def spawn(self, plugin: VirtualDevice, coro: Coroutine[Any, Any, Any],
              name: str = "") -> asyncio.Task[Any]:
        h = self._hosted_for(plugin)

        async def run() -> None:
            # No timeout: a background task may rightly run as long as the device does.
            await self._guarded(h, "task", lambda: coro, timeout=None)

        task = asyncio.get_running_loop().create_task(run(), name=name or f"{h.device_id}-task")
        h.tasks.add(task)
        task.add_done_callback(h.tasks.discard)
        return task

    def plugin_state(self, plugin: VirtualDevice, state: str, reason: str | None = None) -> None:
        h = self._hosted_for(plugin)
        h.plugin_state = state
        h.plugin_reason = reason if state != "ready" else None
        self._push_state(h)

    def value(self, plugin: VirtualDevice, path: str) -> Any:
        h = self._hosted_for(plugin)
        try:
            if h.device is None:
                raise KeyError(path)
            return h.device.find(path).value
        except KeyError:
            raise KeyError(f"{h.device_id} has no property {path}") from None

    # ---- reporting -------------------------------------------------------------------------

    def devices(self) -> list[dict[str, Any]]:
        """What ``gatewayctl devices`` lists; JSON-able."""
        out = []
        for h in self.hosted.values():
            ptype = h.plan.ptype
            out.append({
                "device_id": h.device_id, "provider": "virtual", "type": h.plan.config.type,
                "name": h.name, "state": h.state,
                "error": "; ".join(h.problems) or None,
                "plugin": ptype.source if ptype else None,
                "version": (ptype.cls.version or ptype.version) if ptype else None,
            })
        return sorted(out, key=lambda d: d["device_id"])

    def status(self) -> dict[str, Any]:
        """For ``gatewayctl status``."""
        return {"devices": len(self.hosted),
                "faulty": sorted(h.device_id for h in self.hosted.values()
                                 if h.problems),
                "types": self.registry.names()}
