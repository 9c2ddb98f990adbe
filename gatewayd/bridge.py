"""The Zigbee bridge: every joined device becomes its own 2Smart "Others" device.

``zigbee-<ieee hex>`` children are published through a :class:`~gatewayd.homie.ChildPublisher` (the
cloud link) with ``$state`` ``init`` during the interview, ``ready`` (or ``sleeping``
for battery devices that only poll) afterwards, ``disconnected`` while unreachable or
while the radio is gone, ``lost`` once they leave. The hub gets a ``zigbee`` node:
``permitjoin`` (settable seconds), ``device-count``, ``channel``, ``pan-id``,
``status``, and settable ``install-code`` and ``remove``.

The radio is supervised: if it cannot be opened, or disappears later (unplugged,
watchdog failure), the bridge retries with jittered exponential backoff
(:mod:`gatewayd.zigbee.retries`; a radio lost soon after it came up too) while the rest of the
daemon runs on, and on success restores every child from ``zigbee.db`` with no new
interview (but the setup where it had not finished, :mod:`gatewayd.zigbee.setups`).
Values go out through a per-property coalescer, so a chatty device costs at most one
publication per property per ``min_interval``. zigpy is imported only once
:meth:`ZigbeeBridge.start` runs (``gatewayd.zigbee.*``). What users ask of the bridge
(permit join, install codes, removal, status) is :mod:`gatewayd.zigbee.operations`; a full
reset's new network :mod:`gatewayd.zigbee.full_reset`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatewayd import homie
from gatewayd.config import ZigbeeConfig
from gatewayd.runtime.atomicfile import atomic_write
from gatewayd.runtime.writebehind import Write
from gatewayd.zigbee.radio import (
    SHUTDOWN_SECONDS,
    FastPaths,
    RadioError,
    fast_paths,
    preload,
    shutdown_controller,
    start_controller,
)
from gatewayd.zigbee.simlink import SimLink

if TYPE_CHECKING:
    from zigpy.application import ControllerApplication

    from gatewayd.zigbee.child import Child
    from gatewayd.zigbee.virtual.radio import VirtualNetwork
from gatewayd.zigbee.alerts import Alerts
from gatewayd.zigbee.availability import watch_availability
from gatewayd.zigbee.children import Children
from gatewayd.zigbee.coalesce import Coalescer
from gatewayd.zigbee.coordinators import former_coordinators, is_coordinator, take_over
from gatewayd.zigbee.db_file import BackupFile
from gatewayd.zigbee.full_reset import BridgeReset
from gatewayd.zigbee.hub_node import HUB_NODE, zigbee_node
from gatewayd.zigbee.left import LEFT_FILE, LeftDevices
from gatewayd.zigbee.new_network import NewNetwork
from gatewayd.zigbee.operations import BridgeOperations
from gatewayd.zigbee.permits import PermitJoin
from gatewayd.zigbee.publishing import BridgePublishing
from gatewayd.zigbee.radio_words import radio_lost
from gatewayd.zigbee.retries import Retries
from gatewayd.zigbee.setups import SETUP_FILE, SETUP_RETRY, SetupRetry, Setups
from gatewayd.zigbee.status_line import StatusLine

log = logging.getLogger(__name__)

RESTORE_BATCH = 16  # devices restored between two turns of the event loop


class ZigbeeBridge(BridgeOperations, BridgePublishing, BridgeReset):
    """The ``zigbee`` daemon component (``start``/``stop``), all on the asyncio loop."""

    name = "zigbee"

    def __init__(self, cfg: ZigbeeConfig, state_dir: Path, publisher: homie.ChildPublisher, *,
                 hub: homie.Device | None = None, status_text: Callable[[str], None] | None = None,
                 retry_min: float = 1.0, retry_max: float = 60.0, min_interval: float = 0.2,
                 availability_interval: float = 60.0, mains_timeout: float = 600.0,
                 battery_timeout: float = 25 * 3600.0,
                 shutdown_timeout: float = SHUTDOWN_SECONDS,
                 rng: random.Random | None = None, setup_retry: SetupRetry = SETUP_RETRY,
                 virtual: VirtualNetwork | None = None, write: Write = atomic_write) -> None:
        self.cfg, self.state_dir, self.publisher, self.hub = cfg, Path(state_dir), publisher, hub
        self.shutdown_timeout = shutdown_timeout
        self.rng = rng or random.Random()  # noqa: S311 (retry jitter, not a secret)
        self.retries = Retries(retry_min, retry_max, self.rng)  # zigbee/retries.py
        self.availability_interval, self.mains_timeout, self.battery_timeout = (
            availability_interval, mains_timeout, battery_timeout)
        self.app: ControllerApplication | None = None
        self.children = Children()  # by IEEE text; .of(device object) on the hot path
        # `lost` across restarts; both files are written off the loop, by ``write``.
        self.left = LeftDevices(self.state_dir / LEFT_FILE, write)
        self.status_line = StatusLine(status_text, self.children)  # STATUS=, gatewayctl
        self.last_error: str | None = None
        self.radio_up = asyncio.Event()
        self.up_hooks: list[Callable[[], object]] = []  # called once the radio is up again
        self.coalescer = Coalescer(self._publish, min_interval)
        self._lost = asyncio.Event()
        self.setups = Setups(self.state_dir / SETUP_FILE, self._set_up, setup_retry, self.rng,
                             write)
        self._supervisor: asyncio.Task[None] | None = None
        self.permits = PermitJoin(cfg.permit_join_max,
                                  lambda seconds: self._hub_value("permitjoin", seconds))
        self._sim: SimLink | None = None
        self.new_network = NewNetwork(self.state_dir)  # a full reset's, until it is formed
        self.backup_file = BackupFile(self.state_dir, write)  # zigbee-backup.json
        self.db_aside: Path | None = None  # where a damaged zigbee.db went (db_file.py)
        self._told_channel: int | None = None  # a running channel not the config's, logged
        self._virtual = virtual  # the virtual radio's network (zigbee/operations.py)
        self._virtual_lock = threading.Lock()
        self.fast = FastPaths()  # the radio's fast paths, once it runs (zigbee/radio.py)
        self.hub_node = zigbee_node(self.cfg.permit_join_max, self)
        self.alerts = Alerts(lambda: hub.id if hub is not None else "hub")

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start supervising the radio; never fails because of the radio itself. The
        radio library is imported here, in a thread: before READY, not on the loop."""
        if self.hub is not None and HUB_NODE not in self.hub.nodes:
            self.hub.nodes[HUB_NODE] = self.hub_node
            self.publisher.add_device(self.hub)
        await asyncio.to_thread(preload, self.cfg.radio, self.cfg.ota)
        self._supervisor = asyncio.create_task(self._supervise(), name="zigbee-supervisor")

    async def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        self.setups.stop_all()
        self.coalescer.cancel()
        self.permits.cancel()
        if self._sim is not None:
            await self._sim.close()
        app, self.app = self.app, None
        self.radio_up.clear()
        for child in self.children.values():
            child.detach()
        if app is not None:
            await self._shutdown(app)
        await self._files_written()

    async def _files_written(self) -> None:
        """What changed in zigbee-left.json, -setup.json and -backup.json is on disk."""
        await self.left.flush()
        await self.setups.pending.flush()
        await self.backup_file.flush()

    async def _supervise(self) -> None:
        while True:
            try:
                # The world file is read once, in a thread: not on the loop.
                virtual = (await asyncio.to_thread(lambda: self.virtual)
                           if self.cfg.radio == "virtual" else None)
                started = await start_controller(self.cfg, self.state_dir, virtual,
                                                 self._db_moved_aside)
                app = await self._new_network(started)
            except RadioError as exc:
                if str(exc) != self.last_error:  # the journal gets each new reason once
                    log.error("zigbee: %s; retrying", exc, exc_info=exc.details)
                self.last_error = str(exc)
                if self.status_line.radio != f"down: {exc}":  # not again at every retry
                    self._hub_value("status", f"down: {exc}")
                await self.retries.failed(exc)
                continue
            if app is None:
                continue  # it left the old network: the next start forms the new one
            self._lost.clear()
            await self._up(app)
            self.retries.up()
            availability = asyncio.create_task(watch_availability(
                lambda: list(self.children.values()), self,
                interval=self.availability_interval, mains_timeout=self.mains_timeout,
                battery_timeout=self.battery_timeout, ping_timeout=self.cfg.command_timeout))
            try:
                await self._lost.wait()
            finally:
                availability.cancel()
            await self._down(app)
            await self.retries.lost()  # at once, unless it keeps dropping soon after it came up

    async def _up(self, app: ControllerApplication) -> None:
        self.app = app
        self.last_error = None
        self.fast = fast_paths(app, self.cfg.radio)
        self.backup_file.follow(app)  # kept outside zigbee.db too
        if former := former_coordinators(app):  # another stick ran the network before
            take_over(app, former, self.children, self.setups, self._drop, self._is_child)
        app.add_listener(self)
        for n, dev in enumerate(list(app.devices.values())):
            if n % RESTORE_BATCH == RESTORE_BATCH - 1:
                await asyncio.sleep(0)  # 200 devices at once held the loop for ~70 ms
            if self._is_child(dev):
                try:
                    self._restore(dev)
                except Exception:
                    log.exception("zigbee: cannot restore %s", dev.ieee)
        info = app.state.network_info
        self._channel(int(info.channel))
        self._hub_value("channel", int(info.channel))
        self._hub_value("pan-id", f"0x{int(info.pan_id):04x}")
        self._hub_value("status", "ready")
        self.permits.closed()
        self._count()
        self.radio_up.set()
        self.alerts.radio_up()
        for hook in self.up_hooks:
            try:
                hook()
            except Exception:
                log.exception("zigbee: a radio-up hook failed")

    async def _down(self, app: ControllerApplication) -> None:
        self.radio_up.clear()
        self.app = None
        self._hub_value("status", f"down: {self.last_error or 'radio lost'}")
        self.setups.stop_all()
        for child in self.children.values():
            child.detach()
            if child.state != "lost":
                self._set_state(child, "disconnected")
        await self._shutdown(app)

    def _channel(self, running: int) -> None:
        """[zigbee] channel is used only to form a network: said once, not at every start."""
        if running != self.cfg.channel and running != self._told_channel:
            self._told_channel = running
            log.warning("zigbee: the network runs on channel %d, not on [zigbee] channel = %d, "
                        "which is used only when a network is formed (gatewayctl reset --full "
                        "forms a new one on it; the devices are paired again)", running,
                        self.cfg.channel)

    def _db_moved_aside(self, path: Path) -> None:
        self.db_aside = path  # gatewayctl status; the log has said it

    async def _let_go(self, app: ControllerApplication) -> None:
        # To the end even if cancelled (bounded): nobody else shuts down an app that is not
        # self.app, and a reset's new controller must not find the serial port held.
        shutdown = asyncio.ensure_future(self._shutdown(app))
        try:
            await asyncio.shield(shutdown)
        except asyncio.CancelledError:
            await shutdown
            raise

    async def _shutdown(self, app: ControllerApplication) -> None:
        with contextlib.suppress(Exception):
            app.remove_listener(self)
        await shutdown_controller(app, self.shutdown_timeout)

    def _is_child(self, dev: Any) -> bool:
        import zigpy.device
        app = self.app  # a coordinator is not: the running one, or one zigbee.db kept
        return (app is not None and isinstance(dev, zigpy.device.Device)
                and dev.ieee != app.state.node_info.ieee and not is_coordinator(dev))

    def _drop(self, device_id: str) -> None:
        """A child that is not a device any more (a former coordinator): unpublished."""
        self.coalescer.forget(device_id)
        self.publisher.remove_device(device_id)

    def _child(self, dev: Any) -> Child:
        from gatewayd.zigbee.child import Child  # imports zigpy: only once a radio runs

        child = self.children.get(str(dev.ieee))
        if child is None:
            child = self.children[str(dev.ieee)] = Child(dev, self, self.cfg.command_timeout)
        else:
            child.detach()
            child.device = dev
        return child

    def _restore(self, dev: Any) -> None:
        """A device zigpy already knows (zigbee.db): republish it, no interview; and set it
        up again if its setup had not finished."""
        child = self._child(dev)
        if not dev.is_initialized:
            child.state = "init"  # zigpy resumes the interview when the device talks
            self.publisher.add_device(child.describe())
            return
        before = child.plan
        child.make_plan()
        lost = child.state == "lost" or str(dev.ieee) in self.left
        # cut short, or unanswered (a read its description depends on included)
        again = not lost and (child.ieee in self.setups.pending or child.unread())
        state = "lost" if lost else "init" if again else child.normal_state
        if child.homie is None or child.plan != before:
            child.state = state
            child.attach()
            self.publisher.add_device(child.describe())
        else:  # the radio came back: same device, same description; only $state changes
            child.attach()
            self._set_state(child, state)
        if again:
            self.setups.start(dev)

    # -- zigpy application events (ControllerApplication listener) -----------------------------
    def device_joined(self, dev: Any) -> None:
        child = self._child(dev)
        if child.ieee in self.left and dev.is_initialized:  # maybe not what it was
            self.setups.rejoined(dev)
        else:
            self.setups.joined(child.ieee)
        self.left.discard(child.ieee)
        self.alerts.joined(child)
        child.state = "init"
        if child.homie is None:
            self.publisher.add_device(child.describe())
        else:
            self._set_state(child, "init")
        self._count()

    def device_initialized(self, dev: Any) -> None:
        if self._is_child(dev):
            self.setups.start(dev)

    async def _set_up(self, dev: Any) -> bool:
        child = self._child(dev)
        try:
            return await self._setup(child)
        except Exception:
            log.exception("zigbee: setting up %s failed", child.device_id)
            self._set_state(child, "alert")
            return False

    async def _setup(self, child: Child) -> bool:
        child.state = "init"
        self.status_line.changed()  # a device interviewed again was counted as it was
        child.make_plan()
        missed = await child.preload()  # described without them until they are answered
        child.attach()
        self.publisher.add_device(child.describe())
        if child.unsupported():
            log.info("zigbee: %s (%s): unsupported clusters %s", child.device_id, child.name,
                     ", ".join(child.unsupported()))
        app = self.app
        unanswered = missed + (await child.configure(app.state.node_info.ieee)
                               if app is not None else 1)
        self.left.discard(child.ieee)  # interviewed again: zigpy had it rejoin quietly
        self._set_state(child, child.normal_state)  # what is unanswered is tried again
        self._count()
        log.log(logging.WARNING if unanswered else logging.INFO,
                "zigbee: %s (%s) is %s%s", child.device_id, child.name, child.state,
                f"; {unanswered} setup steps unanswered, tried again later"
                if unanswered else "")
        return not unanswered

    def device_init_failure(self, dev: Any) -> None:
        child = self.children.get(str(dev.ieee))
        if child is not None:
            log.warning("zigbee: interview of %s failed; it resumes when the device wakes up",
                        child.device_id)
            self.alerts.interview_failed(child)
            self._set_state(child, "alert")

    def device_left(self, dev: Any) -> None:
        self.setups.stop(str(dev.ieee))  # it would publish the device again, ready
        child = self.children.get(str(dev.ieee))
        if child is not None:
            log.info("zigbee: %s left the network", child.device_id)
            self.left.add(str(dev.ieee))
            self.alerts.left(child)
            self._set_state(child, "lost")

    def device_removed(self, dev: Any) -> None:
        self.setups.forget(str(dev.ieee))
        child = self.children.pop(str(dev.ieee), None)
        self.left.discard(str(dev.ieee))
        if child is not None:
            child.detach()
            self.coalescer.forget(child.device_id)
            self.publisher.remove_device(child.device_id)
            log.info("zigbee: %s removed", child.device_id)
        self._count()

    def device_reinterviewed(self, dev: Any) -> None:
        self.device_initialized(dev)

    def handle_message(self, dev: Any, profile: int, cluster: int, src_ep: int, dst_ep: int,
                       message: bytes) -> None:
        child = self.children.of(dev)
        if child is not None and child.homie is not None:
            self.child_heard(child)  # and its link quality, once zigpy has taken it:
            self.coalescer.put_changed_soon((child.device_id, "$telemetry", "signal"),
                                            child.signal)

    def connection_lost(self, exc: BaseException | None) -> None:
        # Our words for the cloud's zigbee/status; the library's (or None) for the log only.
        self.last_error = radio_lost(exc)
        log.error("zigbee: %s (%r)", self.last_error, exc)
        self.alerts.radio_lost()
        self._lost.set()

    # -- ChildSink ---------------------------------------------------------------------------------
    def child_value(self, child: Child, path: tuple[str, str], value: Any) -> None:
        self.alerts.value(child, path, value)
        self.coalescer.put((child.device_id, *path), value)

    def child_event(self, child: Child, path: tuple[str, str], value: str) -> None:
        self._publish((child.device_id, *path), value)  # every press counts: no coalescing

    def child_heard(self, child: Child) -> None:
        self.setups.heard(child.ieee)  # awake: a setup waiting to be tried again goes now
        if child.state in ("disconnected", "lost") and self.radio_up.is_set():
            self.left.discard(child.ieee)  # a device that left and talks again is back
            self._set_state(child, child.normal_state)

    def child_unreachable(self, child: Child) -> None:
        if child.state == "ready":
            self._set_state(child, "disconnected")

    def child_silent(self, child: Child) -> None:
        """A battery device missed its check-ins (it cannot be pinged)."""
        if child.state == "sleeping":
            self._set_state(child, "disconnected")

    def radio_ready(self) -> bool:
        return self.radio_up.is_set()
