"""The NCP: EmberZNet 8.0 state and command handlers behind EZSP v14.

:meth:`Ncp.handle` takes one EZSP frame from the host and returns the frames to send
back: the response first, then the callbacks the command caused (``stackStatusHandler``
after ``formNetwork``...). Callbacks that happen later (a device on the air answering)
go to :attr:`Ncp.sink`, the ASH session, when one is connected.

This module has the dispatcher and the network life cycle (init, form, leave, permit
joining, scans, channel); :mod:`.ncp_config` has version negotiation, configuration,
values and policies, :mod:`.ncp_messaging` the messaging and table commands,
:mod:`.ncp_security` the keys and tokens, :mod:`.ncp_zdo` the coordinator's own ZDO.
Commands without a handler are answered with their response layout zero-filled and an
error status (``OK`` for harmless setters the emulator does not model).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
from collections.abc import Callable
from typing import Any, Protocol

from gatewayd.simulator.ncp import ncp_config, ncp_messaging, ncp_security
from gatewayd.simulator.ncp import status as st
from gatewayd.simulator.ncp.ezsp_commands import (
    COUNTER_TYPE_COUNT,
    Command,
    by_name,
    lookup,
)
from gatewayd.simulator.ncp.ezsp_types import (
    FC_ASYNC_CALLBACK,
    FC_RESPONSE,
    DecodeError,
    Header,
    decode_header,
)
from gatewayd.simulator.ncp.handlers import HANDLERS, handler
from gatewayd.simulator.ncp.ncp_config import ACCEPTED, CONFIG_DEFAULTS
from gatewayd.simulator.ncp.state import FRAME_COUNTER_STEP, Network, Nvram, Store

log = logging.getLogger(__name__)

SAVE_DELAY = 1.0  # seconds: attribute changes and frame counters coalesce into one write
DELIVERY_FAILURE_DELAY = 3.0


class Air(Protocol):
    """What the NCP needs from the simulated air (:class:`.air.Air`)."""

    def network_changed(self) -> None: ...
    def permit_changed(self) -> None: ...
    def deliver(self, nwk: int, aps: dict[str, Any], payload: bytes) -> bool | None: ...
    def eui64_of(self, nwk: int) -> bytes | None: ...
    def nwk_of(self, eui64: bytes) -> int | None: ...
    def remove(self, eui64: bytes) -> bool: ...
    def forget_all(self, network: str | None = None) -> None: ...
    def back_on(self, network: str) -> None: ...
    def to_json(self) -> list[dict[str, Any]]: ...


def _report_failed_save(writing: asyncio.Future[None]) -> None:
    if not writing.cancelled() and writing.exception() is not None:
        log.error("ncp: cannot save the emulator's state: %s", writing.exception())


class Ncp:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.nvram: Nvram = store.load()
        if self.nvram.network is not None:
            # What was written last may be up to one step behind what was used.
            self.nvram.nwk_frame_counter += FRAME_COUNTER_STEP
            self.nvram.aps_frame_counter += FRAME_COUNTER_STEP
        self.air: Air | None = None
        self.sink: Callable[[bytes], None] | None = None
        self.on_reset_request: Callable[[], None] | None = None
        self.commands: collections.Counter[str] = collections.Counter()
        # Seconds until a unicast nobody acknowledges is reported failed: an EmberZNet stick
        # gives up after its MAC and APS retries, which take seconds, so a host's own
        # command timeout (gatewayd's zigbee.command_timeout) usually answers first.
        self.delivery_failure_delay = DELIVERY_FAILURE_DELAY
        self._outbox: list[bytes] | None = None
        self._seq = 0
        self._aps_seq = random.randrange(256)  # noqa: S311 - not security relevant
        self._save_handle: asyncio.TimerHandle | None = None
        self._permit_handle: asyncio.TimerHandle | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self.reset()

    # -- life cycle -------------------------------------------------------------------------
    def reset(self) -> None:
        """The chip restarts: RAM is gone, NVM (:attr:`nvram`) stays."""
        self.version_set = False
        self.network_up = False
        self.permit_until = 0.0
        if self._permit_handle is not None:
            self._permit_handle.cancel()
            self._permit_handle = None
        for timer in self._timers:
            timer.cancel()  # what the stack had scheduled dies with its RAM
        self._timers.clear()
        self.config: dict[int, int] = dict(CONFIG_DEFAULTS)
        self.values: dict[int, bytes] = {}
        self.policies: dict[int, int] = {}
        self.endpoints: dict[int, dict[str, Any]] = {}
        self.ezsp_counters = [0] * COUNTER_TYPE_COUNT
        self.initial_security: dict[str, Any] | None = None
        self.pending: dict[str, Any] = {}  # network key etc. imported before forming
        self.multicast: dict[int, dict[str, Any]] = {}
        self.address_table: dict[int, tuple[bytes, int, bool]] = {}
        self.bindings: dict[int, dict[str, Any]] = {}
        self.extended_timeouts: set[bytes] = set()
        self.transient_keys: dict[bytes, bytes] = {}
        self.next_network_key: bytes | None = None
        self.radio_power = 8
        if self.air is not None:
            self.air.network_changed()

    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def later(self, delay: float, func: Callable[[], None]) -> None:
        """Run ``func`` after ``delay`` seconds unless the NCP resets first."""
        def run() -> None:
            self._timers.discard(handle)
            func()
        handle = self.loop().call_later(delay, run)
        self._timers.add(handle)

    def save(self) -> None:
        if self._save_handle is not None:
            self._save_handle.cancel()
            self._save_handle = None
        if self.air is not None:
            self.nvram.devices = self.air.to_json()
        self.store.save(self.nvram)

    def save_soon(self) -> None:
        if self._save_handle is None and self.store.path is not None:
            self._save_handle = self.loop().call_later(SAVE_DELAY, self._save_in_thread)

    def save_pending_now(self) -> None:
        """Start a save that is waiting for its delay now. A report stream calls this
        before it starts, so that the save the previous stream (or anything else) left
        does not stall the NCP's loop in the middle of it (bench/README.md, "The
        emulator's clock")."""
        if self._save_handle is not None:
            self._save_handle.cancel()
            self._save_in_thread()

    def _save_in_thread(self) -> None:
        self._save_handle = None
        if self.air is not None:
            self.nvram.devices = self.air.to_json()
        writing = self.loop().run_in_executor(None, self.store.write,
                                              *self.store.snapshot(self.nvram))
        writing.add_done_callback(_report_failed_save)

    # -- frames -----------------------------------------------------------------------------
    def handle(self, frame: bytes) -> list[bytes]:
        """One command frame in; its response and the callbacks it caused out."""
        try:
            header, params = decode_header(frame)
        except DecodeError as exc:
            log.warning("ncp: undecodable EZSP frame %s: %s", frame.hex(), exc)
            return []
        self._seq = header.seq
        self._outbox = []
        try:
            response = self._dispatch(header, params)
            return [response, *self._outbox]
        finally:
            self._outbox = None

    def _invalid(self, header: Header, reason: int) -> bytes:
        self.commands["invalidCommand"] += 1
        return self._frame(header.seq, FC_RESPONSE, by_name("invalidCommand"),
                           {"reason": reason}, legacy=header.legacy)

    def _dispatch(self, header: Header, params: bytes) -> bytes:
        command = lookup(header.frame_id)
        if header.is_response:
            return self._invalid(header, st.EZSP_ERROR_WRONG_DIRECTION)
        if command is None or command.callback:
            log.debug("ncp: unknown frame id 0x%04X", header.frame_id)
            return self._invalid(header, st.EZSP_ERROR_INVALID_FRAME_ID)
        if command.name != "version" and not self.version_set:
            return self._invalid(header, st.EZSP_ERROR_VERSION_NOT_SET)
        try:
            values = command.decode_params(params)
        except DecodeError as exc:
            log.warning("ncp: %s with bad parameters %s: %s", command.name, params.hex(), exc)
            return self._invalid(header, st.EZSP_ERROR_TRUNCATED)
        self.commands[command.name] += 1
        func = HANDLERS.get(command.name)
        if func is not None:
            answer = func(self, values)
        else:
            answer = command.response.zero()
            if "status" in answer:
                answer["status"] = st.OK if command.name in ACCEPTED else st.NOT_SUPPORTED
        return self._frame(header.seq, FC_RESPONSE, command, answer, legacy=header.legacy)

    def _frame(self, seq: int, fc: int, command: Command, values: dict[str, Any], *,
               legacy: bool = False) -> bytes:
        hdr = Header(seq=seq, frame_control=fc, frame_id=command.id, legacy=legacy)
        return hdr.encode() + command.encode_response(values)

    def emit(self, name: str, **values: Any) -> None:
        """Send a callback to the host: after the current response, or now."""
        command = by_name(name)
        # The sequence number of the last command: it is answered before this callback
        # leaves, so a host that matches replies by sequence number cannot mistake it.
        frame = self._frame(self._seq, FC_RESPONSE | FC_ASYNC_CALLBACK, command, values)
        self.commands[name] += 1
        if self._outbox is not None:
            self._outbox.append(frame)
        elif self.sink is not None:
            self.sink(frame)

    # -- helpers for the handler modules --------------------------------------------------
    def count(self, index: int) -> None:
        self.ezsp_counters[index] = min(0xFFFF, self.ezsp_counters[index] + 1)

    def next_aps_seq(self) -> int:
        self._aps_seq = (self._aps_seq + 1) & 0xFF
        return self._aps_seq

    def transmitted(self) -> None:
        """One frame left the radio: NWK and APS frame counters advance."""
        self.nvram.nwk_frame_counter += 1
        if self.nvram.nwk_frame_counter % FRAME_COUNTER_STEP == 0:
            self.save_soon()

    @property
    def permit_open(self) -> bool:
        return self.network_up and self.loop().time() < self.permit_until

    def policy(self, policy_id: int) -> int | None:
        return self.policies.get(policy_id)

    def stack_status(self, status: int) -> None:
        self.emit("stackStatusHandler", status=status)


