"""bellows' side of the report fast path: ``incomingMessageHandler`` frames, unparsed.

After :mod:`gatewayd.zigbee.fastpath` took zigpy's work off the hot frame, the profile
(bench/README.md) showed bellows' own decoding as the next cost: every EZSP frame is
turned into a dict of typed fields (``deserialize_dict``: an ``EmberApsFrame`` Struct,
``uint8_t``/``NWK``/``EUI64`` objects) and then into zigpy's ``ZigbeePacket`` with two
``AddrModeAddress`` objects, for a frame whose useful part is a dozen bytes.

:class:`FastFrames` sits in front of ``EZSP.frame_received``. For a unicast
``incomingMessageHandler`` it reads the fields it needs with one ``struct`` call and asks
:meth:`FastReports.take_frame` whether this is an attribute report it reproduces; if so,
that does what zigpy would and this counts the frame as bellows' ``_handle_frame`` does.
Anything else, or any doubt, and bellows gets the frame untouched: responses to a
command bellows is waiting for (same sequence number), other frames, broadcasts,
multicasts, APS fragments, frames with bytes left over, a protocol version whose layout
is not one of the two checked here, extra EZSP callbacks registered (a scan), a bellows
class that overrides the methods reproduced, and bellows debug logging on (its frame
log stays complete). tests/test_zigbee_ezsp_fast.py feeds the same EZSP frames to both
paths and compares what each leaves behind.

Like the zigpy fast path this relies on bellows internals, so it installs only on the
bellows version it was written against (:mod:`~gatewayd.zigbee.pinned`). What upstream
could take instead: a ``deserialize_dict`` for fixed-layout callbacks that does not
build a typed object per field, and ``ZigbeePacket`` construction without the two
address dataclasses.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

import bellows.ezsp
import bellows.ezsp.protocol
import bellows.ezsp.v8
import bellows.types as bt
import bellows.zigbee.application as bellows_app
import zigpy.types as t

from gatewayd.zigbee.ash_fast import FastAsh
from gatewayd.zigbee.fastpath import FastReports, plain
from gatewayd.zigbee.pinned import written_for
from gatewayd.zigbee.serial_reads import small_reads

log = logging.getLogger(__name__)

INCOMING_MESSAGE_HANDLER = 0x0045
INCOMING_UNICAST = int(bt.EmberIncomingMessageType.INCOMING_UNICAST)
APS_OPTION_ENCRYPTION = int(bt.EmberApsOption.APS_OPTION_ENCRYPTION)
APS_OPTION_FRAGMENT = int(bt.EmberApsOption.APS_OPTION_FRAGMENT)
HEADER = 5  # sequence, frame control (2), frame id (2): EZSP v8 and later

# bellows' two schemas for the callback.
SCHEMA_V4 = (("type", bt.EmberIncomingMessageType), ("apsFrame", bt.EmberApsFrame),
             ("lastHopLqi", bt.uint8_t), ("lastHopRssi", bt.int8s),
             ("sender", bt.EmberNodeId), ("bindingIndex", bt.uint8_t),
             ("addressIndex", bt.uint8_t), ("messageContents", bt.LVBytes))
SCHEMA_V14 = (("message_type", bt.EmberIncomingMessageType),
              ("aps_frame", bt.EmberApsFrame), ("nwk", bt.NWK), ("eui64", bt.EUI64),
              ("binding_index", bt.uint8_t), ("address_index", bt.uint8_t),
              ("lqi", bt.uint8_t), ("rssi", bt.int8s), ("timestamp", bt.uint32_t),
              ("message", bt.LVBytes))
# type; APS frame (profile, cluster, source and destination endpoint, options, group,
# sequence); then each version's own order; the message's length byte last.
_V4 = struct.Struct("<BHHBBHHBBbHBBB")
_V14 = struct.Struct("<BHHBBHHBH8xBBBbIB")


class Incoming(NamedTuple):
    """What the bridge's fast path needs of an ``incomingMessageHandler``."""

    message_type: int
    profile_id: int
    cluster_id: int
    src_ep: int
    dst_ep: int
    options: int
    nwk: int
    lqi: int
    rssi: int
    message: bytes


def decode_v4(frame: bytes) -> Incoming | None:
    """The callback's fields in the EZSP v4-v13 layout (after the 5-byte header); None
    if the frame is not exactly that long."""
    if len(frame) < HEADER + _V4.size:
        return None
    (kind, profile, cluster, src_ep, dst_ep, options, _group, _seq, lqi, rssi, nwk,
     _binding, _address, length) = _V4.unpack_from(frame, HEADER)
    start = HEADER + _V4.size
    if len(frame) != start + length:
        return None
    return Incoming(kind, profile, cluster, src_ep, dst_ep, options, nwk, lqi, rssi,
                    frame[start:])


def decode_v14(frame: bytes) -> Incoming | None:
    """The same for EZSP v14 and later (sender's EUI64 and a timestamp added)."""
    if len(frame) < HEADER + _V14.size:
        return None
    (kind, profile, cluster, src_ep, dst_ep, options, _group, _seq, nwk, _binding,
     _address, lqi, rssi, _timestamp, length) = _V14.unpack_from(frame, HEADER)
    start = HEADER + _V14.size
    if len(frame) != start + length:
        return None
    return Incoming(kind, profile, cluster, src_ep, dst_ep, options, nwk, lqi, rssi,
                    frame[start:])


