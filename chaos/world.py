"""The hubs the campaigns attack, and HTTP spoken byte by byte from many loopback addresses.

A :class:`Hub` is one configuration, state directory and portal port; its ``gatewayd``
process (:class:`bench.harness.DaemonProcess`) may be killed with SIGKILL and started again
on the same files, inside the same simulated world (the NetworkManager mock keeps its
profiles, mosquitto its port). :func:`exchange` sends raw bytes (whatever a fuzzer made of
them) from a chosen source address in 127.0.0.0/8, so the per-address limits of the portal
apply per simulated client, as they would to phones on the hotspot.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import BenchWorld, DaemonProcess
from gatewayd.ctl.client import CtlError
from gatewayd.simulator.procs import free_port, wait_until

HOST = "127.0.0.1"
PAIR_RATE = 1000  # [portal] pair_rate_per_minute, the highest allowed (see Hub)


class HubDied(RuntimeError):
    """The hub's process is gone, and not because a campaign killed it."""


class ChaosWorld(BenchWorld):
    """The benchmarks' world, which also knows every hub started in it (to stop them all
    when a campaign ends early)."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.hubs: list[Hub] = []

    def stop_hubs(self) -> None:
        for hub in self.hubs:
            if hub.alive():
                hub.stop()


class Hub:
    """One hub of a campaign: its files, its port and its (current) process.

    The config is the benchmarks' minimal hub plus what a campaign asks for. Pairing
    requests are limited to ``PAIR_RATE`` a minute per address (the highest setting) and the
    fuzzer spreads its inputs over many addresses, so that inputs reach the validation
    instead of the rate limit; the cloud link retries within 2 s so that a broker that
    returns is noticed within a campaign's bounds.
    """

    def __init__(self, world: BenchWorld, name: str, *, zigbee: bool = False,
                 ble: bool = False, provisioning: dict[str, Any] | None = None) -> None:
        self.world = world
        self.name = name
        self.dir = world.workdir / name
        self.state_dir = self.dir / "state"
        self.runtime = self.dir / "run"
        self.runtime.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.zigbee = zigbee
        self.ble = ble
        self.provisioning = provisioning  # [provisioning] keys: the platform issues accounts
        self.config = self.dir / "gatewayd.toml"
        self.config.write_text(self._config_text())
        self.log = self.dir / "gatewayd.log"
        self.daemon: DaemonProcess | None = None
        self.starts = 0
        self.killed = 0
        if isinstance(world, ChaosWorld):
            world.hubs.append(self)

    def _config_text(self) -> str:
        # One device id per hub: each leaves its retained tree on the broker (one account).
        return f"""