# -- network life cycle ----------------------------------------------------------------------
@handler("networkState")
def _network_state(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    return {"status": st.JOINED_NETWORK if ncp.network_up else st.NO_NETWORK}


def network_up(ncp: Ncp) -> None:
    ncp.network_up = True
    ncp.stack_status(st.NETWORK_UP)
    if ncp.air is not None:
        ncp.air.network_changed()


@handler("networkInit")
def _network_init(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    if ncp.network_up:
        return {"status": st.INVALID_STATE}
    if ncp.nvram.network is None:
        return {"status": st.NOT_JOINED}
    network_up(ncp)
    return {"status": st.OK}


@handler("formNetwork")
def _form_network(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    if ncp.network_up:
        return {"status": st.INVALID_STATE}
    security = ncp.initial_security
    if security is None:
        return {"status": st.INVALID_STATE}  # setInitialSecurityState comes first
    params = p["parameters"]
    old = ncp.nvram.network
    if old is not None and old.extended_pan_id != bytes(params["extendedPanId"]).hex():
        ncp.nvram.children.clear()
        if ncp.air is not None:
            ncp.air.forget_all(old.extended_pan_id)  # the devices stay behind on it
    ncp.nvram.network = Network(
        pan_id=params["panId"], extended_pan_id=bytes(params["extendedPanId"]).hex(),
        channel=params["radioChannel"], tx_power=params["radioTxPower"],
        nwk_manager_id=params["nwkManagerId"], nwk_update_id=params["nwkUpdateId"],
        channels=params["channels"] or 1 << params["radioChannel"],
        network_key=_network_key(ncp, bytes(security["networkKey"])).hex(),
        network_key_seq=security["networkKeySequenceNumber"],
        tc_link_key=bytes(security["preconfiguredKey"]).hex(),
        security_bitmask=security["bitmask"],
        tc_eui64=bytes(security["preconfiguredTrustCenterEui64"]).hex())
    ncp.nvram.node_id = 0x0000
    ncp.radio_power = params["radioTxPower"]
    if ncp.air is not None:  # a network formed again (restored): its devices are there
        ncp.air.back_on(bytes(params["extendedPanId"]).hex())
    ncp.save()
    network_up(ncp)
    return {"status": st.OK}


def _network_key(ncp: Ncp, initial: bytes) -> bytes:
    """The key of setInitialSecurityState, else one importKey gave, else a random one."""
    if initial != bytes(16):
        return initial
    pending = ncp.pending.get("network_key")
    return pending if isinstance(pending, bytes) else os.urandom(16)


def forget_network(ncp: Ncp, *, keep_frame_counters: bool = True) -> None:
    """Erase the network from NVM: a leave, or a token factory reset."""
    left = ncp.nvram.network
    ncp.nvram.network = None
    ncp.nvram.node_id = 0xFFFE
    ncp.nvram.children.clear()
    if not keep_frame_counters:
        ncp.nvram.nwk_frame_counter = ncp.nvram.aps_frame_counter = 0
    if ncp.air is not None:
        ncp.air.forget_all(left.extended_pan_id if left is not None else None)
    ncp.save()


@handler("leaveNetwork")
def _leave_network(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    if not ncp.network_up:
        return {"status": st.INVALID_STATE}
    ncp.network_up = False
    ncp.permit_until = 0.0
    forget_network(ncp)
    ncp.stack_status(st.NETWORK_DOWN)
    return {"status": st.OK}


@handler("tokenFactoryReset")
def _token_factory_reset(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    ncp.network_up = False
    ncp.nvram.key_table.clear()
    ncp.nvram.tokens.clear()
    forget_network(ncp, keep_frame_counters=bool(p["excludeOutgoingFC"]))
    return {}


@handler("getNetworkParameters")
def _get_network_parameters(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    net = ncp.nvram.network
    if net is None or not ncp.network_up:
        answer = by_name("getNetworkParameters").response.zero()
        answer["status"] = st.NOT_JOINED
        return answer
    return {"status": st.OK, "nodeType": st.COORDINATOR, "parameters": {
        "extendedPanId": bytes.fromhex(net.extended_pan_id), "panId": net.pan_id,
        "radioTxPower": ncp.radio_power, "radioChannel": net.channel, "joinMethod": 0,
        "nwkManagerId": net.nwk_manager_id, "nwkUpdateId": net.nwk_update_id,
        "channels": net.channels}}


@handler("getRadioParameters")
def _get_radio_parameters(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    net = ncp.nvram.network
    if p["phyIndex"] != 0 or net is None:
        return {"status": st.INVALID_PARAMETER, "parameters": {
            "radioTxPower": 0, "radioPage": 0, "radioChannel": 0}}
    return {"status": st.OK, "parameters": {"radioTxPower": ncp.radio_power, "radioPage": 0,
                                            "radioChannel": net.channel}}


@handler("setRadioPower")
def _set_radio_power(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    ncp.radio_power = p["power"]
    return {"status": st.OK}


def _set_channel(ncp: Ncp, channel: int) -> dict[str, Any]:
    net = ncp.nvram.network
    if not 11 <= channel <= 26:
        return {"status": st.INVALID_PARAMETER}
    if net is None or not ncp.network_up:
        return {"status": st.NETWORK_DOWN}
    # The devices follow the coordinator to the new channel, as after a channel change.
    net.channel = channel
    net.nwk_update_id = (net.nwk_update_id + 1) & 0xFF
    ncp.save()
    return {"status": st.OK}


@handler("setLogicalAndRadioChannel")
def _set_logical_and_radio_channel(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    return _set_channel(ncp, p["radioChannel"])


@handler("setRadioChannel")
def _set_radio_channel(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    return _set_channel(ncp, p["channel"])


@handler("getRadioChannel")
def _get_radio_channel(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    net = ncp.nvram.network
    return {"channel": net.channel if net is not None else 0}


@handler("permitJoining")
def _permit_joining(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    if not ncp.network_up:
        return {"status": st.NETWORK_DOWN}
    duration = p["duration"]
    loop = ncp.loop()
    ncp.permit_until = float("inf") if duration == 0xFF else loop.time() + duration
    if ncp._permit_handle is not None:
        ncp._permit_handle.cancel()
        ncp._permit_handle = None
    if duration not in (0, 0xFF) and ncp.air is not None:
        ncp._permit_handle = loop.call_later(duration, ncp.air.permit_changed)
    if ncp.air is not None:
        ncp.air.permit_changed()
    return {"status": st.OK}


@handler("getExtendedPanId")
def _get_extended_pan_id(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    net = ncp.nvram.network
    return {"extendedPanId": bytes.fromhex(net.extended_pan_id) if net else bytes(8)}


@handler("setNwkUpdateId")
def _set_nwk_update_id(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    net = ncp.nvram.network
    if net is None or (ncp.network_up and not p["setWhenOnNetwork"]):
        return {"status": st.INVALID_STATE}
    net.nwk_update_id = p["nwkUpdateId"]
    ncp.save()
    return {"status": st.OK}


@handler("getPermitJoining")
def _get_permit_joining(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    return {"permitJoining": ncp.permit_open}


@handler("startScan")
def _start_scan(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    channels = [c for c in range(11, 27) if p["channelMask"] & (1 << c)]
    if not channels or p["scanType"] not in (0, 1):
        return {"status": st.INVALID_PARAMETER}
    if p["scanType"] == 0:  # energy: a quiet band with one busy Wi-Fi channel
        for channel in channels:
            rssi = -60 if channel in (17, 18, 19) else -90 + random.randrange(8)  # noqa: S311
            ncp.emit("energyScanResultHandler", channel=channel, maxRssiValue=rssi)
    ncp.emit("scanCompleteHandler", channel=0xFF, status=st.OK)
    return {"status": st.OK}


@handler("stopScan")
def _stop_scan(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    return {"status": st.OK}


# The other handler modules register themselves on import.
REGISTERED = (ncp_config.__name__, ncp_messaging.__name__, ncp_security.__name__)
