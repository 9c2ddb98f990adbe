"""Watching the hub while a campaign attacks it: healthcheck latency and memory.

The healthcheck watcher is its own process (``python -m chaos.watch PORT OUT``), an honest
client polling ``GET /healthcheck`` on a new connection every 50 ms from 127.0.0.1, so
its figures are the hub's and not those of the campaign's Python sharing a GIL with it.
Each answer is a line ``<monotonic time> <seconds> <status>`` in OUT (status 0: no answer
within the timeout). :class:`RssSampler` reads the daemon's ``VmRSS`` every 250 ms.
"""

from __future__ import annotations

import math
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

INTERVAL = 0.05
TIMEOUT = 5.0  # an answer slower than this counts as none (and as TIMEOUT seconds)
REPO = Path(__file__).resolve().parent.parent


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (0-100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(len(ordered) * q / 100))
    return ordered[rank - 1]


@dataclass
class Latencies:
    """Healthcheck answers during a campaign (seconds); ``failed``: none within TIMEOUT or
    not ``200 OK``, counted in ``samples`` as TIMEOUT."""

    samples: list[float] = field(default_factory=list)
    failed: int = 0

    def p99(self) -> float:
        return percentile(self.samples, 99)

    def p50(self) -> float:
        return percentile(self.samples, 50)

    def max(self) -> float:
        return max(self.samples) if self.samples else math.nan


class HealthWatch:
    """Runs the watcher process against ``port`` until :meth:`stop`."""

    def __init__(self, port: int, out: Path) -> None:
        self.out = out
        out.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "chaos.watch", str(port), str(out)],
                                     cwd=REPO)

    def stop(self) -> Latencies:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        result = Latencies()
        try:
            lines = self.out.read_text().splitlines()
        except FileNotFoundError:
            return result
        for line in lines:
            parts = line.split()
            if len(parts) != 3:
                continue  # the last line may be cut short by the stop
            seconds, status = float(parts[1]), int(parts[2])
            if status != 200:
                result.failed += 1
                seconds = max(seconds, TIMEOUT)
            result.samples.append(seconds)
        return result


class RssSampler:
    """The daemon's resident memory over a campaign: first, last and peak (MB)."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.path = Path(f"/proc/{pid}/status")
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._interval = interval
        self._sample()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)
        self._thread.start()

    def _sample(self) -> bool:
        try:
            text = self.path.read_text()
        except OSError:
            return False
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                self.samples.append(int(line.split()[1]) / 1024)
                return True
        return False

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if not self._sample():
                return

    def stop(self) -> tuple[float, float, float]:
        """(growth = last - first, first, peak) in MB."""
        self._stop.set()
        self._thread.join(5)
        self._sample()
        if not self.samples:
            return math.nan, math.nan, math.nan
        return self.samples[-1] - self.samples[0], self.samples[0], max(self.samples)


# ---- the watcher process ----------------------------------------------------------------------

def _probe(port: int) -> tuple[float, int]:
    start = time.monotonic()
    request = (b"GET /healthcheck HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    data = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.sendall(request)
            while True:
                left = start + TIMEOUT - time.monotonic()
                if left <= 0:
                    return time.monotonic() - start, 0
                sock.settimeout(left)
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return time.monotonic() - start, 0
    ok = data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\nOK")
    return time.monotonic() - start, 200 if ok else 1


def main(argv: list[str]) -> int:
    port, out = int(argv[0]), Path(argv[1])
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    with out.open("a", buffering=1) as file:
        while not stopping.is_set():
            began = time.monotonic()
            seconds, status = _probe(port)
            file.write(f"{began:.6f} {seconds:.6f} {status}\n")
            stopping.wait(max(0.0, INTERVAL - (time.monotonic() - began)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
