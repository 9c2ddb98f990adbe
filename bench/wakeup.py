"""What a wake-up costs on this machine: ``python -m bench.wakeup`` (bench/README.md,
"What a wake-up costs on this machine").

No gatewayd code: two processes play ping-pong with 40-byte messages over loopback TCP
(Nagle off), back to back and with a sleep before each ping. For each pace it reports the
round trip and the pinging thread's CPU time per ping (``time.thread_time()`` around the
send and the wait for the answer), medians of each run, then median, min and max over
``--repeats`` runs. ``wakeup_penalty_cpu_us`` is what a ping after a 20 ms sleep costs
over one back to back: the price a thread pays here for having slept, whatever its work.
On this bench's VM it is 60-90 µs, a sixth to a third of a report's cost to gatewayd at
a radio's rates; on bare metal it is a few microseconds. Compare runs on one machine, in
one sitting.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import time
from multiprocessing import Process

from bench.harness import Results

MESSAGE = b"x" * 40
PACES = (("back_to_back", 0.0), ("gap4ms", 0.004), ("gap20ms", 0.020))


def _echo(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := sock.recv(64):  # empty: the pinger closed
            sock.sendall(data)


def _ping(sock: socket.socket, count: int, gap: float) -> tuple[float, float]:
    """Median round trip and median CPU per ping (µs)."""
    rtts, cpus = [], []
    for _ in range(count):
        if gap:
            time.sleep(gap)
        t0, c0 = time.perf_counter(), time.thread_time()
        sock.sendall(MESSAGE)
        got = 0
        while got < len(MESSAGE):
            data = sock.recv(64)
            if not data:
                raise SystemExit("the echo process went away")
            got += len(data)
        cpus.append(time.thread_time() - c0)
        rtts.append(time.perf_counter() - t0)
    return statistics.median(rtts) * 1e6, statistics.median(cpus) * 1e6


def measure(count: int, spaced: int, repeats: int) -> dict[str, list[float]]:
    """Per figure, one median per run."""
    figures: dict[str, list[float]] = {}
    with socket.create_server(("127.0.0.1", 0)) as server:
        echo = Process(target=_echo, args=(server.getsockname()[1],), daemon=True)
        echo.start()
        server.settimeout(30)  # an echo process that cannot connect ends the run
        sock, _ = server.accept()
        sock.settimeout(30)
        with sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(repeats):
                cpu = {}
                for name, gap in PACES:
                    rtt, cpu[name] = _ping(sock, spaced if gap else count, gap)
                    figures.setdefault(f"wakeup_rtt_us_{name}", []).append(rtt)
                    figures.setdefault(f"wakeup_cpu_us_{name}", []).append(cpu[name])
                figures.setdefault("wakeup_penalty_cpu_us", []).append(
                    cpu["gap20ms"] - cpu["back_to_back"])
        echo.join(5)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wakeup", description=__doc__)
    parser.add_argument("--count", type=int, default=2000, help="back-to-back pings per run")
    parser.add_argument("--spaced", type=int, default=300, help="spaced pings per run and pace")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    results = Results()
    for name, values in measure(args.count, args.spaced, args.repeats).items():
        results.add(name, values, "us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
