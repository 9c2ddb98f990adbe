"""The simulated radio behind the hub, as ``gatewayctl zigbee sim`` drives it.

Two simulated radios exist. The EZSP NCP emulator (:mod:`gatewayd.simulator.ncp`) runs as
its own process; the hub talks to it with unmodified bellows (``radio = "bellows"``) and
reaches its JSON-lines control port at ``[zigbee] sim_control``. The zigpy-level virtual
radio (``radio = "virtual"``) runs inside the hub. :class:`EmulatorLink` and
:class:`VirtualLink` give both the same actions (:data:`SIM_ACTIONS`, docs/interfaces.md
§11) with the same results, so the control socket, the tests and the benchmarks need not
know which one runs. Wire faults (:data:`WIRE_FAULTS`) exist on the emulator only. Each
action's arguments are checked before either radio sees them (:func:`check_action`, with
:mod:`gatewayd.zigbee.simargs`, which the emulator's control port uses too).

:class:`ControlClient` is the client side of the emulator's control protocol: one JSON
object per line each way (``{"op": ..., ...}`` -> ``{"ok": true, "result": ...}``).

Standard library and the device catalog (plain data) only: nothing here imports zigpy.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Protocol

from gatewayd.zigbee.simargs import (
    NOISE_RATE,
    WAIT_HINT,
    ArgumentError,
    Signature,
    check_args,
)

log = logging.getLogger(__name__)

MAX_LINE = 1 << 20  # one request or reply, bytes

# action -> the keys it takes (required, optional). What both simulated radios do:
SIM_ACTIONS: dict[str, Signature] = {
    "join": Signature(("kind",), ("ieee", "install_code")), "leave": Signature(("ieee",)),
    "silence": Signature(("ieee",), ("silent",)),
    "report": Signature(("ieee", "cluster", "attributes"), ("endpoint",)),
    "command": Signature(("ieee", "cluster", "command"), ("args", "endpoint")),
    "set_link": Signature(("ieee", "lqi")), "unplug": Signature(), "replug": Signature(),
    "list": Signature(), "kinds": Signature(), "state": Signature(("ieee",)),
    "stream": Signature(("count",), ("rate", "cluster", "attribute", "start_at", "modulo",
                                     "offset")),
    "stream_status": Signature(), "stream_stop": Signature(),
    # the wire between the hub and the NCP (emulator only):
    "reset": Signature(), "drop": Signature(),
    "noise": Signature(("rate",), own=(("rate", NOISE_RATE),)), "slow": Signature(("ms",)),
    "counters": Signature(),
}
WIRE_FAULTS = ("reset", "drop", "noise", "slow", "counters")


class SimError(ValueError):
    """A simulator event that cannot happen, or bad arguments; the message says why."""


class SimUnavailable(Exception):
    """The emulator's control port does not answer."""


def _why(exc: BaseException) -> str:
    """Why the control port did not answer, in words for whoever typed the command (the
    socket's own text reads "Connect call failed ('127.0.0.1', 1)")."""
    if isinstance(exc, ConnectionRefusedError):
        return "nothing listens there: is the emulator running, and is zigbee.sim_control its " \
               "control port?"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, OSError):
        return exc.strerror or "the connection failed"
    return "its answer is not the control port's"


class ControlError(Exception):
    """A control request failed; the message is the emulator's error."""


class ControlClient:
    """``async with ControlClient(port) as ctl: await ctl.call("join", kind="plug")``.

    One connection, one request at a time (a lock); :meth:`call` reconnects once if the
    connection was closed since the last request (the emulator restarted)."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
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
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass

    async def _exchange(self, line: bytes) -> bytes:
        if self._reader is None or self._writer is None:
            await self.connect()
        assert self._reader is not None and self._writer is not None
        self._writer.write(line)
        await self._writer.drain()
        async with asyncio.timeout(self.timeout):
            return await self._reader.readline()

    async def request(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request, return the raw reply."""
        line = json.dumps(request).encode() + b"\n"
        async with self._lock:
            try:
                reply = await self._exchange(line)
            except ConnectionError:
                reply = b""
            if not reply:  # closed since the last request: once more, on a new connection
                await self.close()
                reply = await self._exchange(line)
        if not reply:
            raise ControlError("the control connection closed")
        answer: dict[str, Any] = json.loads(reply)
        return answer

    async def call(self, op: str, **args: Any) -> Any:
        reply = await self.request({"op": op, **args})
        if not reply.get("ok"):
            raise ControlError(str(reply.get("error")))
        return reply.get("result")