def decoder_for(protocol: Any) -> Callable[[bytes], Incoming | None] | None:
    """The decoder whose layout is exactly this protocol's, or None (bellows decides)."""
    if type(protocol)._ezsp_frame_rx is not bellows.ezsp.v8.EZSPv8._ezsp_frame_rx:
        return None  # another frame header (EZSP v4-v7)
    if type(protocol).__call__ is not bellows.ezsp.protocol.ProtocolHandler.__call__:
        return None
    entry = protocol.COMMANDS.get("incomingMessageHandler")
    if entry is None or entry[0] != INCOMING_MESSAGE_HANDLER or \
            not isinstance(entry[2], dict):
        return None
    schema = tuple(entry[2].items())
    return {SCHEMA_V4: decode_v4, SCHEMA_V14: decode_v14}.get(schema)


_APP_METHODS = ("ezsp_callback_handler", "_handle_frame", "packet_received")
_EZSP_METHODS = ("frame_received", "handle_callback")


class FastFrames:
    """Installed on a bellows ``ControllerApplication`` by :meth:`install`; follows it
    to each new ``EZSP`` object its ``connect`` makes (a reconnect makes one)."""

    def __init__(self, app: Any, reports: FastReports) -> None:
        self.app = app
        self.reports = reports
        self.taken = 0
        self._ezsp: Any = None
        self._bellows_frame_received: Callable[[bytes], None] | None = None
        self.ash: FastAsh | None = None  # bellows' ASH reading, sped up (ash_fast.py)
        self._protocol: Any = None
        self._decode: Callable[[bytes], Incoming | None] | None = None
        self._dst: Any = None
        # bellows logs every frame at debug level; with that on, it sees them all.
        self._bellows_logs = (logging.getLogger(bellows.ezsp.protocol.__name__),
                              logging.getLogger(bellows_app.__name__))

    @classmethod
    def install(cls, app: Any, reports: FastReports | None) -> FastFrames | None:
        if reports is None or not isinstance(app, bellows_app.ControllerApplication):
            return None
        if not written_for("bellows", "EZSP frame fast path"):
            return None
        if not plain(type(app), bellows_app.ControllerApplication, _APP_METHODS):
            return None
        fast = cls(app, reports)
        connect = app.connect

        async def connect_and_follow() -> None:
            await connect()
            fast.attach()

        app.connect = connect_and_follow
        fast.attach()
        return fast

    def attach(self) -> None:
        """Sit in front of the application's current EZSP object."""
        ezsp = self.app._ezsp
        if ezsp is None or ezsp is self._ezsp or \
                not plain(type(ezsp), bellows.ezsp.EZSP, _EZSP_METHODS):
            return
        self._ezsp = ezsp
        self._bellows_frame_received = ezsp.frame_received
        self._protocol = None
        ezsp.frame_received = self.frame_received
        # the serial line below it: EZSP -> (thread-safe proxy) -> Gateway -> ASH
        gateway = getattr(ezsp._gw, "_obj", ezsp._gw)
        ash_protocol = getattr(gateway, "_transport", None)
        self.ash = FastAsh.install(ash_protocol)
        small_reads(getattr(ash_protocol, "_transport", None))

    def frame_received(self, frame: bytes) -> None:
        if not self.take(frame):
            assert self._bellows_frame_received is not None
            self._bellows_frame_received(frame)

    def take(self, frame: bytes) -> bool:
        """Handle ``frame`` as bellows and zigpy would and return True, or change
        nothing and return False (bellows' turn)."""
        if len(frame) < HEADER or frame[3] != INCOMING_MESSAGE_HANDLER or frame[4]:
            return False
        ezsp = self._ezsp
        protocol = ezsp._protocol
        if protocol is not self._protocol:
            self._protocol = protocol
            self._decode = decoder_for(protocol) if protocol is not None else None
        decode = self._decode
        if decode is None or frame[0] in protocol._awaiting:
            return False
        if not self._only_bellows_callbacks(ezsp) or any(
                logger.isEnabledFor(logging.DEBUG) for logger in self._bellows_logs):
            return False
        rx = decode(frame)
        if rx is None or rx.message_type != INCOMING_UNICAST or \
                rx.options & APS_OPTION_FRAGMENT:
            return False
        app = self.app
        node = app.state.node_info.nwk
        dst = self._dst
        if dst is None or dst.address != node:
            dst = self._dst = t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=node)
        tx_options = (t.TransmitOptions.APS_Encryption if rx.options & APS_OPTION_ENCRYPTION
                      else t.TransmitOptions.NONE)
        if not self.reports.take_frame(rx.nwk, rx.src_ep, rx.dst_ep, rx.profile_id,
                                       rx.cluster_id, rx.message, rx.lqi, rx.rssi, dst,
                                       tx_options):
            return False
        # bellows' _handle_frame counts each unicast it hands on.
        app.state.counters[bellows_app.COUNTERS_CTRL][
            bellows_app.COUNTER_RX_UNICAST].increment()
        self.taken += 1
        return True

    def _only_bellows_callbacks(self, ezsp: Any) -> bool:
        """True while the only EZSP callbacks are bellows' own two (a scan, for one,
        adds its own for the duration, and would not see the frame otherwise)."""
        callbacks = ezsp._callbacks
        if len(callbacks) != 2:
            return False
        for callback in callbacks.values():
            if callback != self.app.ezsp_callback_handler and \
                    callback != ezsp.stack_status_callback:
                return False
        return True
