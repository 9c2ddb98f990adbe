"""The two stacks under test, behind one interface: gatewayd and Zigbee2MQTT.

Each runs as its own process with the configuration committed next to this file
(``gatewayd.toml``, ``zigbee2mqtt.yaml``; ``$names`` are filled in per run), talks to
the EZSP emulator over ``tcp://`` and to the world's mosquitto. What differs is only how
a user sees it: topics and payloads, how joining is permitted, how "all devices ready"
is told.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import string
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench import hub
from bench.harness import DEVICE_ID, BenchWorld, DaemonProcess, Monitor, Results, proc_tree
from bench.peers.ncp import NcpProcess
from bench.settings import QUICK
from gatewayd.ctl.client import CtlError
from gatewayd.simulator.broker import MONITOR_USER
from gatewayd.simulator.procs import free_port, wait_until

HERE = Path(__file__).resolve().parent
Z2M_MAIN = HERE / "node_modules" / "zigbee2mqtt" / "index.js"
# What the tools say when it is not there (scripts/setup.sh installs it with the [peers]
# extra, given node 20 or newer and npm).
Z2M_MISSING = (f"{Z2M_MAIN} is missing: `make bench-peers` installs Zigbee2MQTT (it needs "
               "node 20 or newer and npm; scripts/setup.sh says if they are not there)")
Z2M_BASE = "zigbee2mqtt"


def require_zigbee2mqtt() -> None:
    """Exit with :data:`Z2M_MISSING` if Zigbee2MQTT is not installed (the tools' check)."""
    if not Z2M_MAIN.exists():
        raise SystemExit(Z2M_MISSING)
SCALE = 10  # a plug's active_power is in 0.1 W (its ac_power_divisor)


ZIGBEE_PREFIX = "zigbee-"  # a Zigbee child's Homie id: this, then its IEEE address in hex


class StackDied(RuntimeError):
    """The stack's process exited while the bench waited for it."""


def fill(template: Path, dest: Path, **values: Any) -> Path:
    dest.write_text(string.Template(template.read_text()).substitute(values))
    return dest


class Stack:
    """What the measurements need from a stack; see Gatewayd and Zigbee2Mqtt."""

    name = ""       # the figures' prefix: "gwd" or "z2m"
    title = ""
    power_filter = ""
    state_filter = ""
    field: str | None = None  # the JSON member that carries the value, None: plain number

    def __init__(self, world: BenchWorld, ncp_url: str, workdir: Path) -> None:
        self.world, self.ncp_url, self.workdir = world, ncp_url, workdir
        self.started_at = 0.0

    # -- process ---------------------------------------------------------------------------
    def start(self, preexec: Callable[[], None] | None = None) -> None:
        raise NotImplementedError

    def wait_up(self, timeout: float) -> None:
        """The network is up and the stack is on MQTT."""
        raise NotImplementedError

    def pid(self) -> int:
        raise NotImplementedError

    def pids(self) -> list[int]:
        return proc_tree(self.pid())

    def stop(self) -> float:
        raise NotImplementedError

    def log_tail(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the stack object holds besides its process."""

    # -- devices ---------------------------------------------------------------------------
    def permit_join(self, seconds: int) -> None:
        raise NotImplementedError

    def ready(self) -> set[str]:
        """IEEE addresses (``aa:bb:...``) of the devices the stack has ready to use (none
        while it is starting); raises StackDied if its process is gone."""
        raise NotImplementedError

    def all_ready(self, wanted: set[str]) -> bool:
        """Every device in ``wanted`` is ready, as the stack announces it by itself (a
        restart is timed by this, so it must not make the stack do work of its own)."""
        return wanted <= self.ready()

    # -- topics ----------------------------------------------------------------------------
    def power_topic(self, ieee: str) -> str:
        raise NotImplementedError

    def set_request(self, ieee: str, on: bool) -> tuple[str, str]:
        raise NotImplementedError

    def state_topic(self, ieee: str) -> str:
        raise NotImplementedError

    def state_is(self, payload: str, on: bool) -> bool:
        raise NotImplementedError


class Gatewayd(Stack):
    name, title = "gwd", "gatewayd"

    def __init__(self, world: BenchWorld, ncp_url: str, workdir: Path, paired: Path) -> None:
        super().__init__(world, ncp_url, workdir)
        self.state_dir = workdir / "state"
        shutil.copytree(paired, self.state_dir)
        self.daemon: DaemonProcess | None = None
        self.power_filter = f"{world.root}/sweet-home/+/meter/power"
        self.state_filter = f"{world.root}/sweet-home/+/switch/on-off"
        self._runs = 0

    def start(self, preexec: Callable[[], None] | None = None) -> None:
        self._runs += 1
        runtime = self.workdir / f"run-{self._runs}"
        runtime.mkdir(parents=True)
        self.portal_port = free_port()
        config = fill(HERE / "gatewayd.toml", self.workdir / f"gatewayd-{self._runs}.toml",
                      device_id=DEVICE_ID, state_dir=self.state_dir, runtime_dir=runtime,
                      portal_port=self.portal_port, ncp_url=self.ncp_url)
        assert self.world.sim.bus is not None
        self.daemon = DaemonProcess(config, {"DBUS_SYSTEM_BUS_ADDRESS": self.world.sim.bus.address},
                                    runtime, self.workdir / "gatewayd.log", preexec=preexec)
        self.started_at = self.daemon.started

    def _api(self, method: str, endpoint: str, body: dict[str, Any] | None = None) -> Any:
        assert self.daemon is not None
        return self.daemon.api(method, endpoint, body)

    def _status_line(self, timeout: float = 300.0) -> str:
        """What systemd would show: the daemon's last ``STATUS=``, once it is READY
        (waited for up to ``timeout`` s from its start)."""
        assert self.daemon is not None
        if self.daemon.proc.poll() is not None:
            raise StackDied(f"gatewayd exited {self.daemon.proc.returncode}:\n{self.log_tail()}")
        if self.daemon.ready_at is None:
            self.daemon.wait_ready(timeout)
        return self.daemon.last_status

    def wait_up(self, timeout: float) -> None:
        # From the status line, as systemd gets it: asking the control socket would load
        # its web app (Flask, 0.2-0.4 s and some MB), which a hub does only when someone
        # runs gatewayctl.
        wait_until(lambda: (line := self._status_line(timeout)).startswith("online;")
                   and zigbee_counts(line) is not None, timeout,
                   "gatewayd to be online with its Zigbee network up", interval=0.05)

    def pid(self) -> int:
        assert self.daemon is not None
        return self.daemon.proc.pid

    def stop(self) -> float:
        if self.daemon is None:  # it never started (a failed start-up is being cleaned up)
            return 0.0
        return self.daemon.stop()

    def log_tail(self) -> str:
        return (self.workdir / "gatewayd.log").read_text(errors="replace")[-3000:]

    def permit_join(self, seconds: int) -> None:
        self._api("POST", "zigbee/permit-join", {"seconds": seconds})

    def ready(self) -> set[str]:
        assert self.daemon is not None
        if self.daemon.proc.poll() is not None:
            raise StackDied(f"gatewayd exited {self.daemon.proc.returncode}:\n{self.log_tail()}")
        try:
            devices = self._api("GET", "devices")["devices"]
        except CtlError:  # no control socket yet
            return set()
        return {d["ieee"] for d in devices
                if d.get("provider") == "zigbee" and d.get("state") == "ready"}

    def all_ready(self, wanted: set[str]) -> bool:
        """All of ``wanted`` ready by the status line's count: the bench's network has no
        other device, and its plugs are mains-powered (``ready``, never ``sleeping``)."""
        counts = zigbee_counts(self._status_line())
        return counts is not None and counts.get("ready", 0) >= len(wanted)

    def _base(self, ieee: str) -> str:
        return f"{self.world.root}/sweet-home/{ZIGBEE_PREFIX}{ieee.replace(':', '').lower()}"

    def power_topic(self, ieee: str) -> str:
        return f"{self._base(ieee)}/meter/power"

    def set_request(self, ieee: str, on: bool) -> tuple[str, str]:
        return f"{self._base(ieee)}/switch/on-off/set", "true" if on else "false"

    def state_topic(self, ieee: str) -> str:
        return f"{self._base(ieee)}/switch/on-off"

    def state_is(self, payload: str, on: bool) -> bool:
        return payload == ("true" if on else "false")


def zigbee_counts(line: str) -> dict[str, int] | None:
    """Children per ``$state`` from gatewayd's status line (docs/interfaces.md, "The status
    line"): ``online; zigbee: up, 12 devices (11 ready, 1 sleeping)``; None while the radio
    is not up."""
    found = re.search(r"zigbee: up, (?:no devices|\d+ devices? \(([^)]*)\))", line)
    if found is None:
        return None
    parts = found.group(1).split(", ") if found.group(1) else []
    return {state: int(count) for count, state in (part.split(" ", 1) for part in parts)}


def z2m_name(ieee: str) -> str:
    """Zigbee2MQTT's default friendly name: the IEEE address as 0x + 16 hex digits."""
    return "0x" + ieee.replace(":", "").lower()


class Zigbee2Mqtt(Stack):
    name, title = "z2m", "Zigbee2MQTT"
    power_filter = state_filter = f"{Z2M_BASE}/+"
    field = "power"

    def __init__(self, world: BenchWorld, ncp_url: str, workdir: Path) -> None:
        super().__init__(world, ncp_url, workdir)
        if not Z2M_MAIN.exists():
            raise RuntimeError(Z2M_MISSING)
        self.data = workdir / "data"
        self.data.mkdir(parents=True)
        fill(HERE / "zigbee2mqtt.yaml", self.data / "configuration.yaml",
             mqtt_server=f"mqtt://{world.broker.host}:{world.broker.port}",
             mqtt_user=MONITOR_USER, mqtt_password=world.broker.monitor_password,
             ncp_url=ncp_url)
        self.proc: subprocess.Popen[bytes] | None = None
        # Zigbee2MQTT's own view, as an app would read it: bridge/state and bridge/devices.
        self.bridge = Monitor(world, f"{Z2M_BASE}/bridge/#", keep_last=True)
        self._log = (workdir / "zigbee2mqtt.log").open("ab")

    def start(self, preexec: Callable[[], None] | None = None) -> None:
        self.bridge.forget()
        env = {**os.environ, "ZIGBEE2MQTT_DATA": str(self.data),
               # index.js rebuilds itself when `git rev-parse HEAD` (run in its working
               # directory) differs from the commit it was built from: never here.
               "GIT_DIR": "/nonexistent"}
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(["node", str(Z2M_MAIN)], env=env, cwd=self.data,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=preexec)

    def _check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise StackDied(f"Zigbee2MQTT exited:\n{self.log_tail()}")

    def wait_up(self, timeout: float) -> None:
        def online() -> bool:
            self._check_alive()
            state = self.bridge.last_json(f"{Z2M_BASE}/bridge/state")
            return isinstance(state, dict) and state.get("state") == "online"
        wait_until(online, timeout, "Zigbee2MQTT to start", interval=0.05)

    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> float:
        assert self.proc is not None
        start = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return time.monotonic() - start

    def close(self) -> None:
        self.bridge.close()
        self._log.close()

    def log_tail(self) -> str:
        return (self.workdir / "zigbee2mqtt.log").read_text(errors="replace")[-3000:]

    def permit_join(self, seconds: int) -> None:
        # Asked until answered: "bridge/state online" can come before Zigbee2MQTT has
        # subscribed to its requests, and a request nobody heard is lost.
        response = f"{Z2M_BASE}/bridge/response/permit_join"
        for _ in range(20):
            self.bridge.forget(response)
            self.bridge.publish(f"{Z2M_BASE}/bridge/request/permit_join",
                                json.dumps({"time": seconds}))
            try:
                answer = wait_until(lambda: self.bridge.last_json(response), 3,
                                    "Zigbee2MQTT to answer permit_join", interval=0.05)
            except TimeoutError:
                self._check_alive()
                continue
            if answer.get("status") != "ok":
                raise RuntimeError(f"Zigbee2MQTT refused permit_join: {answer}")
            return
        raise TimeoutError("Zigbee2MQTT never answered permit_join")

    def ready(self) -> set[str]:
        self._check_alive()
        devices = self.bridge.last_json(f"{Z2M_BASE}/bridge/devices") or []
        return {":".join(d["ieee_address"][i:i + 2] for i in range(2, 18, 2))
                for d in devices
                if d.get("type") != "Coordinator" and d.get("interview_completed")
                and d.get("definition")}

    def power_topic(self, ieee: str) -> str:
        return f"{Z2M_BASE}/{z2m_name(ieee)}"

    def set_request(self, ieee: str, on: bool) -> tuple[str, str]:
        return (f"{Z2M_BASE}/{z2m_name(ieee)}/set",
                json.dumps({"state": "ON" if on else "OFF"}))

    def state_topic(self, ieee: str) -> str:
        return self.power_topic(ieee)

    def state_is(self, payload: str, on: bool) -> bool:
        try:
            return bool(json.loads(payload).get("state") == ("ON" if on else "OFF"))
        except (ValueError, AttributeError):
            return False


def stop_and_close(stack: Stack) -> None:
    """Stop ``stack`` if it runs, then close it (the tools' cleanup)."""
    try:
        stack.stop()
    except AssertionError:
        pass  # it never started: the error that stopped it is the news
    stack.close()


def stack_named(name: str, world: BenchWorld, ncp_url: str, workdir: Path,
                paired: Path) -> Stack:
    """``gwd`` or ``z2m`` (in ``workdir/<name>``): the stack of that name on the emulator
    at ``ncp_url``; gatewayd starts from the ``paired`` state directory."""
    if name == "z2m":
        return Zigbee2Mqtt(world, ncp_url, workdir / "z2m")
    return Gatewayd(world, ncp_url, workdir / "gwd", paired)


@contextlib.contextmanager
def peers_world(workdir: Path) -> Iterator[tuple[BenchWorld, Path, NcpProcess]]:
    """The simulated world in ``workdir``, a hub paired to its cloud (the state directory
    gatewayd starts from) and the EZSP emulator both stacks talk to, closed in turn."""
    with BenchWorld(workdir) as world:
        paired = hub.pair_to_online(world, dataclasses.replace(QUICK, repeats=1), Results())
        ncp = NcpProcess(workdir / "ncp")
        try:
            yield world, paired, ncp
        finally:
            ncp.close()
