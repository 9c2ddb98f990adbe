"""The daemon: builds the hub's components, runs them on one asyncio loop, stops them cleanly."""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gatewayd import __version__, homie
from gatewayd.ap import NetworkManagerControl
from gatewayd.cloud.endpoint import Opener
from gatewayd.cloud.leftovers import Leftovers
from gatewayd.cloud.link import CloudLink
from gatewayd.cloud.notifications import Notifications
from gatewayd.cloud.ownership import Ownership
from gatewayd.cloud.presence import CLOUD_GRACE, CloudPresence
from gatewayd.cloud.published import FILE_NAME as PUBLISHED_FILE
from gatewayd.cloud.published import PublishedDevices
from gatewayd.cloud.stale import StaleTopics
from gatewayd.cloud.telemetry import (
    TelemetryReporter,
    default_readers,
    hub_device,
    read_wifi_signal,
)
from gatewayd.cloud.topics import client_id_for
from gatewayd.config import Config, listen_error
from gatewayd.control import slots
from gatewayd.control.parts import ControlParts, DeviceProviders
from gatewayd.hardware.component import Hardware
from gatewayd.hardware.libgpiod import GpiodBackend
from gatewayd.hardware.lines import LineBackend
from gatewayd.hardware.simulated import SimulatedBackend
from gatewayd.hub import RESET_CANCEL_WAIT, Hub
from gatewayd.identity import Identity, cpu_serial
from gatewayd.nm.strength import WifiSignal
from gatewayd.onboarding.cloud_step import CloudLinkStep
from gatewayd.onboarding.listeners import fallback_notice, follow_window
from gatewayd.onboarding.machine import Onboarding
from gatewayd.onboarding.pairing import PairingService
from gatewayd.onboarding.progress import Progress, describe
from gatewayd.onboarding.provisioned import ProvisioningOnboarding
from gatewayd.onboarding.steps import CloudStep
from gatewayd.portal import refusals
from gatewayd.portal.signins import SignIns
from gatewayd.runtime import heap
from gatewayd.runtime.corecall import CoreCall
from gatewayd.runtime.lifecycle import (
    STOP_BUDGET,
    Component,
    Lifecycle,
    NonFatal,
    TaskComponent,
)
from gatewayd.runtime.logsetup import Redactor
from gatewayd.runtime.sdnotify import Notifier, Watchdog, watchdog_interval
from gatewayd.runtime.signals import ignored_signal, takes_over
from gatewayd.runtime.stalls import StallReporter
from gatewayd.runtime.webcomponent import WebComponent
from gatewayd.runtime.webserver import LazyApp, WebServer
from gatewayd.state import StateStore
from gatewayd.virtual import DEVICE_PREFIX
from gatewayd.virtual.host import VirtualDevices
from gatewayd.virtual.kept import FILE_NAME as KEPT_FILE
from gatewayd.zigbee.new_network import reset_without_radio

if TYPE_CHECKING:
    from gatewayd.provisioning.service import Provisioner

log = logging.getLogger(__name__)


# How much of the stop's budget a running factory reset may take to finish.
RESET_WAIT = 8.0
# What stops the daemon (exit status 0). SIGHUP is logged and ignored, as are SIGUSR1 and
# SIGUSR2 outside the simulator (docs/interfaces.md §2.1, "Signals").
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _control_app(parts: ControlParts) -> Any:
    from gatewayd.control.build import control_app  # with Flask: see LazyApp above

    return control_app(parts)


def _portal_app(parts: ControlParts) -> Any:
    from gatewayd.portal.app import create_portal_app  # with Flask: see LazyApp above

    return create_portal_app(parts.hub, parts.call, pairing=parts.pairing,
                             onboarding=parts.onboarding, zigbee=parts.bridge,
                             sign_ins=parts.sign_ins)


