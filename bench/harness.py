"""The benchmarks' world: the simulator's real components, and gatewayd as its own process.

The world (private system bus, the NetworkManager mock, BlueZoo, mosquitto) is started
once by the bench process. Each daemon run is a separate ``gatewayd --config`` process,
so its start-up, memory and CPU time are the daemon's alone; it reports READY=1 on a
notify socket we own, as it would to systemd.
"""

from __future__ import annotations

import compileall
import json
import os
import platform
import queue
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

import gatewayd
from gatewayd.cloud.net import tcp_no_delay
from gatewayd.ctl.main import Client
from gatewayd.simulator.broker import MONITOR_USER
from gatewayd.simulator.procs import free_port
from gatewayd.simulator.world import SimWorld

BIN = Path(sys.executable).parent
UNIT = Path(__file__).resolve().parent.parent / "systemd" / "gatewayd.service"
DEVICE_ID = "dc-a6-32-12-34-56"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A benchmark could not be measured (the daemon died, a stream went wrong); a wait
    that times out raises TimeoutError (``gatewayd.simulator.procs.wait_until``)."""


def unit_environment(unit: Path = UNIT) -> dict[str, str]:
    """The ``Environment=NAME=value`` settings of the systemd unit (unquoted, one per
    line: all the unit uses), so the daemon runs here as it runs on a hub."""
    env = {}
    for line in unit.read_text().splitlines():
        key, _, value = line.strip().partition("=")
        if key == "Environment":
            name, _, value = value.partition("=")
            env[name] = value
    return env


def compile_daemon(package: Path = Path(gatewayd.__file__).parent) -> bool:
    """Byte-compile the daemon's modules, as the package's postinst does on a hub
    (debian/gatewayd.postinst); pip already did so for the libraries. A checkout run with
    ``PYTHONDONTWRITEBYTECODE`` (these machines export it) would otherwise compile every
    gatewayd module from source at each start: 60-90 ms that a hub does not spend
    (bench/README.md, "Compiled, as on a hub"). Only stale files are written; False if
    one did not compile."""
    return compileall.compile_dir(package, quiet=1)


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def proc_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (threads are not processes: they are counted in
    their process's stat)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (every thread); gone ones count 0."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by the nearest-rank method."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil without floats
    return ordered[int(rank) - 1]


def machine() -> dict[str, Any]:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.partition(":")[2].strip()
            break
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text()
                  .splitlines() if line.startswith("MemTotal:"))
    mosquitto = subprocess.run([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-h"],
                               capture_output=True, text=True).stdout.splitlines()[:1]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=Path(__file__).resolve().parent.parent).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_mb": mem_kb // 1024,
            "kernel": platform.release(), "python": platform.python_version(),
            "mosquitto": mosquitto[0] if mosquitto else "", "commit": commit,
            "loadavg_at_start": os.getloadavg()[0],
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


# ---- the daemon process ---------------------------------------------------------------------

class DaemonProcess:
    """One ``gatewayd --config`` process, its READY time, memory and CPU time."""

    def __init__(self, config: Path, env: dict[str, str], runtime_dir: Path,
                 log_file: Path, preexec: Callable[[], None] | None = None) -> None:
        if not compile_daemon():
            print("  (gatewayd's modules could not all be byte-compiled, see above: this "
                  "start compiles them from source, which a hub does not)", flush=True)
        self.control_socket = runtime_dir / "control.sock"
        # A short directory of its own: a Unix socket path is limited to 107 bytes, and the
        # workdir (a pytest tmp_path, say) may be deep.
        self._notify_dir = Path(tempfile.mkdtemp(prefix="gwd-notify-"))
        notify_path = self._notify_dir / "notify.sock"
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(notify_path))
        self._notify_path = notify_path
        self.log_file = log_file
        full_env = {**os.environ, **unit_environment(), **env, "NOTIFY_SOCKET": str(notify_path),
                    "PYTHONUNBUFFERED": "1"}
        full_env.pop("WATCHDOG_USEC", None)
        full_env.pop("JOURNAL_STREAM", None)
        self._log = log_file.open("ab")
        self.started = time.monotonic()
        self.proc = subprocess.Popen([str(BIN / "gatewayd"), "--config", str(config)],
                                     env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=preexec)
        self.ready_at: float | None = None
        self.last_status = ""
        self._closing = threading.Event()
        self._drain: threading.Thread | None = None

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Seconds from process start to READY=1 on the notify socket."""
        deadline = self.started + timeout
        while self.ready_at is None:
            if self.proc.poll() is not None:
                raise BenchError(f"gatewayd exited {self.proc.returncode} before READY:\n"
                                 f"{self.output()[-3000:]}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"gatewayd not READY after {timeout:g} s")
            readable, _, _ = select.select([self._notify], [], [], min(left, 0.5))
            if readable and "READY=1" in self._receive().split("\n"):
                self.ready_at = time.monotonic()
        # Keep reading, as systemd does: the daemon sends STATUS= on every change, and a
        # datagram socket nobody reads fills after net.unix.max_dgram_qlen (often 10)
        # messages, after which the daemon's next notification blocks its event loop.
        self._drain = threading.Thread(target=self._drain_notify, daemon=True,
                                       name="notify-drain")
        self._drain.start()
        return self.ready_at - self.started

    def _receive(self) -> str:
        data = self._notify.recv(4096).decode(errors="replace")
        for line in data.split("\n"):
            if line.startswith("STATUS="):
                self.last_status = line[len("STATUS="):]
        return data

    def _drain_notify(self) -> None:
        while not self._closing.is_set():
            readable, _, _ = select.select([self._notify], [], [], 0.2)
            if readable:
                self._receive()

    def client(self, timeout: float = 30.0) -> Client:
        return Client(self.control_socket, timeout)

    def api(self, method: str, endpoint: str, body: dict[str, Any] | None = None) -> Any:
        return self.client().request(method, endpoint, body)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise BenchError("no VmRSS for gatewayd")

    def rss_samples_until(self, until: float, every: float = 1.0) -> list[float]:
        """Five RSS samples, ``every`` s apart, the last at ``until`` (``time.monotonic()``)."""
        samples = []
        for at in (until - 4 * every, until - 3 * every, until - 2 * every, until - every,
                   until):
            delay = at - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # a measurement schedule, not synchronisation
            samples.append(self.rss_mb())
        return samples

    def cpu_s(self) -> float:
        """User + system CPU time of the whole process (every thread), in seconds."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def output(self) -> str:
        return self.log_file.read_text(errors="replace")

    def stop(self, timeout: float = 60.0) -> float:
        """SIGTERM, as systemd stops it; seconds until it exited (killed after ``timeout``,
        which is then what is returned)."""
        start = time.monotonic()
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
                print(f"  (gatewayd did not stop within {timeout:g} s: killed)", flush=True)
        finally:
            self._closing.set()
            if self._drain is not None:
                self._drain.join(5)
            self._log.close()
            self._notify.close()
            self._notify_path.unlink(missing_ok=True)
            self._notify_dir.rmdir()
        return time.monotonic() - start


# ---- the world ------------------------------------------------------------------------------

class BenchWorld:
    """The simulated world plus config files for the daemon profiles."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        # The full hub's figures are the virtual-radio series (README, "Two series"): no
        # emulator process in this world; the bellows runs (peers, pizero) start their own.
        self.sim = SimWorld(workdir / "world", zigbee_radio="virtual")
        self.portal_port = 0
        self._runs = 0

    def __enter__(self) -> BenchWorld:
        self.sim.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sim.stop()

    @property
    def broker(self) -> Any:
        assert self.sim.broker is not None
        return self.sim.broker

    @property
    def root(self) -> str:
        assert self.sim.account is not None
        return str(self.sim.account.username)

    def hub_base(self, device_id: str = DEVICE_ID) -> str:
        return f"{self.root}/sweet-home/{device_id}"

    def pair_params(self) -> dict[str, str]:
        account = self.sim.account
        assert account is not None
        home = next(ap for ap in self.sim.access_points if ap["ssid"] == "HomeNet")
        return {"ssid": "HomeNet", "psk": home["psk"], "wsp": account.wsp,
                "token": account.token, "host": self.broker.host,
                "brport": str(self.broker.port)}

    def config(self, name: str, state_dir: Path, *, zigbee: bool = False, ble: bool = False,
               virtual: bool = False) -> tuple[Path, Path]:
        """Write a config for a profile; returns (config file, runtime dir)."""
        self._runs += 1
        runtime = self.workdir / f"run-{self._runs}"
        runtime.mkdir(parents=True)
        self.portal_port = free_port()
        text = f"""
[hub]
device_id = "{DEVICE_ID}"
state_dir = "{state_dir}"
runtime_dir = "{runtime}"
[portal]
listen = "127.0.0.1"
port = {self.portal_port}
[hotspot]
interface = "wlan0"
[ble]
enabled = {str(ble).lower()}
adapter = "hci0"
[zigbee]
enabled = {str(zigbee).lower()}
radio = "virtual"
[logging]
level = "warning"
"""
        if virtual:
            text += """
[[virtual]]
type = "system"
id = "health"
interval = 10
[[virtual]]
type = "timer"
id = "kettle"
duration = 300
repeat = true
autostart = true
"""
        path = self.workdir / f"{name}-{self._runs}.toml"
        path.write_text(text)
        return path, runtime

    def start_daemon(self, name: str, state_dir: Path, env: dict[str, str] | None = None,
                     **profile: bool) -> DaemonProcess:
        config, runtime = self.config(name, state_dir, **profile)
        assert self.sim.bus is not None
        return DaemonProcess(config, {"DBUS_SYSTEM_BUS_ADDRESS": self.sim.bus.address,
                                      **(env or {})},
                             runtime, self.workdir / f"{name}.log")

    @property
    def portal(self) -> str:
        return f"http://127.0.0.1:{self.portal_port}"

    def http_get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.portal + path, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


def copy_state(src: Path, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


# ---- MQTT in the bench process ----------------------------------------------------------------

class Monitor:
    """A superuser MQTT client: waits for live (not retained, unless ``retained``)
    messages, publishes /set."""

    def __init__(self, world: BenchWorld, topic_filter: str, keep_last: bool = False,
                 retained: bool = False) -> None:
        self.messages: queue.Queue[tuple[float, str, str]] = queue.Queue(maxsize=100_000)
        # keep_last: only the newest live payload per topic (last_json), no queue.
        self.keep_last = keep_last
        self.retained = retained
        self._last: dict[str, str] = {}
        self._last_lock = threading.Lock()
        self._subscribed = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2,
                             client_id=f"bench-{os.getpid()}-{time.monotonic_ns()}")
        client.username_pw_set(MONITOR_USER, world.broker.monitor_password)
        client.on_connect = lambda c, *_: c.subscribe(topic_filter, qos=1)
        client.on_subscribe = lambda *_: self._subscribed.set()
        client.on_message = self._on_message
        # Nagle off, as on the hub: with it on, a /set written while this client's last
        # PUBACK is unacknowledged waits for the broker's delayed ACK (up to 40 ms),
        # which would be charged to the hub.
        client.on_socket_open = tcp_no_delay
        client.connect(world.broker.host, world.broker.port, keepalive=30)
        client.loop_start()
        self.client = client
        if not self._subscribed.wait(10):
            self.close()
            raise BenchError("the bench's MQTT client could not subscribe")

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.retain and not self.retained:
            return
        if self.keep_last:
            with self._last_lock:
                self._last[msg.topic] = msg.payload.decode(errors="replace")
        else:
            self.messages.put((time.monotonic(), msg.topic, msg.payload.decode()))

    def last_json(self, topic: str) -> Any:
        """The newest live payload on ``topic`` as JSON (keep_last), or None."""
        with self._last_lock:
            payload = self._last.get(topic)
        try:
            return json.loads(payload) if payload is not None else None
        except ValueError:
            return None

    def last_payloads(self) -> dict[str, str]:
        """The newest live payload of every topic seen (keep_last), as text; a copy."""
        with self._last_lock:
            return dict(self._last)

    def forget(self, topic: str | None = None) -> None:
        """Forget the newest payload of ``topic`` (of every topic if None)."""
        with self._last_lock:
            if topic is None:
                self._last.clear()
            else:
                self._last.pop(topic, None)

    def drain(self) -> None:
        while not self.messages.empty():
            self.messages.get_nowait()

    def wait_for(self, topic: str, payload: str, timeout: float) -> float:
        """The receive time of the next live ``payload`` on ``topic``."""
        return self.wait_match(topic, lambda got: got == payload, timeout, repr(payload))[0]

    def wait_match(self, topic: str, match: Callable[[str], bool], timeout: float,
                   what: str = "a matching message") -> tuple[float, str]:
        """Receive time and payload of the next live message on ``topic`` that ``match``es."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"no {what} on {topic} within {timeout:g} s")
            try:
                at, got_topic, got = self.messages.get(timeout=left)
            except queue.Empty:
                continue
            if got_topic == topic and match(got):
                return at, got

    def publish(self, topic: str, payload: str) -> None:
        self.client.publish(topic, payload, qos=1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# ---- the subscriber process ------------------------------------------------------------------

class Subscriber:
    """``python -m bench.subscriber`` as a separate process (see that module)."""

    def __init__(self, world: BenchWorld, topic_filter: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.subscriber", world.broker.host,
             str(world.broker.port), MONITOR_USER, world.broker.monitor_password, topic_filter],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            cwd=Path(__file__).resolve().parent.parent)
        self._lines: queue.Queue[str] = queue.Queue(maxsize=1000)
        threading.Thread(target=self._reader, daemon=True, name="subscriber-out").start()
        self.read(20)  # {"subscribed": true}

    def _reader(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put("")

    def send(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def read(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"the subscriber said nothing for {timeout:g} s") from None
        if not line:
            raise BenchError(f"the subscriber exited ({self.proc.wait()})")
        return json.loads(line)  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(10)


@contextmanager
def subscriber(world: BenchWorld, topic_filter: str) -> Iterator[Subscriber]:
    sub = Subscriber(world, topic_filter)
    try:
        yield sub
    finally:
        sub.close()


# ---- results --------------------------------------------------------------------------------

class Results:
    """Metric name -> samples; flattened as name (median), name_min, name_max."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}
        self.units: dict[str, str] = {}
        self.extra: dict[str, float] = {}

    def add(self, name: str, values: list[float] | float, unit: str) -> None:
        values = values if isinstance(values, list) else [values]
        if not values:
            raise BenchError(f"{name}: no samples")
        self.samples[name] = [float(v) for v in values]
        self.units[name] = unit
        stats = summary(self.samples[name])
        print(f"  {name:34s} {_fmt(stats['median']):>10s} {unit:8s} "
              f"(min {_fmt(stats['min'])}, max {_fmt(stats['max'])}, n={len(values)})",
              flush=True)

    def note(self, name: str, value: float) -> None:
        """A figure recorded as it is (a setting or a count), not a measurement."""
        self.extra[name] = value

    def flat(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, values in self.samples.items():
            stats = summary(values)
            out[name] = round(stats["median"], 6)
            out[f"{name}_min"] = round(stats["min"], 6)
            out[f"{name}_max"] = round(stats["max"], 6)
            out[f"{name}_n"] = len(values)
        out.update(self.extra)
        return out

    def table(self) -> str:
        lines = [f"{'metric':34s} {'median':>10s} {'min':>10s} {'max':>10s}  unit"]
        for name, values in self.samples.items():
            stats = summary(values)
            lines.append(f"{name:34s} {_fmt(stats['median']):>10s} {_fmt(stats['min']):>10s} "
                         f"{_fmt(stats['max']):>10s}  {self.units[name]}")
        return "\n".join(lines)


def _fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.4f}"
