"""EZSP configuration and utility commands: version negotiation, configuration values,
policies, endpoints, values (VERSION_INFO...), counters, identity and manufacturing
tokens. The values here are what an EmberZNet 8.0.2 NCP reports."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gatewayd.simulator.ncp import status as st
from gatewayd.simulator.ncp.ezsp_commands import COUNTER_TYPE_COUNT, PROTOCOL_VERSION
from gatewayd.simulator.ncp.handlers import handler

if TYPE_CHECKING:
    from gatewayd.simulator.ncp.ncp import Ncp

STACK_TYPE = 2  # stackType of `version`: EmberZNet (zigbee-herdsman checks it)
STACK_VERSION = (8, 0, 2, 0)  # EmberZNet 8.0.2.0 GA: EZSP v14
STACK_BUILD = 0x0174
VERSION_TYPE_GA = 0xAA

CONFIG_DEFAULTS: dict[int, int] = {
    0x01: 75, 0x02: 26, 0x03: 10, 0x04: 16, st.CONFIG_ADDRESS_TABLE_SIZE: 16,
    st.CONFIG_MULTICAST_TABLE_SIZE: 16, 0x07: 16, 0x08: 16, 0x0C: 2,
    st.CONFIG_SECURITY_LEVEL: 5, 0x10: 30, st.CONFIG_MAX_END_DEVICE_CHILDREN: 32, 0x12: 3000,
    0x13: 8, 0x17: 0, 0x18: 0, 0x19: 2, 0x1A: 16, 0x1C: 1, 0x1D: 50,
    st.CONFIG_KEY_TABLE_SIZE: 16, 0x1F: 1600, 0x20: 63, 0x22: 1, 0x24: 0, 0x29: 0, 0x2A: 0,
    0x2B: 15, 0x2C: 0, 0x2D: 1, 0x2E: 0, 0x33: 1, 0x34: 16, 0x35: 10, 0x36: 300, 0x37: 1,
    0x38: 300, 0x39: 0, 0x40: 0, 0x41: 5, 0x42: 0, 0x43: 0,
}
MFG_TOKEN_DEFAULTS: dict[int, bytes] = {
    st.MFG_CUSTOM_VERSION: b"\xff\xff",
    st.MFG_STRING: b"gatewayd".ljust(16, b"\xff"),
    st.MFG_BOARD_NAME: b"ncp-emulator".ljust(16, b"\xff"),
    st.MFG_MANUF_ID: b"\xff\xff",
    st.MFG_CUSTOM_EUI_64: b"\xff" * 8,
}
# Setters a real NCP accepts and whose effect the emulator does not model.
ACCEPTED = frozenset({
    "setPassiveAckConfig", "setRadioIeee802154CcaMode", "setBrokenRouteErrorCode",
    "setNumBeaconsToStore", "clearStoredBeacons", "setPowerDescriptor",
    "setRoutingShortcutThreshold", "setBeaconClassificationParams", "writeNodeData",
    "callback",
    "sendManyToOneRouteRequest", "setSourceRoute", "unicastCurrentNetworkKey",
    "sendTrustCenterLinkKey", "requestLinkKey", "updateTcLinkKey", "unicastNwkKeyUpdate",
    "gpSinkCommission", "setNeighborFrameCounter", "debugWrite", "delayTest",
    "setMacPollFailureWaitTime", "clearBindingTableOnLeave", "gpSinkTableClearAll",
    "gpClearProxyTable", "gpSinkTableInit", "gpTranslationTableClear", "nop",
})


# -- configuration ---------------------------------------------------------------------------
@handler("version")
def _version(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    ncp.version_set = True
    major, minor, patch, _ = STACK_VERSION
    return {"protocolVersion": PROTOCOL_VERSION, "stackType": STACK_TYPE,
            "stackVersion": major << 12 | minor << 8 | patch << 4}


@handler("getConfigurationValue")
def _get_config(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    value = ncp.config.get(p["configId"])
    if value is None:
        return {"status": st.ZIGBEE_EZSP_ERROR, "value": 0}
    return {"status": st.OK, "value": value}


@handler("setConfigurationValue")
def _set_config(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    ncp.config[p["configId"]] = p["value"]
    return {"status": st.OK}


@handler("getPolicy")
def _get_policy(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    return {"status": st.OK, "decisionId": ncp.policies.get(p["policyId"], 0)}


@handler("setPolicy")
def _set_policy(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    ncp.policies[p["policyId"]] = p["decisionId"]
    return {"status": st.OK}


@handler("addEndpoint")
def _add_endpoint(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    if p["endpoint"] in ncp.endpoints:
        return {"status": st.INVALID_STATE}  # endpoints are added once per reset
    ncp.endpoints[p["endpoint"]] = p
    return {"status": st.OK}


def _version_info() -> bytes:
    major, minor, patch, special = STACK_VERSION
    return STACK_BUILD.to_bytes(2, "little") + bytes((major, minor, patch, special,
                                                      VERSION_TYPE_GA))


@handler("getValue")
def _get_value(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    vid = p["valueId"]
    computed: dict[int, Callable[[], bytes]] = {
        st.VALUE_VERSION_INFO: _version_info,
        st.VALUE_FREE_BUFFERS: lambda: bytes((200,)),
        st.VALUE_NODE_SHORT_ID: lambda: ncp.nvram.node_id.to_bytes(2, "little"),
        st.VALUE_NWK_FRAME_COUNTER: lambda: ncp.nvram.nwk_frame_counter.to_bytes(4, "little"),
        st.VALUE_APS_FRAME_COUNTER: lambda: ncp.nvram.aps_frame_counter.to_bytes(4, "little"),
    }
    if vid in computed:
        return {"status": st.OK, "value": computed[vid]()}
    if vid in ncp.values:
        return {"status": st.OK, "value": ncp.values[vid]}
    return {"status": st.NOT_FOUND, "value": b""}


@handler("setValue")
def _set_value(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    vid, value = p["valueId"], p["value"]
    if vid in (st.VALUE_VERSION_INFO, st.VALUE_FREE_BUFFERS):
        return {"status": st.INVALID_PARAMETER}  # read-only
    if vid in (st.VALUE_NWK_FRAME_COUNTER, st.VALUE_APS_FRAME_COUNTER):
        if ncp.network_up or len(value) != 4:
            return {"status": st.INVALID_STATE}  # only before joining a network
        counter = int.from_bytes(value, "little")
        if vid == st.VALUE_NWK_FRAME_COUNTER:
            ncp.nvram.nwk_frame_counter = counter
        else:
            ncp.nvram.aps_frame_counter = counter
        return {"status": st.OK}
    ncp.values[vid] = value
    return {"status": st.OK}


@handler("getExtendedValue")
def _get_extended_value(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    if p["valueId"] == st.EXTENDED_VALUE_ENDPOINT_FLAGS:
        if p["characteristics"] in ncp.endpoints:
            return {"status": st.OK, "value": b"\x01\x00"}  # EZSP_ENDPOINT_ENABLED
        # The flags' two bytes come with the error too: herdsman checks the length first.
        return {"status": st.INVALID_PARAMETER, "value": b"\x00\x00"}
    return {"status": st.NOT_FOUND, "value": b""}


@handler("echo")
def _echo(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    return {"echo": p["data"]}


@handler("getRandomNumber")
def _random(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    return {"status": st.OK, "value": random.randrange(0x10000)}  # noqa: S311


@handler("getLibraryStatus")
def _library_status(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    return {"status": st.EMBER_LIBRARY_NOT_PRESENT}


@handler("getXncpInfo")
def _xncp_info(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    return {"status": st.NOT_SUPPORTED, "manufacturerId": 0, "versionNumber": 0}


@handler("customFrame")
def _custom_frame(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    return {"status": st.NOT_SUPPORTED, "reply": b""}  # no XNCP extensions


@handler("readCounters")
def _read_counters(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    return {"values": list(ncp.ezsp_counters)}


@handler("readAndClearCounters")
def _read_and_clear_counters(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    values = list(ncp.ezsp_counters)
    ncp.ezsp_counters = [0] * COUNTER_TYPE_COUNT
    return {"values": values}


@handler("getEui64")
def _get_eui64(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    return {"eui64": bytes.fromhex(ncp.nvram.eui64)}


@handler("getNodeId")
def _get_node_id(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    return {"nodeId": ncp.nvram.node_id}


@handler("getPhyInterfaceCount")
def _phy_count(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    return {"interfaceCount": 1}


@handler("getMfgToken")
def _get_mfg_token(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    stored = ncp.nvram.mfg_tokens.get(str(p["tokenId"]))
    data = bytes.fromhex(stored) if stored is not None else MFG_TOKEN_DEFAULTS.get(
        p["tokenId"], b"")
    return {"tokenData": data}


@handler("setMfgToken")
def _set_mfg_token(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    key = str(p["tokenId"])
    if key in ncp.nvram.mfg_tokens:
        return {"status": st.INVALID_STATE}  # manufacturing tokens are written once
    ncp.nvram.mfg_tokens[key] = bytes(p["tokenData"]).hex()
    ncp.save()
    return {"status": st.OK}


@handler("resetNode")
def _reset_node(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    if ncp.on_reset_request is not None:
        ncp.loop().call_soon(ncp.on_reset_request)
    return {}


@handler("setManufacturerCode")
def _set_manufacturer_code(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    ncp.values[0x101] = p["code"].to_bytes(2, "little")  # the node descriptor's code
    return {"status": st.OK}


@handler("getManufacturerCode")
def _get_manufacturer_code(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    return {"code": int.from_bytes(ncp.values.get(0x101, b"\x49\x10"), "little")}
