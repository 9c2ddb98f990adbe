"""The EZSP v14 command table: frame id -> name, parameter layout, response layout.

Written from Silicon Labs UG100 (EZSP reference guide for EmberZNet 8.x, EZSP v14) with
zigbee-herdsman's ember adapter read as a second opinion, and checked against bellows by
``tests/test_ncp_ezsp.py``. Where the two hosts disagree the NCP answers the way that
satisfies both (noted at the command).

Every command here gets a well-formed answer from :mod:`.ncp`: a real handler, or the
response layout filled with zeros and an error status. Callbacks (``callback=True``)
are frames the NCP sends on its own; their "response" is the callback's layout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from gatewayd.simulator.ncp.ezsp_types import (
    AES_MMO_HASH_CONTEXT,
    APS_FRAME,
    BEACON_CLASSIFICATION_PARAMS,
    BINDING_TABLE_ENTRY,
    BOOL,
    CHILD_DATA,
    CURRENT_SECURITY_STATE,
    EUI64,
    I8,
    INITIAL_SECURITY_STATE,
    KEY,
    LVBYTES,
    LVBYTES32,
    MULTI_PHY_RADIO_PARAMETERS,
    MULTICAST_TABLE_ENTRY,
    NEIGHBOR_TABLE_ENTRY,
    NETWORK_PARAMETERS,
    NODE_ID,
    PAN_ID,
    ROUTE_TABLE_ENTRY,
    SEC_MAN_APS_KEY_METADATA,
    SEC_MAN_CONTEXT,
    SEC_MAN_NETWORK_KEY_INFO,
    STATUS,
    TOKEN_INFO,
    U8,
    U16,
    U32,
    ZIGBEE_NETWORK,
    Codec,
    DecodeError,
    Fixed,
    ListOf,
    Struct,
)

PROTOCOL_VERSION = 14
COUNTER_TYPE_COUNT = 42  # EMBER_COUNTER_TYPE_COUNT in EmberZNet 8.0


@dataclasses.dataclass(frozen=True)
class Optional:
    """A trailing field that one host sends and another does not (``None`` if absent)."""

    item: Codec

    def encode(self, value: Any) -> bytes:
        return b"" if value is None else self.item.encode(value)

    def decode(self, data: bytes, pos: int) -> tuple[Any, int]:
        if pos >= len(data):
            return None, pos
        return self.item.decode(data, pos)

    def zero(self) -> Any:
        return None


@dataclasses.dataclass(frozen=True)
class Command:
    id: int
    name: str
    params: Struct
    response: Struct
    callback: bool = False

    def decode_params(self, data: bytes) -> dict[str, Any]:
        values, end = self.params.decode(data, 0)
        del end  # trailing bytes are ignored, as the NCP firmware does
        return values

    def encode_response(self, values: dict[str, Any]) -> bytes:
        return self.response.encode(values)


def _s(name: str, **fields: Codec) -> Struct:
    return Struct(name, tuple(fields.items()))


COMMANDS: dict[int, Command] = {}
BY_NAME: dict[str, Command] = {}


def _cmd(frame_id: int, name: str, params: Mapping[str, Codec] | None = None,
         response: Mapping[str, Codec] | None = None, *, callback: bool = False) -> None:
    if frame_id in COMMANDS or name in BY_NAME:
        raise ValueError(f"duplicate EZSP command 0x{frame_id:04X} {name}")
    command = Command(frame_id, name, _s(name, **(params or {})),
                      _s(name + "Response", **(response or {})), callback)
    COMMANDS[frame_id] = command
    BY_NAME[name] = command


def _cb(frame_id: int, name: str, fields: Mapping[str, Codec]) -> None:
    _cmd(frame_id, name, None, fields, callback=True)


ST = {"status": STATUS}  # the most common response: one sl_status_t
NONE: dict[str, Codec] = {}

# -- configuration frames -----------------------------------------------------------------
_cmd(0x0000, "version", {"desiredProtocolVersion": U8},
     {"protocolVersion": U8, "stackType": U8, "stackVersion": U16})
_cmd(0x0052, "getConfigurationValue", {"configId": U8}, {"status": STATUS, "value": U16})
_cmd(0x0053, "setConfigurationValue", {"configId": U8, "value": U16}, ST)
_cmd(0x0108, "readAttribute", {"endpoint": U8, "cluster": U16, "attributeId": U16,
                               "mask": U8, "manufacturerCode": U16},
     {"status": U8, "dataType": U8, "data": LVBYTES})  # EmberStatus, not sl_status
_cmd(0x0109, "writeAttribute", {"endpoint": U8, "cluster": U16, "attributeId": U16,
                                "mask": U8, "manufacturerCode": U16,
                                "overrideReadOnlyAndDataType": BOOL, "justTest": BOOL,
                                "dataType": U8, "data": LVBYTES}, {"status": U8})
_cmd(0x0002, "addEndpoint", {"endpoint": U8, "profileId": U16, "deviceId": U16,
                             "deviceVersion": U8, "inputClusterCount": U8,
                             "outputClusterCount": U8,
                             "inputClusterList": ListOf(U16, "inputClusterCount"),
                             "outputClusterList": ListOf(U16, "outputClusterCount")}, ST)
_cmd(0x0055, "setPolicy", {"policyId": U8, "decisionId": U8}, ST)
_cmd(0x0056, "getPolicy", {"policyId": U8}, {"status": STATUS, "decisionId": U8})
_cmd(0x0057, "sendPanIdUpdate", {"newPan": PAN_ID}, {"status": BOOL})
_cmd(0x00AA, "getValue", {"valueId": U8}, {"status": STATUS, "value": LVBYTES})
_cmd(0x0003, "getExtendedValue", {"valueId": U8, "characteristics": U32},
     {"status": STATUS, "value": LVBYTES})
_cmd(0x00AB, "setValue", {"valueId": U8, "value": LVBYTES}, ST)
_cmd(0x0105, "setPassiveAckConfig", {"config": U8, "minAcksNeeded": U8}, ST)

# -- utilities ----------------------------------------------------------------------------
_cmd(0x0005, "nop")
_cmd(0x0081, "echo", {"data": LVBYTES}, {"echo": LVBYTES})
_cb(0x0058, "invalidCommand", {"reason": STATUS})
_cmd(0x0006, "callback")
_cb(0x0007, "noCallbacks", NONE)
_cmd(0x0009, "setToken", {"tokenId": U8, "tokenData": Fixed(8)}, ST)
_cmd(0x000A, "getToken", {"tokenId": U8}, {"status": STATUS, "tokenData": Fixed(8)})
_cmd(0x000B, "getMfgToken", {"tokenId": U8}, {"tokenData": LVBYTES})
_cmd(0x000C, "setMfgToken", {"tokenId": U8, "tokenData": LVBYTES}, ST)
_cb(0x000D, "stackTokenChangedHandler", {"tokenAddress": U16})
_cmd(0x0049, "getRandomNumber", None, {"status": STATUS, "value": U16})
_cmd(0x000E, "setTimer", {"timerId": U8, "time": U16, "units": U8, "repeat": BOOL}, ST)
_cmd(0x004E, "getTimer", {"timerId": U8}, {"time": U16, "units": U8, "repeat": BOOL})
_cb(0x000F, "timerHandler", {"timerId": U8})
_cmd(0x0012, "debugWrite", {"binaryMessage": BOOL, "messageContents": LVBYTES}, ST)
_cmd(0x0065, "readAndClearCounters", None, {"values": ListOf(U16, COUNTER_TYPE_COUNT)})
_cmd(0x00F1, "readCounters", None, {"values": ListOf(U16, COUNTER_TYPE_COUNT)})
_cb(0x00F2, "counterRolloverHandler", {"type": U8})
_cmd(0x009D, "delayTest", {"delay": U16})
_cmd(0x0001, "getLibraryStatus", {"libraryId": U8}, {"status": U8})
_cmd(0x0013, "getXncpInfo", None,
     {"status": STATUS, "manufacturerId": U16, "versionNumber": U16})
_cmd(0x0047, "customFrame", {"payload": LVBYTES}, {"status": STATUS, "reply": LVBYTES})
_cb(0x0054, "customFrameHandler", {"payload": LVBYTES})
_cmd(0x0026, "getEui64", None, {"eui64": EUI64})
_cmd(0x0027, "getNodeId", None, {"nodeId": NODE_ID})
_cmd(0x00FC, "getPhyInterfaceCount", None, {"interfaceCount": U8})
_cmd(0x004F, "getTrueRandomEntropySource", None, {"entropySource": U8})
# herdsman reads no response for setManufacturerCode, bellows reads an sl_status: the
# status is sent, and a host that does not want it ignores the trailing bytes.
_cmd(0x0015, "setManufacturerCode", {"code": U16}, ST)
_cmd(0x00CA, "getManufacturerCode", None, {"code": U16})
_cmd(0x0016, "setPowerDescriptor", {"descriptor": U16}, ST)

# -- networking ---------------------------------------------------------------------------
_cmd(0x0017, "networkInit", {"bitmask": U16}, ST)
_cmd(0x0018, "networkState", None, {"status": U8})  # EmberNetworkStatus
_cb(0x0019, "stackStatusHandler", ST)
_cmd(0x001A, "startScan", {"scanType": U8, "channelMask": U32, "duration": U8}, ST)
_cb(0x0048, "energyScanResultHandler", {"channel": U8, "maxRssiValue": I8})
_cb(0x001B, "networkFoundHandler",
    {"networkFound": ZIGBEE_NETWORK, "lastHopLqi": U8, "lastHopRssi": I8})
_cb(0x001C, "scanCompleteHandler", {"channel": U8, "status": STATUS})
_cb(0x00D2, "unusedPanIdFoundHandler", {"panId": PAN_ID, "channel": U8})
_cmd(0x00D3, "findUnusedPanId", {"channelMask": U32, "duration": U8}, ST)
_cmd(0x001D, "stopScan", None, ST)
_cmd(0x001E, "formNetwork", {"parameters": NETWORK_PARAMETERS}, ST)
_cmd(0x001F, "joinNetwork", {"nodeType": U8, "parameters": NETWORK_PARAMETERS}, ST)
_cmd(0x0020, "leaveNetwork", {"options": Optional(U8)}, ST)
_cmd(0x0021, "findAndRejoinNetwork", {"haveCurrentNetworkKey": BOOL, "channelMask": U32,
                                      "reason": U8, "nodeType": U8}, ST)
_cmd(0x0022, "permitJoining", {"duration": U8}, ST)
_cb(0x0023, "childJoinHandler", {"index": U8, "joining": BOOL, "childId": NODE_ID,
                                 "childEui64": EUI64, "childType": U8})
_cmd(0x009C, "energyScanRequest", {"target": NODE_ID, "scanChannels": U32,
                                   "scanDuration": U8, "scanCount": U16}, ST)
_cmd(0x0028, "getNetworkParameters", None,
     {"status": STATUS, "nodeType": U8, "parameters": NETWORK_PARAMETERS})
_cmd(0x00FD, "getRadioParameters", {"phyIndex": U8},
     {"status": STATUS, "parameters": MULTI_PHY_RADIO_PARAMETERS})
_cmd(0x0029, "getParentChildParameters", None,
     {"childCount": U8, "parentEui64": EUI64, "parentNodeId": NODE_ID})
_cmd(0x004A, "getChildData", {"index": U8}, {"status": STATUS, "childData": CHILD_DATA})
_cmd(0x00AC, "setChildData", {"index": U8, "childData": CHILD_DATA}, ST)
_cmd(0x0106, "childId", {"childIndex": U8}, {"childId": NODE_ID})
_cmd(0x0107, "childIndex", {"childId": NODE_ID}, {"childIndex": U8})
_cmd(0x00C3, "getSourceRouteTableTotalSize", None, {"sourceRouteTableTotalSize": U8})
_cmd(0x00C2, "getSourceRouteTableFilledSize", None, {"sourceRouteTableFilledSize": U8})
_cmd(0x00C1, "getSourceRouteTableEntry", {"index": U8},
     {"status": STATUS, "destination": NODE_ID, "closerIndex": U8})
_cmd(0x0079, "getNeighbor", {"index": U8}, {"status": STATUS, "value": NEIGHBOR_TABLE_ENTRY})
_cmd(0x003E, "getNeighborFrameCounter", {"eui64": EUI64},
     {"status": STATUS, "frameCounter": U32})
_cmd(0x00AD, "setNeighborFrameCounter", {"eui64": EUI64, "frameCounter": U32}, ST)
_cmd(0x00D0, "setRoutingShortcutThreshold", {"costThresh": U8}, ST)
_cmd(0x00D1, "getRoutingShortcutThreshold", None, {"routingShortcutThresh": U8})
_cmd(0x007A, "neighborCount", None, {"value": U8})
_cmd(0x007B, "getRouteTableEntry", {"index": U8},
     {"status": STATUS, "value": ROUTE_TABLE_ENTRY})
_cmd(0x0099, "setRadioPower", {"power": I8}, ST)
_cmd(0x009A, "setRadioChannel", {"channel": U8}, ST)
_cmd(0x00FF, "getRadioChannel", None, {"channel": U8})
_cmd(0x0095, "setRadioIeee802154CcaMode", {"ccaMode": U8}, ST)
_cmd(0x0010, "setConcentrator", {"on": BOOL, "concentratorType": U16, "minTime": U16,
                                 "maxTime": U16, "routeErrorThreshold": U8,
                                 "deliveryFailureThreshold": U8, "maxHops": U8}, ST)
_cmd(0x0011, "setBrokenRouteErrorCode", {"errorCode": U8}, ST)
_cmd(0x00F7, "sendLinkPowerDeltaRequest", None, ST)
_cmd(0x00B9, "setLogicalAndRadioChannel", {"radioChannel": U8}, ST)
_cmd(0x011F, "getPermitJoining", None, {"permitJoining": BOOL})
_cmd(0x0127, "getExtendedPanId", None, {"extendedPanId": Fixed(8)})
_cmd(0x003C, "clearStoredBeacons", None, ST)
_cmd(0x0008, "getNumStoredBeacons", None, {"numStoredBeacons": U8})
_cmd(0x0037, "setNumBeaconsToStore", {"numBeacons": U8}, ST)
_cmd(0x00EF, "setBeaconClassificationParams", {"param": BEACON_CLASSIFICATION_PARAMS}, ST)
_cmd(0x00F3, "getBeaconClassificationParams", None,
     {"status": STATUS, "param": BEACON_CLASSIFICATION_PARAMS})
_cmd(0x0035, "getDutyCycleState", None, {"status": STATUS, "returnedState": U8})

# -- binding ------------------------------------------------------------------------------
_cmd(0x002A, "clearBindingTable", None, ST)
_cmd(0x002B, "setBinding", {"index": U8, "value": BINDING_TABLE_ENTRY}, ST)
_cmd(0x002C, "getBinding", {"index": U8}, {"status": STATUS, "value": BINDING_TABLE_ENTRY})
_cmd(0x002D, "deleteBinding", {"index": U8}, ST)
_cmd(0x002E, "bindingIsActive", {"index": U8}, {"active": BOOL})
_cmd(0x002F, "getBindingRemoteNodeId", {"index": U8}, {"nodeId": NODE_ID})
_cmd(0x0030, "setBindingRemoteNodeId", {"index": U8, "nodeId": NODE_ID})
_cmd(0x006D, "clearBindingTableOnLeave", {"clear": BOOL})

# -- messaging ----------------------------------------------------------------------------
_cmd(0x0033, "maximumPayloadLength", None, {"apsLength": U8})
_cmd(0x0034, "sendUnicast", {"type": U8, "indexOrDestination": NODE_ID, "apsFrame": APS_FRAME,
                             "messageTag": U16, "messageContents": LVBYTES},
     {"status": STATUS, "sequence": U8})
_cmd(0x0036, "sendBroadcast", {"alias": NODE_ID, "destination": NODE_ID, "nwkSequence": U8,
                               "apsFrame": APS_FRAME, "radius": U8, "messageTag": U16,
                               "messageContents": LVBYTES},
     {"status": STATUS, "sequence": U8})
_cmd(0x0038, "sendMulticast", {"apsFrame": APS_FRAME, "hops": U8, "broadcastAddr": NODE_ID,
                               "alias": NODE_ID, "nwkSequence": U8, "messageTag": U16,
                               "messageContents": LVBYTES},
     {"status": STATUS, "sequence": U8})
_cmd(0x0039, "sendReply", {"sender": NODE_ID, "apsFrame": APS_FRAME,
                           "messageContents": LVBYTES}, ST)
_cb(0x003F, "messageSentHandler", {"status": STATUS, "type": U8, "indexOrDestination": NODE_ID,
                                   "apsFrame": APS_FRAME, "messageTag": U16,
                                   "messageContents": LVBYTES})
_cmd(0x0041, "sendManyToOneRouteRequest", {"concentratorType": U16, "radius": U8}, ST)
_cmd(0x0042, "pollForData", {"interval": U16, "units": U8, "failureLimit": U8}, ST)
_cb(0x0043, "pollCompleteHandler", ST)
_cb(0x0044, "pollHandler", {"childId": NODE_ID, "transmitExpected": BOOL})
_cb(0x0045, "incomingMessageHandler", {
    "type": U8, "apsFrame": APS_FRAME, "senderShortId": NODE_ID, "senderLongId": EUI64,
    "bindingIndex": U8, "addressIndex": U8, "lastHopLqi": U8, "lastHopRssi": I8,
    "lastHopTimestamp": U32, "messageContents": LVBYTES})
_cmd(0x005A, "setSourceRouteDiscoveryMode", {"mode": U8}, {"remainingTime": U32})
_cb(0x007D, "incomingManyToOneRouteRequestHandler",
    {"source": NODE_ID, "longId": EUI64, "cost": U8})
_cb(0x0080, "incomingRouteErrorHandler", {"status": STATUS, "target": NODE_ID})
_cb(0x00C4, "incomingNetworkStatusHandler", {"errorCode": U8, "target": NODE_ID})
_cb(0x0059, "incomingRouteRecordHandler", {"source": NODE_ID, "sourceEui": EUI64,
                                           "lastHopLqi": U8, "lastHopRssi": I8,
                                           "relayList": ListOf(NODE_ID)})
_cmd(0x00AE, "setSourceRoute", {"destination": NODE_ID, "relayList": ListOf(NODE_ID)}, ST)
_cmd(0x0050, "unicastCurrentNetworkKey", {"targetShort": NODE_ID, "targetLong": EUI64,
                                          "parentShortId": NODE_ID}, ST)
_cmd(0x005B, "addressTableEntryIsActive", {"addressTableIndex": U8}, {"active": BOOL})
_cmd(0x005C, "setAddressTableInfo", {"index": U8, "eui64": EUI64, "id": NODE_ID}, ST)
_cmd(0x005E, "getAddressTableInfo", {"index": U8},
     {"status": STATUS, "nodeId": NODE_ID, "eui64": EUI64})
_cmd(0x007E, "setExtendedTimeout", {"remoteEui64": EUI64, "extendedTimeout": BOOL}, ST)
_cmd(0x007F, "getExtendedTimeout", {"remoteEui64": EUI64}, ST)
_cmd(0x0082, "replaceAddressTableEntry", {"addressTableIndex": U8, "newEui64": EUI64,
                                          "newId": NODE_ID, "newExtendedTimeout": BOOL},
     {"status": STATUS, "oldEui64": EUI64, "oldId": NODE_ID, "oldExtendedTimeout": BOOL})
_cmd(0x0060, "lookupNodeIdByEui64", {"eui64": EUI64}, {"status": STATUS, "nodeId": NODE_ID})
_cmd(0x0061, "lookupEui64ByNodeId", {"nodeId": NODE_ID}, {"status": STATUS, "eui64": EUI64})
_cmd(0x0063, "getMulticastTableEntry", {"index": U8},
     {"status": STATUS, "value": MULTICAST_TABLE_ENTRY})
_cmd(0x0064, "setMulticastTableEntry", {"index": U8, "value": MULTICAST_TABLE_ENTRY}, ST)
_cb(0x007C, "idConflictHandler", {"id": NODE_ID})
_cmd(0x00FE, "writeNodeData", {"erase": BOOL}, ST)
_cmd(0x0051, "sendRawMessage", {"messageContents": LVBYTES, "priority": U8, "useCca": BOOL},
     ST)
_cb(0x0098, "rawTransmitCompleteHandler", {"messageContents": LVBYTES, "status": STATUS})
_cmd(0x00F4, "setMacPollFailureWaitTime", {"waitBeforeRetryIntervalMs": U32})
_cmd(0x011D, "setNwkUpdateId", {"nwkUpdateId": U8, "setWhenOnNetwork": BOOL}, ST)

# -- security -----------------------------------------------------------------------------
_cmd(0x0068, "setInitialSecurityState", {"state": INITIAL_SECURITY_STATE}, ST)
_cmd(0x0069, "getCurrentSecurityState", None,
     {"status": STATUS, "state": CURRENT_SECURITY_STATE})
_cmd(0x0114, "exportKey", {"context": SEC_MAN_CONTEXT},
     {"status": STATUS, "key": KEY, "context": SEC_MAN_CONTEXT})
_cmd(0x0115, "importKey", {"context": SEC_MAN_CONTEXT, "key": KEY},
     {"status": STATUS, "context": SEC_MAN_CONTEXT})
_cb(0x006E, "switchNetworkKeyHandler", {"sequenceNumber": U8})
_cmd(0x0075, "findKeyTableEntry", {"address": EUI64, "linkKey": BOOL}, {"index": U8})
_cmd(0x0067, "sendTrustCenterLinkKey", {"destinationNodeId": NODE_ID,
                                        "destinationEui64": EUI64}, ST)
_cmd(0x0076, "eraseKeyTableEntry", {"index": U8}, ST)
_cmd(0x00B1, "clearKeyTable", None, ST)
_cmd(0x0014, "requestLinkKey", {"partner": EUI64}, ST)
_cmd(0x006C, "updateTcLinkKey", {"maxAttempts": U8}, ST)
_cb(0x009B, "zigbeeKeyEstablishmentHandler", {"partner": EUI64, "status": U8})
_cmd(0x006B, "clearTransientLinkKeys")
_cmd(0x0116, "getNetworkKeyInfo", None,
     {"status": STATUS, "networkKeyInfo": SEC_MAN_NETWORK_KEY_INFO})
_cmd(0x010C, "getApsKeyInfo", {"context": SEC_MAN_CONTEXT},
     {"status": STATUS, "keyData": SEC_MAN_APS_KEY_METADATA, "context": SEC_MAN_CONTEXT})
_cmd(0x010E, "importLinkKey", {"index": U8, "address": EUI64, "key": KEY}, ST)
_LINK_KEY_EXPORT: dict[str, Codec] = {
    "status": STATUS, "context": SEC_MAN_CONTEXT, "plaintextKey": KEY,
    "keyData": SEC_MAN_APS_KEY_METADATA}
_cmd(0x010F, "exportLinkKeyByIndex", {"index": U8}, _LINK_KEY_EXPORT)
_cmd(0x010D, "exportLinkKeyByEui", {"eui64": EUI64}, _LINK_KEY_EXPORT)
_cmd(0x0110, "checkKeyContext", {"context": SEC_MAN_CONTEXT}, ST)
# bellows sends a flags byte after the key, herdsman (for v14) does not: both are accepted.
_cmd(0x0111, "importTransientKey", {"eui64": EUI64, "plaintextKey": KEY,
                                    "flags": Optional(U8)}, ST)
_cmd(0x0112, "exportTransientKeyByIndex", {"index": U8}, _LINK_KEY_EXPORT)
_cmd(0x0113, "exportTransientKeyByEui", {"eui64": EUI64}, _LINK_KEY_EXPORT)

# -- trust centre -------------------------------------------------------------------------
_cb(0x0024, "trustCenterJoinHandler", {"newNodeId": NODE_ID, "newNodeEui64": EUI64,
                                       "status": U8, "policyDecision": U8,
                                       "parentOfNewNodeId": NODE_ID})
_cmd(0x0073, "broadcastNextNetworkKey", {"key": KEY}, ST)
_cmd(0x0074, "broadcastNetworkKeySwitch", None, ST)
_cmd(0x006F, "aesMmoHash", {"context": AES_MMO_HASH_CONTEXT, "finalize": BOOL,
                            "data": LVBYTES},
     {"status": STATUS, "returnContext": AES_MMO_HASH_CONTEXT})
_cmd(0x00A8, "removeDevice", {"destShort": NODE_ID, "destLong": EUI64, "targetLong": EUI64},
     ST)
_cmd(0x00A9, "unicastNwkKeyUpdate", {"destShort": NODE_ID, "destLong": EUI64, "key": KEY},
     ST)

# -- token interface ----------------------------------------------------------------------
_cmd(0x0100, "getTokenCount", None, {"count": U8})
_cmd(0x0101, "getTokenInfo", {"index": U8}, {"status": STATUS, "tokenInfo": TOKEN_INFO})
_cmd(0x0102, "getTokenData", {"token": U32, "index": U32},
     {"status": STATUS, "tokenData": LVBYTES32})
_cmd(0x0103, "setTokenData", {"token": U32, "index": U32, "tokenData": LVBYTES32}, ST)
_cmd(0x0104, "resetNode")
_cmd(0x0117, "gpSecurityTestVectors", None, ST)
_cmd(0x0077, "tokenFactoryReset", {"excludeOutgoingFC": BOOL, "excludeBootCounter": BOOL})

# -- green power (the NCP keeps no GP tables: zigpy keeps the sink table itself) ----------
_cmd(0x00E2, "gpSinkTableClearAll")
_cmd(0x005F, "gpClearProxyTable")
_cmd(0x0070, "gpSinkTableInit")
_cmd(0x0118, "gpSinkTableGetNumberOfActiveEntries", None, {"numberOfEntries": U8})
_cmd(0x010A, "gpSinkCommission", {"options": U8, "gpmAddrForSecurity": U16,
                                  "gpmAddrForPairing": U16, "sinkEndpoint": U8}, ST)
_cmd(0x010B, "gpTranslationTableClear")

# -- mfglib (bellows' packet capture): answered, not supported ----------------------------
_cmd(0x0083, "mfglibStart", {"rxCallback": BOOL}, ST)
_cmd(0x0084, "mfglibEnd", None, ST)
_cmd(0x0085, "mfglibStartTone", None, ST)
_cmd(0x0086, "mfglibStopTone", None, ST)
_cmd(0x0087, "mfglibStartStream", None, ST)
_cmd(0x0088, "mfglibStopStream", None, ST)
_cmd(0x0089, "mfglibSendPacket", {"packetContents": LVBYTES}, ST)
_cmd(0x008A, "mfglibSetChannel", {"channel": U8}, ST)
_cmd(0x008B, "mfglibGetChannel", None, {"channel": U8})
_cmd(0x008C, "mfglibSetPower", {"txPowerMode": U16, "power": I8}, ST)
_cmd(0x008D, "mfglibGetPower", None, {"power": I8})
_cb(0x008E, "mfglibRxHandler", {"linkQuality": U8, "rssi": I8, "packetContents": LVBYTES})
_cmd(0x008F, "launchStandaloneBootloader", {"mode": U8}, {"status": U8})  # EmberStatus
_cmd(0x0091, "getStandaloneBootloaderVersionPlatMicroPhy", None,
     {"bootloaderVersion": U16, "nodePlat": U8, "nodeMicro": U8, "nodePhy": U8})


def lookup(frame_id: int) -> Command | None:
    return COMMANDS.get(frame_id)


def by_name(name: str) -> Command:
    return BY_NAME[name]


def zero_response(command: Command) -> dict[str, Any]:
    return command.response.zero()


__all__ = ["BY_NAME", "COMMANDS", "PROTOCOL_VERSION", "Command", "DecodeError", "by_name",
           "lookup", "zero_response"]
