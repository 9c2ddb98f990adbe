"""Fleet provisioning: N hubs (50) provision against one platform at once and come online.

Each hub instance is what provisioning and the cloud link are on a real hub, in this
process: its own state directory, the onboarding machine of a provisioned hub, the
provisioner, the cloud step (which proves the account through the broker) and its own
cloud link (a paho thread each). Not N simulated worlds: one account broker, one
provisioning endpoint (a second mosquitto) and one simulated platform, as a fleet shares.

A technician approves operations as they appear (a thread on the platform's operator
interface). Figures:

* ``provisioning_all_online_s``: from starting all hubs to the last one's ``$state = ready``
  on the broker (seen by a subscriber), per run;
* ``provisioning_hub_online_s``: each hub's own start-to-ready time, over all runs;
* then, with a short registration lifetime, ``provisioning_refreshes`` and
  ``provisioning_refresh_failures`` over ``refresh_seconds``, and ``provisioning_lost``
  (``$state = lost`` seen meanwhile: 0 means the quiet reconnects kept every hub ready).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.harness import BenchError, Results
from bench.settings import Settings
from gatewayd.cloud.link import CloudLink
from gatewayd.cloud.ownership import Ownership
from gatewayd.cloud.telemetry import hub_device
from gatewayd.config import Config, parse_config
from gatewayd.identity import Identity
from gatewayd.onboarding.cloud_step import CloudLinkStep
from gatewayd.onboarding.provisioned import ProvisioningOnboarding
from gatewayd.provisioning.service import Provisioner
from gatewayd.simulator.broker import MONITOR_USER, Broker
from gatewayd.simulator.platform import SimPlatform
from gatewayd.simulator.provisioning import SimProvisioning
from gatewayd.simulator.provisioning_model import SIM_TOKEN
from gatewayd.simulator.provisioning_ops import attach
from gatewayd.simulator.world import SIM_ACCOUNT
from gatewayd.state import StateStore


class States:
    """Every hub's ``$state`` as the cloud sees it: when each first became ready, how many
    ``lost`` arrived."""

    def __init__(self, broker: Broker, root: str) -> None:
        self._cond = threading.Condition()
        self.ready: dict[str, float] = {}
        self.lost = 0
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-states")
        self._client.username_pw_set(MONITOR_USER, broker.monitor_password)
        self._client.on_connect = lambda c, *a: c.subscribe(f"{root}/sweet-home/+/$state", 1)
        self._client.on_message = self._on_message
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        device = msg.topic.split("/")[2]
        with self._cond:
            if msg.payload == b"ready":
                self.ready.setdefault(device, time.monotonic())
            elif msg.payload == b"lost":
                self.lost += 1
            self._cond.notify_all()

    def reset(self) -> None:
        with self._cond:
            self.ready.clear()
            self.lost = 0

    def wait_ready(self, devices: list[str], timeout: float) -> dict[str, float]:
        with self._cond:
            if not self._cond.wait_for(lambda: all(d in self.ready for d in devices), timeout):
                missing = [d for d in devices if d not in self.ready]
                raise BenchError(f"{len(missing)} hub(s) never came online: {missing[:5]}")
            return {d: self.ready[d] for d in devices}

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class Technician(threading.Thread):
    """Approves every pending operation it sees on the platform, as soon as it sees it."""

    def __init__(self, prov: SimProvisioning) -> None:
        super().__init__(name="bench-technician", daemon=True)
        self.prov = prov
        self.stopping = threading.Event()
        self.approved = 0

    def run(self) -> None:
        while not self.stopping.is_set():
            for op in self.prov.listing()["operations"]:
                if op["state"] == "pending":
                    try:
                        self.prov.approve(op["id"])
                        self.approved += 1
                    except (KeyError, ValueError):
                        pass  # expired or approved meanwhile
            self.stopping.wait(0.05)  # looking at the list again, very quickly


class Fleet:
    """N hub instances on one event loop."""

    def __init__(self, workdir: Path, count: int, config: Config) -> None:
        self.devices = [f"bench-hub-{i:03d}" for i in range(count)]
        self.machines: list[ProvisioningOnboarding] = []
        self.provisioners: list[Provisioner] = []
        for i, device_id in enumerate(self.devices):
            mac = f"02:00:00:00:{i // 256:02x}:{i % 256:02x}"
            store = StateStore(workdir / device_id)
            store.open(device_id=device_id, mac=mac)
            link = CloudLink(config.cloud, hub_device(device_id, config.hub.product, mac),
                             device_key=store.state.device_key, client_id=device_id)
            provisioner = Provisioner(config, store,
                                      Identity(device_id, mac, config.hub.product), link,
                                      serial=f"bench{i:03d}")
            machine = ProvisioningOnboarding(config, store, None,
                                             CloudLinkStep(link, store, Ownership(link)),
                                             provisioner)
            provisioner.onboarding = machine
            self.machines.append(machine)
            self.provisioners.append(provisioner)
        self._keepers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for machine, provisioner in zip(self.machines, self.provisioners, strict=True):
            await machine.start()
            self._keepers.append(asyncio.create_task(provisioner.run()))

    def describe(self, device: str) -> str:
        """One hub's onboarding and provisioning state, on one line (no secrets)."""
        i = self.devices.index(device)
        machine, provisioner = self.machines[i], self.provisioners[i]
        return (f"  {device}: {machine.state} (step {machine.step}, busy {machine.busy}), "
                f"last failure {machine.last_failure}, provisioning {provisioner.status()}")

    async def stop(self) -> None:
        for task in self._keepers:
            task.cancel()
        await asyncio.gather(*(m.stop() for m in self.machines))