[hub]
device_id = "chaos-{self.name}"
state_dir = "{self.state_dir}"
runtime_dir = "{self.runtime}"
[portal]
listen = "{HOST}"
port = {self.port}
pair_rate_per_minute = {PAIR_RATE}
[hotspot]
interface = "wlan0"
[cloud]
reconnect_min = 0.2
reconnect_max = 2.0
[ble]
enabled = {str(self.ble).lower()}
adapter = "hci0"
[zigbee]
enabled = {str(self.zigbee).lower()}
radio = "virtual"
[logging]
level = "warning"
""" + ("[provisioning]\n" + "".join(f"{k} = {json.dumps(v)}\n"
                                    for k, v in self.provisioning.items())
       if self.provisioning else "")

    # ---- the process -------------------------------------------------------------------------

    def start(self, timeout: float = 60.0, *, wait: bool = True) -> float:
        """Start gatewayd; seconds until READY=1 (0 with ``wait`` False: just started).
        Raises HubDied if it never gets there."""
        assert self.daemon is None or self.daemon.proc.poll() is not None
        assert self.world.sim.bus is not None
        self.daemon = DaemonProcess(self.config,
                                    {"DBUS_SYSTEM_BUS_ADDRESS": self.world.sim.bus.address},
                                    self.runtime, self.log)
        self.starts += 1
        if not wait:
            return 0.0
        try:
            return self.daemon.wait_ready(timeout)
        except Exception as exc:
            self._reap()
            raise HubDied(f"{self.name}: not READY: {exc}") from None

    @property
    def pid(self) -> int:
        assert self.daemon is not None
        return self.daemon.proc.pid

    def alive(self) -> bool:
        return self.daemon is not None and self.daemon.proc.poll() is None

    def exit_code(self) -> int | None:
        """The exit status if the process ended (by itself: the campaign did not end it)."""
        return None if self.daemon is None else self.daemon.proc.poll()

    def kill9(self) -> int | None:
        """SIGKILL, as a power cut or the OOM killer would end it. Returns None, or the exit
        status if the process had already ended by itself."""
        assert self.daemon is not None
        ended = self.daemon.proc.poll()
        if ended is None:
            os.kill(self.daemon.proc.pid, signal.SIGKILL)
        self.daemon.proc.wait(10)
        self.killed += 1
        self._reap()
        return ended

    def stop(self) -> int | None:
        """SIGTERM; the exit status (0 is a clean stop)."""
        if self.daemon is None:
            return None
        self.daemon.stop(30)
        code = self.daemon.proc.returncode
        self.daemon = None
        return code

    def _reap(self) -> None:
        if self.daemon is not None:
            self.daemon.stop(5)  # closes the log and the notify socket; the process is gone

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_errors(self) -> list[str]:
        """ERROR and CRITICAL lines and tracebacks in the hub's log so far."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines()
                if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")]

    # ---- the control socket ------------------------------------------------------------------

    def api(self, method: str, endpoint: str, body: dict[str, Any] | None = None,
            timeout: float = 30.0) -> Any:
        if not self.alive():
            raise HubDied(f"{self.name}: gatewayd exited ({self.exit_code()})")
        assert self.daemon is not None
        return self.daemon.client(timeout).request(method, endpoint, body)

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.api("GET", "status")
        return status

    def progress(self) -> dict[str, Any]:
        progress: dict[str, Any] = self.api("GET", "progress")
        return progress

    def wait(self, predicate: Any, timeout: float, what: str) -> Any:
        """Poll ``predicate(status)`` until truthy; HubDied if the process dies meanwhile."""
        def check() -> Any:
            try:
                return predicate(self.status())
            except CtlError:
                if not self.alive():
                    raise HubDied(f"{self.name}: gatewayd exited ({self.exit_code()}) while "
                                  f"waiting for {what}") from None
                return None
        return wait_until(check, timeout, f"{self.name}: {what}", interval=0.05)

    def wait_pairable(self, timeout: float = 30.0) -> dict[str, Any]:
        """Unpaired, hotspot up, taking pairing requests."""
        return dict(self.wait(lambda s: s["state"] == "unpaired" and s["onboarding"]["hotspot"]
                              and s["onboarding"]["pairing_open"] and s, timeout,
                              "unpaired with its hotspot up"))

    def wait_online(self, timeout: float = 30.0) -> dict[str, Any]:
        return dict(self.wait(lambda s: s["state"] == "online" and s, timeout, "online"))

    def pair(self, timeout: float = 30.0) -> None:
        """Pair through the portal with the simulated account and home Wi-Fi."""
        query = urllib.parse.urlencode(self.world.pair_params())
        answer = exchange(self.port, request("GET", f"/pair?{query}"))
        if answer.status != 200:
            raise RuntimeError(f"{self.name}: /pair answered {answer.status}: "
                               f"{answer.body[:200]!r}")
        self.wait_online(timeout)

    def reset(self) -> None:
        self.api("POST", "reset", {"full": False})

    def wait_link_idle(self, timeout: float = 60.0) -> None:
        def idle(status: dict[str, Any]) -> bool:
            link = status["cloud_link"]
            return bool(link["connected"] and not (link["buffered"] or link["announcing"]
                                                   or link["in_flight"]))
        self.wait(idle, timeout, "the cloud link to have published everything")

    def join_plugs(self, count: int, timeout: float = 120.0) -> list[str]:
        """Join ``count`` simulated plugs (through the control socket, as ``gatewayctl
        zigbee sim join kind=plug`` would) and wait until all are ready; their IEEEs."""
        self.wait(lambda s: s["zigbee"]["up"], 60, "the Zigbee radio")
        self.api("POST", "zigbee/permit-join", {"seconds": 254})
        ieees = [str(self.api("POST", "zigbee/sim", {"action": "join", "kind": "plug"})["result"])
                 for _ in range(count)]
        self.api("POST", "zigbee/permit-join", {"seconds": 0})
        self.wait(lambda s: sum(d.get("provider") == "zigbee" and d.get("state") == "ready"
                                for d in s["devices"]) >= count, timeout,
                  f"{count} plugs to be ready")
        return ieees

    def rss_mb(self) -> float:
        assert self.daemon is not None
        return self.daemon.rss_mb()


# ---- HTTP, byte by byte ------------------------------------------------------------------------

_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})[ \r]")


@dataclass
class Answer:
    statuses: list[int] = field(default_factory=list)  # every status line seen (pipelining)
    data: bytes = b""
    seconds: float = 0.0
    timed_out: bool = False
    refused: bool = False  # the connection itself failed

    @property
    def status(self) -> int | None:
        """The first answer's status; None when the hub closed without answering."""
        return self.statuses[0] if self.statuses else None

    @property
    def body(self) -> bytes:
        return self.data.partition(b"\r\n\r\n")[2]


def request(method: str, target: str, headers: dict[str, str] | None = None,
            body: bytes = b"", *, host: str = HOST) -> bytes:
    """An HTTP/1.1 request that closes its connection after the answer."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


def exchange(port: int, data: bytes, *, source: str = HOST, timeout: float = 10.0,
             half_close: bool = False, max_answer: int = 1 << 20) -> Answer:
    """Send ``data`` from ``source``, read until the hub closes (or ``timeout``).

    ``half_close`` shuts our sending side after the data: the end of a truncated request.
    """
    answer = Answer()
    start = time.monotonic()
    try:
        sock = socket.create_connection((HOST, port), timeout=timeout,
                                        source_address=(source, 0))
    except OSError:
        answer.refused = True
        answer.seconds = time.monotonic() - start
        return answer
    chunks: list[bytes] = []
    received = 0
    try:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        deadline = start + timeout
        while received < max_answer:
            left = deadline - time.monotonic()
            if left <= 0:
                answer.timed_out = True
                break
            sock.settimeout(left)
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
    except TimeoutError:
        answer.timed_out = True
    except OSError:
        pass  # reset by the hub: what it said so far is the answer
    finally:
        sock.close()
    answer.data = b"".join(chunks)
    answer.statuses = [int(m) for m in _STATUS.findall(answer.data)]
    answer.seconds = time.monotonic() - start
    return answer


def source_address(n: int) -> str:
    """The n-th simulated client: 127.0.0.10 ... 127.0.0.209, round robin."""
    return f"127.0.0.{10 + n % 200}"
