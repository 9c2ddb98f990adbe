"""The cloud connection's cost per publication: ``python -m bench.publish`` (bench/README.md,
"The publication path").

One :class:`gatewayd.cloud.net.Connection` (the cloud link's own) against the simulated
cloud's mosquitto (:class:`gatewayd.simulator.broker.Broker`: a paired account, its ACL,
Nagle off) on loopback, QoS 1 with the link's window of 32, in this process: the CPU time
of the process (the connection and the loop that drives it) per publication, when
publishing as fast as the broker acknowledges (``saturated``) and at a steady 1000 a
second (``paced``, one publication per pass of the loop, as a hub's reports come). The
paced figure includes the loop's own wake-up for each publication, about what a hub pays.
Medians with min and max of ``--repeats`` runs; compare runs on one machine, in one
sitting.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench.harness import Results
from gatewayd.cloud.attempts import CloudResult
from gatewayd.cloud.endpoint import Endpoint
from gatewayd.cloud.net import Connection
from gatewayd.credentials import mqtt_username
from gatewayd.simulator.broker import Broker

WINDOW = 32
WSP, TOKEN = "bench@example.com", "bench-token"
TOPICS = [f"{mqtt_username(WSP)}/sweet-home/plug-{i}/meter/power" for i in range(200)]


class _Acks:
    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.count = 0
        self.changed = asyncio.Event()
        self.failure = ""

    def on_connected(self, gen: int, local_ip: str) -> None:
        self.connected.set()

    def on_connect_failed(self, gen: int, result: CloudResult) -> None:
        self.failure = result.reason

    def on_connection_lost(self, gen: int, reason: str) -> None:
        pass

    def on_published(self, gen: int, mid: int) -> None:
        self.count += 1
        self.changed.set()

    def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        pass

    def on_subscribed(self, mid: int, refused: list[str]) -> None:
        pass

    async def until(self, count: int) -> None:
        while self.count < count:
            self.changed.clear()
            await self.changed.wait()


async def _run(broker: Broker, count: int, rate: float) -> float:
    """CPU µs per publication of one run."""
    loop = asyncio.get_running_loop()
    acks = _Acks()
    conn = Connection(Endpoint(broker.host, broker.port, False),
                      username=mqtt_username(WSP), password=TOKEN,
                      client_id=f"bench-{rate:g}", protocol="3.1.1", keepalive=60,
                      connect_timeout=5.0, will=None, reconnect_min=0.1, reconnect_max=1.0,
                      loop=loop, sink=acks, window=WINDOW)
    conn.start()
    try:
        await asyncio.wait_for(acks.connected.wait(), 10)
    except TimeoutError:
        raise SystemExit(f"cannot connect to the bench broker: {acks.failure}") from None
    payload = b"1234.5"
    sent = 0
    cpu0 = time.process_time()
    if rate:
        start = time.monotonic()
        for sent in range(count):
            conn.publish(TOPICS[sent % len(TOPICS)], payload, 1, True)
            await asyncio.sleep(max(0.0, start + (sent + 1) / rate - time.monotonic()))
        await asyncio.wait_for(acks.until(count), 60)
    else:
        while acks.count < count:
            while sent < count and sent - acks.count < WINDOW:
                conn.publish(TOPICS[sent % len(TOPICS)], payload, 1, True)
                sent += 1
            acks.changed.clear()
            await acks.changed.wait()
    cpu = time.process_time() - cpu0
    conn.stop()
    await conn.join(5)
    return cpu / count * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.publish", description=__doc__)
    parser.add_argument("--count", type=int, default=5000, help="publications per run")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    results = Results()
    with tempfile.TemporaryDirectory(prefix="gatewayd-publish-") as tmp:
        broker = Broker(Path(tmp))
        broker.add_account(WSP, TOKEN)
        broker.start()
        try:
            for name, rate in (("saturated", 0.0), ("paced", 1000.0)):
                runs = [asyncio.run(_run(broker, args.count, rate))
                        for _ in range(args.repeats)]
                results.add(f"publish_cpu_us_{name}", runs, "us")
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