@dataclass
class Daemon:
    config: Config
    store: StateStore
    identity: Identity
    redactor: Redactor
    notifier: Notifier = field(default_factory=Notifier)
    components: list[Component] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    hub: Hub | None = None
    portal: WebComponent | None = None
    control: WebComponent | None = None
    simulate: bool = False
    # Opens the TCP connections of the cloud link and the provisioning channel instead of
    # paho: the simulator's uplink (gatewayd.cloud.endpoint); gatewayd gives none.
    cloud_opener: Opener | None = None
    cloud_step: CloudStep | None = None  # tests may inject StubCloud
    hardware: Hardware | None = None
    providers: DeviceProviders | None = None
    short_press_hooks: list[Callable[[], Awaitable[dict[str, Any]]]] = field(
        default_factory=list)
    _late: list[Component] = field(default_factory=list)
    cloud_link: CloudLink | None = None
    stale: StaleTopics | None = None  # what earlier runs published that this one has not
    hub_device: homie.Device | None = None
    telemetry: TelemetryReporter | None = None  # refreshes the hub device's $telemetry
    notifications: Notifications | None = None
    onboarding: Onboarding | None = None
    pairing: PairingService | None = None
    provisioner: Provisioner | None = None
    stop_budget: float = STOP_BUDGET  # from the stop request to the last component stopped
    # Until when a short press lets a paired hub offline on its hotspot be paired again
    # (monotonic time): the press's own, so a hub whose Bluetooth is off or failing can
    # be re-paired from the hotspot as well.
    pressed_until: float = 0.0
    _press_window: asyncio.Task[None] | None = None  # tells when the press's window ends
    # How long the cloud link may be down before the hub shows it (gatewayd.cloud.presence).
    cloud_grace: float = CLOUD_GRACE
    presence: CloudPresence | None = None
    exit_code: int = 0  # 1: the system D-Bus connection was lost (systemd starts it again)

    def _build(self, loop: asyncio.AbstractEventLoop) -> Hub:
        hub = Hub(self.config, self.store, self.identity, self.notifier, self.redactor)
        call = CoreCall(loop)
        cfg = self.config
        backend: LineBackend = SimulatedBackend() if self.simulate else GpiodBackend()
        hardware = Hardware(cfg.button, cfg.led, backend, on_short_press=self._short_press,
                            on_long_press=hub.reset)
        self.hardware = hardware
        self.components.append(hardware)
        onboarding, pairing = self._build_onboarding(hub)
        onboarding.subscribe(hardware.onboarding_changed)
        if self.presence is not None:
            self.presence.subscribe(hardware.cloud_changed)
        hub.add_status("hardware", hardware.status)
        hub.add_status("process", heap.status)
        providers = DeviceProviders()
        self.providers = providers
        # The admin panel and /api/v1/status list the children too (not only gatewayctl).
        hub.add_status("devices", lambda: providers.collect()["devices"])
        notify = self.notifications.send if self.notifications is not None else None
        if self.cloud_link is not None:
            virtual = VirtualDevices(cfg.virtual, self.cloud_link, gpio=backend,
                                     file=cfg.file_of("virtual"),
                                     platform=self.cloud_link.platform,
                                     kept_file=cfg.state_dir / KEPT_FILE)
            if notify is not None:
                virtual.notify = notify
            hub.add_status("virtual", virtual.status)
            if self.stale is not None:  # a device dropped from the configuration is cleared
                self.stale.owns_all(DEVICE_PREFIX, virtual.hosted)
            providers.add("virtual", virtual.devices)
            self._late.append(virtual)  # after onboarding: stops before the cloud link
        bridge = None
        if cfg.zigbee.enabled and self.cloud_link is not None:
            # Only with Zigbee on: the bridge brings sqlite3 and the radio glue (1.5 MB of a
            # minimal hub's RSS); zigpy itself it loads later, in a thread, before READY.
            from gatewayd.bridge import ZigbeeBridge

            bridge = ZigbeeBridge(cfg.zigbee, cfg.state_dir, self.cloud_link,
                                  hub=self.hub_device, status_text=functools.partial(
                                      hub.set_status_text, part="zigbee"))
            bridge.status_line.send()  # "zigbee: starting", until the radio is tried
            if notify is not None:
                bridge.alerts.notify = notify
            hub.add_status("zigbee", bridge.status)
            hub.on_reset(bridge.reset)
            providers.add("zigbee", bridge.devices)
            self._late.append(bridge)  # retries the radio itself: never fails the start
            # Its restored devices are long-lived too. The first time a light settle; when
            # the radio comes up again, the zigpy app it replaced is garbage: a full one.
            ups = itertools.count()
            bridge.up_hooks.append(lambda: heap.settle(full=next(ups) > 0))
        else:  # a full reset forgets the network all the same (zigbee/new_network.py)
            hub.on_reset(functools.partial(reset_without_radio, cfg.state_dir))

        parts = ControlParts(hub, call, providers, hardware, pairing, onboarding,
                             bridge=bridge, platform=(self.cloud_link.platform
                                                      if self.cloud_link is not None else None))
        if cfg.ble.enabled:
            # Only with BLE on: it brings the BlueZ peripheral stack (cryptography comes
            # with a phone's first handshake: gatewayd/ble/secure_protocol.py).
            from gatewayd.ble_commission import BleCommissioner

            ble = BleCommissioner.for_hub(
                hub, onboarding, pairing,
                # Improv offers identify only where there is an LED to blink.
                identify=(lambda: self._identify(hardware)) if cfg.led.enabled else None,
                panel_url=self._sim_panel_url if self.simulate else None)
            parts.ble = ble
            if self.provisioner is not None:
                ble.hub.provisioning = self.provisioner.view
            self.short_press_hooks.append(lambda: self._authorize_ble(ble))
            self._late.append(TaskComponent("ble-window", lambda: follow_window(ble, onboarding)))
            # 'gatewayctl ble-window open' opens it for re-pairing too.
            onboarding.window = lambda: ble.window_open or self._pressed()
            # Started after onboarding and stopped before it; a BLE fault never stops the hub.
            self._late.insert(0, NonFatal(ble))
        else:
            hub.add_status("ble", lambda: {"enabled": False})  # interfaces.md §5.2
        # Both web apps are built on their first request, in a web thread (LazyApp): Flask
        # and its stack are 8 MB that a hub nobody browses or runs gatewayctl on never needs.
        self.control = WebComponent("control", lambda: WebServer(
            LazyApp(lambda: _control_app(parts), "control"), name="control",
            unix_socket=cfg.control_socket, socket_group=cfg.hub.control_group,
            threads=slots.SOCKET_THREADS,
            max_request_bytes=slots.MAX_BODY + slots.SERVER_BODY_SLACK))
        self.components.append(self.control)
        if cfg.portal.enabled:
            parts.sign_ins = SignIns()  # fed by the portal's app, built on its first request
            hub.add_status("admin_sign_in", parts.sign_ins.status)
            self.portal = WebComponent("portal", lambda: WebServer(
                LazyApp(lambda: _portal_app(parts), "portal"),
                name="portal", host=cfg.portal.listen,
                port=cfg.portal.port, max_request_bytes=cfg.portal.max_request_bytes,
                error_page=refusals.error_page),
                refused=functools.partial(listen_error, cfg))
            self.components.append(self.portal)
        self.components.append(onboarding)
        self.components.extend(self._late)
        return hub

    @staticmethod
    async def _identify(hardware: Hardware) -> None:
        await hardware.identify()

    @staticmethod
    async def _authorize_ble(ble: Any) -> dict[str, Any]:
        await ble.authorize("button")
        return {"ble_window": ble.window_open}

    def _pressed(self) -> bool:
        return time.monotonic() < self.pressed_until

    async def _sim_panel_url(self) -> str | None:
        """Improv's redirect in the simulator: the panel URL, ending in / (§10.2)."""
        return None if self.portal_url is None else f"{self.portal_url}/"

    async def _short_press(self) -> dict[str, Any]:
        """The button's short press: commissioning window open (and Improv authorized);
        an offline hub also brings its hotspot back at once, open to pairing while the
        window is."""
        result: dict[str, Any] = {}
        self.pressed_until = time.monotonic() + self.config.ble.window_seconds
        if self.onboarding is not None:
            result["hotspot"] = await self.onboarding.reopen_hotspot()
        for hook in self.short_press_hooks:
            result.update(await hook())
        if self.onboarding is not None:
            await self.onboarding.window_changed()
            if self._press_window is not None:
                self._press_window.cancel()  # this press's window ends later
            self._press_window = asyncio.create_task(self._press_window_ends(
                self.onboarding, self.pressed_until - time.monotonic()), name="press-window")
        return result

    @staticmethod
    async def _press_window_ends(onboarding: Onboarding, seconds: float) -> None:
        """The window a short press opened closes: pairing may close with it, and the LED
        and the progress follow."""
        await asyncio.sleep(seconds)
        await onboarding.window_changed()

    def _status_text(self, progress: Progress) -> str:
        """The onboarding part of STATUS=, with an online hub's unreachable cloud."""
        text = describe(progress, self.config.provisioning.mode)
        return self.presence.status_text(progress.state, text) if self.presence else text

    def _build_cloud(self, hub: Hub, wifi: NetworkManagerControl | None) -> CloudStep:
        cfg = self.config
        readers = default_readers(read_wifi_signal if wifi is None else
                                  WifiSignal(wifi, read_wifi_signal).read)
        device = hub_device(self.identity.device_id, cfg.hub.product, self.identity.mac,
                            fw_name=cfg.hub.fw_name, fw_version=cfg.hub.fw_version,
                            readers=readers)
        # The link's generic /set timeout must outlast the bridge's precise Zigbee one.
        command_timeout = max(10.0, cfg.zigbee.command_timeout + 2) if cfg.zigbee.enabled \
            else 10.0
        link = CloudLink(cfg.cloud, device, device_key=self.store.state.device_key,
                         client_id=client_id_for(self.identity.device_id),
                         command_timeout=command_timeout, opener=self.cloud_opener,
                         issued=cfg.provisioning.mode != "pairing")
        self.cloud_link = link
        self.hub_device = device
        self.notifications = Notifications(link)
        leftovers = Leftovers(link, self.store)
        self.stale = StaleTopics(link, self.store, leftovers, PublishedDevices(
            cfg.state_dir / PUBLISHED_FILE, self.store.owner))
        ownership = Ownership(link, leftovers=leftovers, stale=self.stale)
        hub.releaser = ownership
        presence = self.presence = CloudPresence(link, self.cloud_grace)
        hub.add_status("cloud_link", lambda: {**link.status(), "reachable": presence.reachable})
        hub.add_status("notifications", self.notifications.status)
        self.telemetry = TelemetryReporter(link, self.identity.device_id, readers=readers)
        self.components.append(TaskComponent("telemetry", self.telemetry.run))
        return CloudLinkStep(link, self.store, ownership)

    def _build_onboarding(self, hub: Hub) -> tuple[Onboarding, PairingService]:
        cfg = self.config
        wifi = NetworkManagerControl(cfg, self.identity) if cfg.hotspot.enabled else None
        if wifi is not None:
            wifi.on_bus_lost = self._bus_lost
        cloud = self.cloud_step or self._build_cloud(hub, wifi)
        onboarding = self._build_machine(hub, wifi, cloud)
        hub.phase_provider = lambda: str(onboarding.state or "starting")
        hub.add_status("onboarding", lambda: onboarding.progress().to_json())
        hub.on_reset(onboarding.reset)
        onboarding.subscribe(
            lambda state, progress: hub.set_status_text(self._status_text(progress)))
        if self.presence is not None:
            self.presence.subscribe(lambda reachable: hub.set_status_text(
                self._status_text(onboarding.progress())))
        # Credentials a request brought are among the redactor's recent secrets only; once
        # stored (paired, joined), they are the hub's own and stay masked for good.
        onboarding.subscribe(lambda state, progress: hub.register_secrets(hub.state))
        if self.notifications is not None:
            onboarding.subscribe(fallback_notice(self.notifications.send, self.identity.device_id))
        self.onboarding = onboarding
        # The window a short press opens, in which a paired hub offline on its hotspot may
        # be paired again (BLE's window counts too, when BLE is on: below).
        onboarding.window = self._pressed
        pairing = PairingService(onboarding, cfg.cloud, wifi_enabled=cfg.hotspot.enabled,
                                 secrets_sink=self.redactor.add_recent,
                                 provisioning=cfg.provisioning.mode)
        hub.add_status("pairing", pairing.status)
        self.pairing = pairing
        return onboarding, pairing

    def _build_machine(self, hub: Hub, wifi: NetworkManagerControl | None,
                       cloud: CloudStep) -> Onboarding:
        """The onboarding machine; with [provisioning] mode token or enroll, the one whose
        account comes from the platform (docs/provisioning.md)."""
        cfg = self.config
        if cfg.provisioning.mode == "pairing":
            return Onboarding(cfg, self.store, wifi, cloud)
        if self.cloud_link is None:
            raise RuntimeError("provisioning needs the cloud link")
        # Only for a provisioned hub: its codec brings cryptography (X25519), 7 MB of RSS
        # that a hub paired by a person never needs. Before READY, like the BLE imports.
        from gatewayd.provisioning.service import Provisioner

        provisioner = Provisioner(cfg, self.store, self.identity, self.cloud_link,
                                  serial=cfg.provisioning.serial or cpu_serial(),
                                  secrets_sink=self.redactor.add_recent,
                                  opener=self.cloud_opener)
        machine = ProvisioningOnboarding(cfg, self.store, wifi, cloud, provisioner)
        provisioner.follow(machine)
        self.provisioner = provisioner
        hub.add_status("provisioning", provisioner.status)
        # Refreshes the registration token while the hub runs (started before onboarding).
        self.components.append(TaskComponent("registration", provisioner.run))
        return machine

    def _bus_lost(self) -> None:
        """The system D-Bus connection ended (its daemon restarted): nothing on it can be
        reached again, so the hub stops and exits 1, and systemd starts it again."""
        self.exit_code = 1
        if self.hub is not None:
            self.hub.stop_requested.set()

    @property
    def portal_url(self) -> str | None:
        if self.portal is None or self.portal.server is None:
            return None
        host = self.portal.server.host
        return f"http://{host}:{self.portal.server.port}"

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        hub = self.hub = self._build(loop)
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, hub.stop_requested.set)
        ignored = [signal.SIGHUP]
        if self.simulate and self.hardware is not None:
            self.hardware.add_signal_handlers(loop)  # SIGUSR1 short, SIGUSR2 long press
        else:
            ignored += [signal.SIGUSR1, signal.SIGUSR2]
        ignored = [sig for sig in ignored if takes_over(sig)]
        for sig in ignored:
            loop.add_signal_handler(sig, ignored_signal, sig)
        watchdog: Watchdog | None = None
        interval = watchdog_interval()
        lifecycle = Lifecycle(self.components, hub.stop_requested, self.stop_budget)
        stalls = StallReporter()
        stalls.start()
        hub.add_status("loop", stalls.status)
        try:
            # A stop requested while the components start ends the start there: the hub
            # never says it is ready, and the stop's budget is not spent on the rest's start.
            if await lifecycle.start():
                if interval is not None:
                    watchdog = Watchdog(self.notifier, interval)
                    for web in (self.control, self.portal):
                        if web is not None and web.server is not None:
                            watchdog.add_check(web.name, web.health)
                    watchdog.start()
                assert self.onboarding is not None
                stalls.mark_ready()
                hub.ready(self._status_text(self.onboarding.progress()))
                log.info("gatewayd %s ready (device %s, state %s)", __version__,
                         self.identity.device_id, hub.phase)
                self.ready.set()
                resettle = asyncio.create_task(heap.settle_periodically(), name="heap")
                await hub.stop_requested.wait()
                resettle.cancel()
            log.info("stopping")
        finally:
            lifecycle.begin_stop()  # one deadline for all that follows (runtime/lifecycle.py)
            self.notifier.stopping()
            hub.stop_requested.set()  # no new reset from here on
            if self._press_window is not None:
                self._press_window.cancel()
            # A running reset stops and starts components: it may end first, for part of
            # the budget; then it is cancelled, so it cannot start again what is stopped.
            await hub.finish_resets(timeout=min(RESET_WAIT, max(
                lifecycle.share(len(lifecycle.started)) - RESET_CANCEL_WAIT, 0.0)))
            if watchdog is not None:
                await watchdog.stop()
            await stalls.stop()
            await lifecycle.stop()
            if self.stale is not None:  # cloud-devices.json is written off the loop
                try:
                    await asyncio.wait_for(self.stale.flush(), max(lifecycle.share(0), 1.0))
                except TimeoutError:
                    log.error("stopping: %s not written in time", PUBLISHED_FILE)
            for sig in (*STOP_SIGNALS, *ignored):
                loop.remove_signal_handler(sig)
        return self.exit_code
