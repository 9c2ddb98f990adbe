"""EZSP wire types: little-endian integers, EUI64s, keys, length-prefixed bytes, lists and
structs, each a small codec; plus the EZSP frame header.

Values are plain Python: ``int``, ``bool``, ``bytes``, lists, and ``dict`` for structs,
except that EUI64s and keys are zigpy's ``EUI64`` and ``KeyData`` so that they print the
way everyone writes them. Layouts follow Silicon Labs UG100 (EZSP reference, v14) and
``sl_zigbee_types.h``; :mod:`.ezsp_commands` composes them into commands.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import zigpy.types as t


class DecodeError(ValueError):
    """A frame is shorter than its layout, or otherwise not of it."""


class Codec(Protocol):
    def encode(self, value: Any) -> bytes: ...
    def decode(self, data: bytes, pos: int) -> tuple[Any, int]: ...
    def zero(self) -> Any: ...


@dataclasses.dataclass(frozen=True)
class UInt:
    size: int
    signed: bool = False

    def encode(self, value: Any) -> bytes:
        return int(value).to_bytes(self.size, "little", signed=self.signed)

    def decode(self, data: bytes, pos: int) -> tuple[int, int]:
        end = pos + self.size
        if end > len(data):
            raise DecodeError(f"needs {self.size} bytes at offset {pos}, has {len(data) - pos}")
        return int.from_bytes(data[pos:end], "little", signed=self.signed), end

    def zero(self) -> int:
        return 0


@dataclasses.dataclass(frozen=True)
class Bool:
    def encode(self, value: Any) -> bytes:
        return b"\x01" if value else b"\x00"

    def decode(self, data: bytes, pos: int) -> tuple[bool, int]:
        value, end = U8.decode(data, pos)
        return bool(value), end

    def zero(self) -> bool:
        return False


@dataclasses.dataclass(frozen=True)
class Fixed:
    """``size`` raw bytes (a certificate, a hash block...)."""

    size: int

    def encode(self, value: Any) -> bytes:
        raw = bytes(value)
        if len(raw) != self.size:
            raise ValueError(f"needs exactly {self.size} bytes, got {len(raw)}")
        return raw

    def decode(self, data: bytes, pos: int) -> tuple[bytes, int]:
        end = pos + self.size
        if end > len(data):
            raise DecodeError(f"needs {self.size} bytes at offset {pos}, has {len(data) - pos}")
        return bytes(data[pos:end]), end

    def zero(self) -> bytes:
        return bytes(self.size)


@dataclasses.dataclass(frozen=True)
class Eui64Type:
    def encode(self, value: Any) -> bytes:
        return bytes(t.EUI64(value).serialize())

    def decode(self, data: bytes, pos: int) -> tuple[t.EUI64, int]:
        raw, end = Fixed(8).decode(data, pos)
        return t.EUI64.deserialize(raw)[0], end

    def zero(self) -> t.EUI64:
        return t.EUI64(bytes(8))


@dataclasses.dataclass(frozen=True)
class KeyType:
    def encode(self, value: Any) -> bytes:
        return bytes(t.KeyData(value).serialize())

    def decode(self, data: bytes, pos: int) -> tuple[t.KeyData, int]:
        raw, end = Fixed(16).decode(data, pos)
        return t.KeyData.deserialize(raw)[0], end

    def zero(self) -> t.KeyData:
        return t.KeyData(bytes(16))


@dataclasses.dataclass(frozen=True)
class LV:
    """Bytes prefixed by their length (``prefix`` bytes, little-endian)."""

    prefix: int = 1

    def encode(self, value: Any) -> bytes:
        raw = bytes(value)
        return len(raw).to_bytes(self.prefix, "little") + raw

    def decode(self, data: bytes, pos: int) -> tuple[bytes, int]:
        length, pos = UInt(self.prefix).decode(data, pos)
        return Fixed(length).decode(data, pos)

    def zero(self) -> bytes:
        return b""


@dataclasses.dataclass(frozen=True)
class ListOf:
    """A list of ``item``: ``count`` items, the value of the earlier field named
    ``count`` (a string), a u8 length prefix (``count=None``), or, with ``count=-1``,
    every item until the end of the frame."""

    item: Codec
    count: int | str | None = None

    def encode(self, value: Any) -> bytes:
        items = list(value)
        head = bytes((len(items),)) if self.count is None else b""
        return head + b"".join(self.item.encode(v) for v in items)

    def decode(self, data: bytes, pos: int, count: int | None = None) -> tuple[list[Any], int]:
        if count is None:
            if self.count is None:
                count, pos = U8.decode(data, pos)
            elif isinstance(self.count, int) and self.count >= 0:
                count = self.count
        items: list[Any] = []
        while (count is None and pos < len(data)) or (count is not None and len(items) < count):
            value, pos = self.item.decode(data, pos)
            items.append(value)
        return items, pos

    def zero(self) -> list[Any]:
        if isinstance(self.count, int) and self.count > 0:
            return [self.item.zero()] * self.count
        return []


@dataclasses.dataclass(frozen=True)
class Struct:
    """Named fields in order; the value is a dict. Used for parameters and responses too."""

    name: str
    fields: tuple[tuple[str, Codec], ...]

    def encode(self, value: Any) -> bytes:
        out = bytearray()
        for name, codec in self.fields:
            if name not in value:
                raise ValueError(f"{self.name}: missing field {name!r}")
            out += codec.encode(value[name])
        return bytes(out)

    def decode(self, data: bytes, pos: int) -> tuple[dict[str, Any], int]:
        out: dict[str, Any] = {}
        for name, codec in self.fields:
            try:
                if isinstance(codec, ListOf) and isinstance(codec.count, str):
                    out[name], pos = codec.decode(data, pos, count=int(out[codec.count]))
                else:
                    out[name], pos = codec.decode(data, pos)
            except DecodeError as exc:
                raise DecodeError(f"{self.name}.{name}: {exc}") from None
        return out, pos

    def zero(self) -> dict[str, Any]:
        return {name: codec.zero() for name, codec in self.fields}

    def names(self) -> list[str]:
        return [name for name, _ in self.fields]


def struct(name: str, **fields: Codec) -> Struct:
    return Struct(name, tuple(fields.items()))


U8, U16, U32 = UInt(1), UInt(2), UInt(4)
I8 = UInt(1, signed=True)
BOOL = Bool()
EUI64 = Eui64Type()
KEY = KeyType()
LVBYTES = LV(1)
LVBYTES32 = LV(4)
STATUS = U32  # sl_status_t: 4 bytes from EZSP v14 on
NODE_ID = U16
PAN_ID = U16

# -- structs (sl_zigbee_types.h, as EZSP v14 serializes them) ----------------------------
APS_FRAME = struct("EmberApsFrame", profileId=U16, clusterId=U16, sourceEndpoint=U8,
                   destinationEndpoint=U8, options=U16, groupId=U16, sequence=U8)
NETWORK_PARAMETERS = struct(
    "EmberNetworkParameters", extendedPanId=Fixed(8), panId=U16, radioTxPower=I8,
    radioChannel=U8, joinMethod=U8, nwkManagerId=U16, nwkUpdateId=U8, channels=U32)
SEC_MAN_CONTEXT = struct(
    "SecManContext", coreKeyType=U8, keyIndex=U8, derivedType=U16, eui64=EUI64,
    multiNetworkIndex=U8, flags=U8, psaKeyAlgPermission=U32)
SEC_MAN_NETWORK_KEY_INFO = struct(
    "SecManNetworkKeyInfo", networkKeySet=BOOL, alternateNetworkKeySet=BOOL,
    networkKeySequenceNumber=U8, altNetworkKeySequenceNumber=U8, networkKeyFrameCounter=U32)
SEC_MAN_APS_KEY_METADATA = struct(
    "SecManAPSKeyMetadata", bitmask=U16, outgoingFrameCounter=U32, incomingFrameCounter=U32,
    ttlInSeconds=U16)
INITIAL_SECURITY_STATE = struct(
    "EmberInitialSecurityState", bitmask=U16, preconfiguredKey=KEY, networkKey=KEY,
    networkKeySequenceNumber=U8, preconfiguredTrustCenterEui64=EUI64)
CURRENT_SECURITY_STATE = struct("EmberCurrentSecurityState", bitmask=U16,
                                trustCenterLongAddress=EUI64)
CHILD_DATA = struct("EmberChildData", eui64=EUI64, type=U8, id=U16, phy=U8, power=U8,
                    timeout=U8, remainingTimeout=U32)
# No networkIndex: bellows writes and reads three bytes, herdsman reads a fourth only if sent.
MULTICAST_TABLE_ENTRY = struct("EmberMulticastTableEntry", multicastId=U16, endpoint=U8)
ZIGBEE_NETWORK = struct("EmberZigbeeNetwork", channel=U8, panId=U16, extendedPanId=Fixed(8),
                        allowingJoin=BOOL, stackProfile=U8, nwkUpdateId=U8)
BINDING_TABLE_ENTRY = struct("EmberBindingTableEntry", type=U8, local=U8, clusterId=U16,
                             remote=U8, identifier=EUI64, networkIndex=U8)
NEIGHBOR_TABLE_ENTRY = struct("EmberNeighborTableEntry", shortId=U16, averageLqi=U8,
                              inCost=U8, outCost=U8, age=U8, longId=EUI64)
ROUTE_TABLE_ENTRY = struct("EmberRouteTableEntry", destination=U16, nextHop=U16, status=U8,
                           age=U8, concentratorType=U8, routeRecordState=U8)
TOKEN_INFO = struct("EmberTokenInfo", nvm3Key=U32, isCnt=BOOL, isIdx=BOOL, size=U8,
                    arraySize=U8)
MULTI_PHY_RADIO_PARAMETERS = struct("EmberMultiPhyRadioParameters", radioTxPower=I8,
                                    radioPage=U8, radioChannel=U8)
BEACON_CLASSIFICATION_PARAMS = struct("EmberBeaconClassificationParams",
                                      minRssiForReceivingPkts=I8,
                                      beaconClassificationMask=U16)
AES_MMO_HASH_CONTEXT = struct("EmberAesMmoHashContext", result=Fixed(16), length=U32)


# -- the frame header ----------------------------------------------------------------------
FC_RESPONSE = 0x80  # frame control, low byte: direction bit
FC_ASYNC_CALLBACK = 0x10  # callback type "asynchronous" (bits 3-4 = 0b10)
FC_HIGH_V1 = 0x01  # frame control, high byte: frame format version 1


@dataclasses.dataclass(frozen=True)
class Header:
    """``legacy`` is the 3-byte header ``[seq, fc, id]`` EZSP uses for the first
    ``version`` command; otherwise ``[seq, fc_lo, fc_hi, id_lo, id_hi]`` (EZSP >= 8)."""

    seq: int
    frame_control: int
    frame_id: int
    legacy: bool = False
    frame_control_high: int = FC_HIGH_V1

    def encode(self) -> bytes:
        if self.legacy:
            return bytes((self.seq, self.frame_control, self.frame_id))
        return bytes((self.seq, self.frame_control, self.frame_control_high)) + \
            self.frame_id.to_bytes(2, "little")

    @property
    def is_response(self) -> bool:
        return bool(self.frame_control & FC_RESPONSE)

    @property
    def is_callback(self) -> bool:
        return self.is_response and bool(self.frame_control & 0x18)


def decode_header(frame: bytes) -> tuple[Header, bytes]:
    """Split an EZSP frame into its header and parameters.

    A third byte of 0x01 (frame format version 1) means the extended header; anything else
    is the legacy header, which only ``version`` (id 0) may use once EZSP >= 8 runs.
    """
    if len(frame) < 3:
        raise DecodeError(f"an EZSP frame has at least 3 bytes, got {len(frame)}")
    if frame[2] & 0x03 == FC_HIGH_V1 and len(frame) >= 5:
        return Header(seq=frame[0], frame_control=frame[1], frame_control_high=frame[2],
                      frame_id=int.from_bytes(frame[3:5], "little")), frame[5:]
    return Header(seq=frame[0], frame_control=frame[1], frame_id=frame[2], legacy=True,
                  frame_control_high=0), frame[3:]
