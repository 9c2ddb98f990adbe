"""The emulator's control interface: JSON lines over a loopback TCP socket.

One request per line, ``{"op": NAME, ...arguments}``; one reply per line,
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}`` saying what was
wrong (never a traceback). An ``id`` in the request is echoed in the reply.

Ops: ``status``, ``devices``, ``device {ieee}``, ``join {kind, ieee?, wait?}``,
``leave {ieee}``, ``silence {ieee, silent?}``, ``report {ieee, cluster, attributes,
endpoint?}``, ``command {ieee, cluster, command, args?, endpoint?}``, ``fault {reset? |
drop? | noise? | delay_ms?}``, ``counters``, ``stream {count, rate?, cluster?,
attribute?}``, ``stream_status``, ``kinds``. :class:`ControlClient` is a small async client.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from gatewayd.simulator.ncp.air import KINDS, Air, AirError
from gatewayd.simulator.ncp.server import NcpServer

log = logging.getLogger(__name__)

MAX_LINE = 1 << 20


class ControlError(Exception):
    """A control request failed; the message is the server's error."""


class Control:
    """The operations, on the emulator's event loop."""

    def __init__(self, server: NcpServer, air: Air) -> None:
        self.server, self.air, self.ncp = server, air, server.ncp
        self.ops: dict[str, Callable[..., Any]] = {
            "status": self.status, "devices": air.list, "device": self.device,
            "join": air.join, "leave": air.leave, "silence": air.silence,
            "report": air.report, "command": air.command, "fault": self.fault,
            "counters": server.counters_json, "stream": air.stream,
            "stream_status": air.stream_status, "kinds": lambda: sorted(KINDS)}

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

    def fault(self, reset: bool = False, drop: bool = False, noise: float | None = None,
              delay_ms: float | None = None) -> dict[str, Any]:
        if not (reset or drop or noise is not None or delay_ms is not None):
            raise ValueError("fault needs one of reset, drop, noise, delay_ms")
        done: dict[str, Any] = {}
        if noise is not None:
            self.server.set_noise(float(noise))
            done["noise"] = self.server.noise.rate
        if delay_ms is not None:
            self.server.set_delay(float(delay_ms))
            done["delay_ms"] = self.server.delay * 1000
        if reset:
            done["reset"] = self.server.reset()
        if drop:
            done["drop"] = self.server.drop()
        return done

    def call(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict):
            return {"ok": False, "error": "a request is a JSON object with an \"op\""}
        reply: dict[str, Any] = {}
        if "id" in request:
            reply["id"] = request["id"]
        args = {k: v for k, v in request.items() if k not in ("op", "id")}
        op = request.get("op")
        func = self.ops.get(op) if isinstance(op, str) else None
        if func is None:
            reply.update(ok=False, error=f"unknown op {op!r} (known: {sorted(self.ops)})")
            return reply
        try:
            result = func(**args)
        except TypeError as exc:
            reply.update(ok=False, error=f"bad arguments for {op}: {exc}")
        except (AirError, ValueError, KeyError) as exc:
            reply.update(ok=False, error=str(exc))
        except Exception as exc:  # reported to the caller, logged here with the traceback
            log.exception("control: %s failed", op)
            reply.update(ok=False, error=f"internal error in {op}: {type(exc).__name__}: {exc}")
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
                    request = json.loads(line)
                except ValueError as exc:
                    reply: dict[str, Any] = {"ok": False, "error": f"not JSON: {exc}"}
                else:
                    reply = self.control.call(request)
                writer.write(json.dumps(reply, default=str).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


class ControlClient:
    """``async with ControlClient(port) as ctl: await ctl.call("join", kind="plug")``."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> ControlClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port,
                                                                   limit=MAX_LINE)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()
            self._writer = None

    async def request(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request, return the raw reply."""
        if self._reader is None or self._writer is None:
            await self.connect()
        assert self._reader is not None and self._writer is not None
        async with self._lock:
            self._writer.write(json.dumps(request).encode() + b"\n")
            await self._writer.drain()
            line = await self._reader.readline()
        if not line:
            raise ControlError("the control connection closed")
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def call(self, op: str, **args: Any) -> Any:
        reply = await self.request({"op": op, **args})
        if not reply.get("ok"):
            raise ControlError(str(reply.get("error")))
        return reply.get("result")