def _config(endpoint: dict[str, Any]) -> Config:
    return parse_config({
        "hotspot": {"enabled": False}, "ble": {"enabled": False},
        "cloud": {"reconnect_min": 0.2, "reconnect_max": 5.0, "connect_timeout": 30,
                  "heartbeat_interval": 30},
        "provisioning": {"mode": "token", "host": endpoint["host"], "port": endpoint["port"],
                         "token": SIM_TOKEN, "retry_interval": 1.0}})


def _platform_settings(platform: SimPlatform, **values: Any) -> None:
    data = json.loads(platform.responses.read_text())
    data.setdefault("provisioning", {}).update(values)
    platform.responses.write_text(json.dumps(data))


async def _online(workdir: Path, count: int, config: Config, states: States,
                  timeout: float) -> tuple[Fleet, float, list[float]]:
    fleet = Fleet(workdir, count, config)
    states.reset()
    started = time.monotonic()
    await fleet.start()
    try:
        ready = await asyncio.to_thread(states.wait_ready, fleet.devices, timeout)
    except BenchError as exc:
        # Where each missing hub is: a stall that happens once in many runs must be
        # diagnosable from the one run it happened in.
        raise BenchError(f"{exc}\n" + "\n".join(
            fleet.describe(d) for d in fleet.devices if d not in states.ready)) from None
    return fleet, max(ready.values()) - started, [t - started for t in ready.values()]


def run(settings: Settings, results: Results, workdir: Path) -> None:
    count = settings.provisioning_hubs
    print(f"provisioning: {count} hubs against one platform", flush=True)
    workdir.mkdir(parents=True, exist_ok=True)
    broker = Broker(workdir / "broker")
    account = broker.add_account(*SIM_ACCOUNT)
    broker.start()
    platform = SimPlatform(broker.host, broker.port, "platform", broker.platform_password,
                           workdir / "platform.json").start()
    prov = SimProvisioning(workdir / "provisioning", broker, account,
                           platform.responses).start()
    attach(platform, prov)
    states = States(broker, account.username)
    technician = Technician(prov)
    technician.start()
    config = _config(prov.endpoint())
    totals: list[float] = []
    each: list[float] = []
    try:
        _platform_settings(platform, registration_lifetime=86400, retry_after=0.5)
        for n in range(settings.provisioning_repeats):
            async def once(n: int = n) -> None:
                fleet, total, per_hub = await _online(workdir / f"run{n}", count, config,
                                                      states, settings.provisioning_timeout)
                totals.append(total)
                each.extend(per_hub)
                await fleet.stop()
            asyncio.run(once())
            for device in list(prov.devices):
                prov.revoke(device)  # the next run's hubs register afresh
        results.add("provisioning_all_online_s", totals, "s")
        results.add("provisioning_hub_online_s", each, "s")

        _platform_settings(platform, registration_lifetime=settings.refresh_lifetime)

        async def refreshing() -> None:
            fleet, _, _ = await _online(workdir / "refresh", count, config, states,
                                        settings.provisioning_timeout)
            lost_before = states.lost
            await asyncio.sleep(settings.refresh_seconds)  # the measured window
            results.note("provisioning_refreshes", sum(p.refreshes for p in fleet.provisioners))
            results.note("provisioning_refresh_failures",
                         sum(p.refresh_failures for p in fleet.provisioners))
            results.note("provisioning_lost", states.lost - lost_before)
            await fleet.stop()
        asyncio.run(refreshing())
    finally:
        technician.stopping.set()
        technician.join(5)
        states.stop()
        prov.stop()
        platform.stop()
        broker.stop()
    results.note("provisioning_hubs", count)
    results.note("provisioning_approved", technician.approved)
    results.note("provisioning_refresh_lifetime_s", settings.refresh_lifetime)
    results.note("provisioning_refresh_window_s", settings.refresh_seconds)
    print(f"  refreshes {results.extra['provisioning_refreshes']:g} (failures "
          f"{results.extra['provisioning_refresh_failures']:g}, lost "
          f"{results.extra['provisioning_lost']:g}) in {settings.refresh_seconds:g} s with "
          f"{settings.refresh_lifetime:g} s tokens", flush=True)