class SimLink(Protocol):
    """A simulated radio's injection interface."""

    async def call(self, action: str, args: dict[str, Any]) -> Any: ...

    async def close(self) -> None: ...


def check_action(action: Any, args: dict[str, Any]) -> str:
    """The action's name, if it is one and ``args`` are the arguments it takes, each of its
    type (:func:`gatewayd.zigbee.simargs.check_args`); else SimError naming what is wrong."""
    if not isinstance(action, str) or action not in SIM_ACTIONS:
        raise SimError(f"action: one of {', '.join(SIM_ACTIONS)}")
    try:
        check_args(action, args, SIM_ACTIONS[action])
    except ArgumentError as exc:
        raise SimError(str(exc)) from None
    return action


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` (``[zigbee] sim_control``, sim.json ``zigbee.control``)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not a host:port address: {text!r}")
    return host.strip("[]"), int(port)


class EmulatorLink:
    """The actions on the NCP emulator, through its control port."""

    # action -> (control op, fixed arguments)
    _OPS: dict[str, tuple[str, dict[str, Any]]] = {
        "list": ("devices", {}), "state": ("device", {}),
        "unplug": ("fault", {"unplug": True}), "replug": ("fault", {"replug": True}),
        "reset": ("fault", {"reset": True}), "drop": ("fault", {"drop": True}),
    }

    def __init__(self, address: str) -> None:
        self.address = address
        host, port = parse_address(address)
        self.client = ControlClient(port, host)

    async def call(self, action: str, args: dict[str, Any]) -> Any:
        check_action(action, args)
        op, fixed = self._OPS.get(action, (action, {}))
        request = {**args, **fixed}
        if action in ("noise", "slow"):
            key = SIM_ACTIONS[action].required[0]
            op, request = "fault", {"noise" if action == "noise" else "delay_ms": args[key]}
        try:
            result = await self.client.call(op, **request)
        except ControlError as exc:
            raise SimError(str(exc).replace(WAIT_HINT, "")) from None
        except (OSError, TimeoutError, ValueError) as exc:
            raise SimUnavailable(f"the NCP emulator at {self.address} does not answer "
                                 f"({_why(exc)})") from None
        if action == "join":
            return result["ieee"]  # as the virtual radio answers: the new device's address
        if action in ("unplug", "replug", "reset", "drop"):
            return None
        return result

    async def close(self) -> None:
        await self.client.close()


class VirtualLink:
    """The actions on the in-process virtual radio (a ``VirtualNetwork``)."""

    def __init__(self, network: Any) -> None:
        self.network = network

    async def call(self, action: str, args: dict[str, Any]) -> Any:
        check_action(action, args)
        if action in WIRE_FAULTS:
            raise SimError(f"{action}: the virtual radio has no wire to the NCP; faults on "
                           "the wire need the NCP emulator (radio = \"bellows\" in the "
                           "simulator)")
        try:
            return getattr(self.network, action)(**args)
        except ValueError as exc:  # VirtualRadioError: an event that cannot happen
            raise SimError(str(exc)) from None
        except Exception:
            # A bug, not the caller's mistake: its Python text is for the log only.
            log.exception("zigbee sim %s failed", action)
            raise SimError(f"internal error in {action}; the details are in the hub's "
                           "log") from None

    async def close(self) -> None:
        return None


def sim_link(network: Any, sim_control: str | None) -> SimLink | None:
    """The link for a hub's simulated radio: the virtual radio's ``network`` if it runs
    one, else the NCP emulator's control port at ``sim_control``; None for a real radio."""
    if network is not None:
        return VirtualLink(network)
    return EmulatorLink(sim_control) if sim_control else None
