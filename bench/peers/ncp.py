"""The EZSP emulator both stacks talk to, and the bench's handle on it.

``python -m bench.peers.ncp --state FILE --port P --control-port C`` runs gatewayd's EZSP
NCP emulator (``gatewayd.simulator.ncp``) as a library, exactly as ``gatewayd-ncp-sim``
does, with one more control op that only a benchmark needs:

* ``{"op": "factory_new", "ieees": [...], "kind": "plug"}``: the host is disconnected,
  the NCP forgets its network, keys and tokens (what a token factory reset erases), its
  RAM is reset, and the devices ``ieees`` wait in pairing mode again. The next host then
  forms its own network and gets the same devices joined the same way: they join as soon
  as it permits joining.

Report timing needs nothing new: the emulator's report stream is deterministic (report
``k`` is due at ``start_at + k / rate`` on ``CLOCK_MONOTONIC``, see
``gatewayd/zigbee/virtual/report_stream.py``), and a frame the host has not taken yet
waits in the emulator's ASH queue, so a host's back-pressure shows as latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from gatewayd.simulator.ncp.emulator import Emulator
from gatewayd.simulator.ncp.ncp import forget_network
from gatewayd.simulator.procs import Child, free_port, port_open, wait_until
from gatewayd.zigbee.simargs import Arg, Signature

CONTROL_TIMEOUT = 60.0
FACTORY_NEW = Signature(("ieees",), ("kind",), own=(
    ("ieees", Arg("an array of IEEE addresses (text)",
                  lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v))),))


def factory_new(emulator: Emulator, ieees: list[str], kind: str = "plug") -> dict[str, Any]:
    """See the module docstring; ``emulator`` is a running :class:`Emulator`."""
    emulator.server.drop()
    ncp = emulator.ncp
    ncp.network_up = False
    ncp.nvram.key_table.clear()
    ncp.nvram.tokens.clear()
    forget_network(ncp, keep_frame_counters=False)  # children, devices on the air, saved
    ncp.reset()
    emulator.air.pairing.clear()
    for ieee in ieees:
        emulator.air.join(kind, ieee=ieee, wait=True)
    return {"pairing": len(emulator.air.pairing)}


async def _serve(args: argparse.Namespace) -> None:
    emulator = Emulator(args.state, port=args.port, control_port=args.control_port)
    emulator.control.add_op("factory_new", lambda **kw: factory_new(emulator, **kw),
                            FACTORY_NEW)
    await emulator.start()
    print(f"ncp {emulator.url} control {emulator.control_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await emulator.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.ncp", description=__doc__)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(args))
    return 0


class NcpProcess:
    """The emulator as a child process of the bench, and a blocking control client."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port, self.control_port = free_port(), free_port()
        self.child = Child("ncp-emulator", [
            sys.executable, "-m", "bench.peers.ncp", "--state", str(workdir / "ncp.json"),
            "--port", str(self.port), "--control-port", str(self.control_port)],
            workdir / "ncp.log", cwd=Path(__file__).resolve().parents[2])
        wait_until(lambda: port_open("127.0.0.1", self.control_port), 30,
                   "the NCP emulator's control port", self.child)
        self._sock = socket.create_connection(("127.0.0.1", self.control_port),
                                              timeout=CONTROL_TIMEOUT)
        self._file = self._sock.makefile("rwb")

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.child.pid

    def call(self, op: str, **args: Any) -> Any:
        self._file.write(json.dumps({"op": op, **args}).encode() + b"\n")
        self._file.flush()
        line = self._file.readline()
        if not line:
            raise RuntimeError(f"the NCP emulator closed its control connection:\n"
                               f"{self.child.tail()}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"NCP emulator {op}: {reply.get('error')}")
        return reply.get("result")

    def factory_new(self, ieees: list[str]) -> None:
        self.call("factory_new", ieees=ieees, kind="plug")
        wait_until(lambda: not self.call("status")["network"]["host_connected"], 10,
                   "the previous host to be disconnected")

    def wait_stream_done(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status: dict[str, Any] = self.call("stream_status")
            if status is None or not status["running"]:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError("the report stream did not end")
            time.sleep(0.1)  # polling a status, not synchronising on it

    def close(self) -> None:
        try:
            self._file.close()
            self._sock.close()
        finally:
            self.child.stop()


if __name__ == "__main__":
    sys.exit(main())
