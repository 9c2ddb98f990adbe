"""The emulator's control interface: JSON lines over a loopback TCP socket.

One request per line, ``{"op": NAME, ...arguments}``; one reply per line,
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}`` saying what was
wrong in the request's terms (:data:`OPS` and :mod:`gatewayd.zigbee.simargs` check the
arguments first; a bug gives a fixed "internal error" and goes to the log, never Python's
text to the caller). An ``id`` in the request is echoed in the reply.

Ops: ``status``, ``devices``, ``device {ieee}``, ``join {kind, ieee?, wait?,
install_code?}``, ``leave {ieee}``, ``silence {ieee, silent?}``, ``set_link {ieee, lqi}``,
``report {ieee, cluster, attributes, endpoint?}``, ``command {ieee, cluster, command,
args?, endpoint?}``, ``fault {reset? | drop? | unplug? | replug? | noise? | delay_ms?}``,
``counters``, ``stream {count, rate?, cluster?, attribute?, start_at?, modulo?, offset?}``,
``stream_status``, ``stream_stop``, ``kinds``. :class:`ControlClient` is a small async
client (it lives in :mod:`gatewayd.zigbee.simlink`, which the hub uses too).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Callable
from typing import Any

from gatewayd.runtime.jsonbody import BadBody, loads
from gatewayd.simulator.ncp.air import KINDS, Air, AirError
from gatewayd.simulator.ncp.server import NcpServer
from gatewayd.zigbee.simargs import ArgumentError, Signature, check_args
from gatewayd.zigbee.simlink import MAX_LINE, SIM_ACTIONS, ControlClient, ControlError

__all__ = ["Control", "ControlClient", "ControlError", "ControlServer"]

log = logging.getLogger(__name__)

ONE_REQUEST = 'send one JSON object per line, such as {"op": "status"}'

# op -> the arguments it takes; those it shares with the hub's `zigbee sim` actions are
# theirs, so that both are checked alike (gatewayd.zigbee.simargs).
OPS: dict[str, Signature] = {
    **{op: SIM_ACTIONS[op] for op in ("leave", "silence", "set_link", "report", "command",
                                      "stream", "stream_status", "stream_stop", "kinds",
                                      "counters")},
    "status": Signature(), "devices": Signature(), "device": SIM_ACTIONS["state"],
    "join": Signature(("kind",), ("ieee", "wait", "install_code")),
    "fault": Signature((), ("reset", "drop", "unplug", "replug", "noise", "delay_ms")),
}


class Control:
    """The operations, on the emulator's event loop."""

    def __init__(self, server: NcpServer, air: Air) -> None:
        self.server, self.air, self.ncp = server, air, server.ncp
        self.ops: dict[str, Callable[..., Any]] = {
            "status": self.status, "devices": air.list, "device": self.device,
            "join": air.join, "leave": air.leave, "silence": air.silence,
            "set_link": air.set_link, "report": air.report, "command": air.command,
            "fault": self.fault, "counters": server.counters_json, "stream": air.stream,
            "stream_status": air.stream_status, "stream_stop": air.stream_stop,
            "kinds": lambda: sorted(KINDS)}
        self.signatures = dict(OPS)

    def add_op(self, name: str, func: Callable[..., Any], signature: Signature) -> None:
        """One more op (a benchmark's), its arguments checked as the others' are."""
        self.ops[name] = func
        self.signatures[name] = signature

    def network(self) -> dict[str, Any]:
        net = self.ncp.nvram.network
        info: dict[str, Any] = {"up": self.ncp.network_up, "formed": net is not None,
                                "node_id": f"0x{self.ncp.nvram.node_id:04X}",
                                "eui64": ":".join(f"{b:02x}" for b in
                                                  bytes.fromhex(self.ncp.nvram.eui64)[::-1]),
                                "host_connected": self.server.session is not None}
        if net is not None:
            info.update(pan_id=f"0x{net.pan_id:04X}", channel=net.channel,
                        extended_pan_id=":".join(f"{b:02x}" for b in
                                                 bytes.fromhex(net.extended_pan_id)[::-1]),
                        network_key_seq=net.network_key_seq,
                        nwk_frame_counter=self.ncp.nvram.nwk_frame_counter)
        info["permit_open"] = self.ncp.network_up and self.ncp.permit_open
        return info

    def status(self) -> dict[str, Any]:
        return {"network": self.network(), "devices": self.air.list(),
                "counters": self.server.counters_json()}

    def device(self, ieee: str) -> dict[str, Any]:
        return self.air.device(ieee).to_json()

    async def fault(self, reset: bool = False, drop: bool = False, unplug: bool = False,
                    replug: bool = False, noise: float | None = None,
                    delay_ms: float | None = None) -> dict[str, Any]:
        if not (reset or drop or unplug or replug or noise is not None
                or delay_ms is not None):
            raise AirError("fault needs one of reset, drop, unplug, replug, noise, delay_ms")
        if unplug and replug:
            raise AirError("fault: unplug or replug, not both")
        done: dict[str, Any] = {}
        try:  # the server checks the ranges
            if noise is not None:
                self.server.set_noise(float(noise))
                done["noise"] = self.server.noise.rate
            if delay_ms is not None:
                self.server.set_delay(float(delay_ms))
                done["delay_ms"] = self.server.delay * 1000
        except ValueError as exc:
            raise AirError(str(exc)) from None
        if reset:
            done["reset"] = self.server.reset()
        if drop:
            done["drop"] = self.server.drop()
        if unplug:
            done["unplug"] = await self.server.unplug()
        if replug:
            done["replug"] = await self.server.replug()
        return done

    async def call(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict):
            return {"ok": False, "error": "a request is a JSON object with an \"op\""}
        reply: dict[str, Any] = {}
        if "id" in request:
            reply["id"] = request["id"]
        args = {k: v for k, v in request.items() if k not in ("op", "id")}
        op = request.get("op")
        if not isinstance(op, str) or op not in self.ops:
            reply.update(ok=False, error=f"unknown op {op!r} (known: "
                                         f"{', '.join(sorted(self.ops))})")
            return reply
        try:
            check_args(op, args, self.signatures[op])
            result = self.ops[op](**args)
            if inspect.isawaitable(result):
                result = await result
        except (ArgumentError, AirError) as exc:  # the caller's mistake, said in its terms
            reply.update(ok=False, error=str(exc))
        except Exception:
            # A bug: the caller learns that much; Python's text goes to the log only.
            log.exception("control: %s failed", op)
            reply.update(ok=False, error=f"internal error in {op}; the details are in the "
                                         "emulator's log")
        else:
            reply.update(ok=True, result=result)
        return reply


class ControlServer:
    def __init__(self, control: Control, host: str = "127.0.0.1", port: int = 0) -> None:
        self.control = control
        self.host, self.port = host, port
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._client, self.host, self.port,
                                                  limit=MAX_LINE)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:
                    writer.write(b'{"ok": false, "error": "request line too long"}\n')
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                try:
                    request = loads(line, "the request")
                except BadBody as exc:
                    reply: dict[str, Any] = {"ok": False, "error": f"{exc}: {ONE_REQUEST}"}
                else:
                    reply = await self.control.call(request)
                writer.write(json.dumps(reply, default=str).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
