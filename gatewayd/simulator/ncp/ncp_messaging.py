"""EZSP messaging and the NCP's tables: sendUnicast/Broadcast/Multicast with their
``messageSentHandler``, the child, address, multicast and binding tables, lookups.

A unicast to a device on the air that answers is reported sent (``OK``) at once, and the
device gets the frame right after; a silenced or unknown destination is reported as
``ZIGBEE_DELIVERY_FAILED`` after :attr:`Ncp.delivery_failure_delay`, the way a real NCP
reports a frame that no MAC/APS acknowledgement followed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gatewayd.simulator.ncp import ncp_zdo
from gatewayd.simulator.ncp import status as st
from gatewayd.simulator.ncp.handlers import handler

if TYPE_CHECKING:
    from gatewayd.simulator.ncp.ncp import Ncp

UNKNOWN_NODE = 0xFFFF
MAX_APS_PAYLOAD = 82  # what maximumPayloadLength answers (no source route, no security)
IEEE_ADDR_REQ = 0x0001  # ZDO: the only broadcast a catalog device answers


def eui(value: Any) -> bytes:
    return bytes(value.serialize()) if hasattr(value, "serialize") else bytes(value)


def _sent(ncp: Ncp, status: int, msg_type: int, dest: int, aps: dict[str, Any],
          tag: int) -> None:
    ncp.emit("messageSentHandler", status=status, type=msg_type, indexOrDestination=dest,
             apsFrame=aps, messageTag=tag, messageContents=b"")


def _resolve(ncp: Ncp, msg_type: int, index_or_destination: int) -> int | None:
    if msg_type == st.OUTGOING_DIRECT:
        return index_or_destination
    if msg_type == st.OUTGOING_VIA_ADDRESS_TABLE:
        entry = ncp.address_table.get(index_or_destination)
        return entry[1] if entry else None
    if msg_type == st.OUTGOING_VIA_BINDING:
        binding = ncp.bindings.get(index_or_destination)
        if binding is None or ncp.air is None:
            return None
        return ncp.air.nwk_of(eui(binding["identifier"]))
    return None


def _loopback(ncp: Ncp, aps: dict[str, Any], payload: bytes) -> None:
    """A frame for the coordinator itself: its ZDO answers requests (zigpy asks for its
    node descriptor); anything else is consumed by the stack."""
    if aps["profileId"] != 0 or aps["destinationEndpoint"] != 0:
        return
    answer = ncp_zdo.answer(ncp, aps["clusterId"], payload)
    if answer is None:
        return
    cluster, data = answer
    me = ncp.nvram.node_id

    def deliver() -> None:
        ncp.emit("incomingMessageHandler", type=st.INCOMING_UNICAST, apsFrame={
            "profileId": 0, "clusterId": cluster, "sourceEndpoint": 0,
            "destinationEndpoint": 0, "options": 0, "groupId": 0,
            "sequence": ncp.next_aps_seq()}, senderShortId=me,
            senderLongId=bytes.fromhex(ncp.nvram.eui64), bindingIndex=0xFF, addressIndex=0xFF,
            lastHopLqi=255, lastHopRssi=0, lastHopTimestamp=0, messageContents=data)
    ncp.loop().call_soon(deliver)


@handler("sendUnicast")
def _send_unicast(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    if not ncp.network_up:
        return {"status": st.NETWORK_DOWN, "sequence": 0}
    if len(p["messageContents"]) > MAX_APS_PAYLOAD:
        return {"status": st.INVALID_PARAMETER, "sequence": 0}
    aps = dict(p["apsFrame"], sequence=ncp.next_aps_seq())
    msg_type, dest, tag = p["type"], p["indexOrDestination"], p["messageTag"]
    nwk = _resolve(ncp, msg_type, dest)
    if nwk == ncp.nvram.node_id:
        _loopback(ncp, aps, bytes(p["messageContents"]))
        _sent(ncp, st.OK, msg_type, dest, aps, tag)
        return {"status": st.OK, "sequence": aps["sequence"]}
    ncp.transmitted()
    acked = None
    if nwk is not None and ncp.air is not None:
        acked = ncp.air.deliver(nwk, aps, bytes(p["messageContents"]))
    if acked:
        ncp.count(st.COUNTER_MAC_TX_UNICAST_SUCCESS)
        ncp.count(st.COUNTER_APS_DATA_TX_UNICAST_SUCCESS)
        _sent(ncp, st.OK, msg_type, dest, aps, tag)
    else:
        def failed() -> None:
            ncp.count(st.COUNTER_MAC_TX_UNICAST_FAILED)
            ncp.count(st.COUNTER_APS_DATA_TX_UNICAST_FAILED)
            _sent(ncp, st.ZIGBEE_DELIVERY_FAILED, msg_type, dest, aps, tag)
        ncp.later(ncp.delivery_failure_delay, failed)
    return {"status": st.OK, "sequence": aps["sequence"]}


@handler("sendBroadcast")
def _send_broadcast(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    if not ncp.network_up:
        return {"status": st.NETWORK_DOWN, "sequence": 0}
    if p["destination"] not in (0xFFFF, 0xFFFD, 0xFFFC, 0xFFFB):
        return {"status": st.INVALID_PARAMETER, "sequence": 0}
    aps = dict(p["apsFrame"], sequence=ncp.next_aps_seq())
    ncp.transmitted()
    ncp.count(st.COUNTER_MAC_TX_BROADCAST)
    # Devices in the catalog act on no broadcast but the address request of ZDO, which the
    # device it names answers (a host finds a device it does not know, zigpy after its
    # database was lost); the NCP reports the broadcast sent once relayed.
    data = bytes(p["messageContents"])
    if (aps["profileId"], aps["clusterId"]) == (0, IEEE_ADDR_REQ) and len(data) >= 3 \
            and ncp.air is not None:
        ncp.air.deliver(int.from_bytes(data[1:3], "little"), aps, data)
    _sent(ncp, st.OK, st.OUTGOING_BROADCAST, p["destination"], aps, p["messageTag"])
    return {"status": st.OK, "sequence": aps["sequence"]}


@handler("sendMulticast")
def _send_multicast(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    if not ncp.network_up:
        return {"status": st.NETWORK_DOWN, "sequence": 0}
    aps = dict(p["apsFrame"], sequence=ncp.next_aps_seq())
    ncp.transmitted()
    ncp.count(st.COUNTER_MAC_TX_BROADCAST)
    _sent(ncp, st.OK, st.OUTGOING_MULTICAST, aps["groupId"], aps, p["messageTag"])
    return {"status": st.OK, "sequence": aps["sequence"]}


@handler("sendReply")
def _send_reply(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    if not ncp.network_up:
        return {"status": st.NETWORK_DOWN}
    if ncp.air is not None:
        ncp.air.deliver(p["sender"], dict(p["apsFrame"]), bytes(p["messageContents"]))
    return {"status": st.OK}


@handler("maximumPayloadLength")
def _max_payload(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    return {"apsLength": MAX_APS_PAYLOAD}


@handler("setConcentrator")
def _set_concentrator(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    ncp.values[0x100] = bytes((int(p["on"]),))  # remembered for setSourceRouteDiscoveryMode
    return {"status": st.OK}


@handler("setSourceRouteDiscoveryMode")
def _set_source_route_discovery_mode(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    concentrator = ncp.values.get(0x100, b"\x00") != b"\x00"
    return {"remainingTime": 10_000 if concentrator and p["mode"] else 0xFFFFFFFF}


@handler("getSourceRouteTableTotalSize")
def _source_route_total(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    return {"sourceRouteTableTotalSize": ncp.config.get(0x1A, 16)}


@handler("getSourceRouteTableFilledSize")
def _source_route_filled(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    return {"sourceRouteTableFilledSize": 0}  # every device is one hop away


# -- extended timeouts and the address table ------------------------------------------------
@handler("setExtendedTimeout")
def _set_extended_timeout(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    key = eui(p["remoteEui64"])
    if p["extendedTimeout"]:
        ncp.extended_timeouts.add(key)
    else:
        ncp.extended_timeouts.discard(key)
    return {"status": st.OK}


@handler("getExtendedTimeout")
def _get_extended_timeout(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    return {"status": st.OK if eui(p["remoteEui64"]) in ncp.extended_timeouts else st.FAIL}


def _address_table_size(ncp: Ncp) -> int:
    return ncp.config.get(st.CONFIG_ADDRESS_TABLE_SIZE, 16)


@handler("getAddressTableInfo")
def _get_address_table_info(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    index = p["index"]
    if index >= _address_table_size(ncp):
        return {"status": st.INVALID_INDEX, "nodeId": UNKNOWN_NODE, "eui64": bytes(8)}
    raw, nwk, _ = ncp.address_table.get(index, (bytes(8), UNKNOWN_NODE, False))
    return {"status": st.OK, "nodeId": nwk, "eui64": raw}


@handler("setAddressTableInfo")
def _set_address_table_info(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    if p["index"] >= _address_table_size(ncp):
        return {"status": st.INVALID_INDEX}
    ncp.address_table[p["index"]] = (eui(p["eui64"]), p["id"], False)
    return {"status": st.OK}


@handler("replaceAddressTableEntry")
def _replace_address_table_entry(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    index = p["addressTableIndex"]
    if index >= _address_table_size(ncp):
        return {"status": st.INVALID_INDEX, "oldEui64": bytes(8), "oldId": UNKNOWN_NODE,
                "oldExtendedTimeout": False}
    old = ncp.address_table.get(index, (bytes(8), UNKNOWN_NODE, False))
    new_eui = eui(p["newEui64"])
    ncp.address_table[index] = (new_eui, p["newId"], bool(p["newExtendedTimeout"]))
    if p["newExtendedTimeout"]:
        ncp.extended_timeouts.add(new_eui)
    return {"status": st.OK, "oldEui64": old[0], "oldId": old[1], "oldExtendedTimeout": old[2]}


@handler("addressTableEntryIsActive")
def _address_table_entry_is_active(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    entry = ncp.address_table.get(p["addressTableIndex"])
    return {"active": entry is not None and entry[1] != UNKNOWN_NODE}


@handler("lookupNodeIdByEui64")
def _lookup_node_id(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    key = eui(p["eui64"])
    if key == bytes.fromhex(ncp.nvram.eui64) and ncp.network_up:
        return {"status": st.OK, "nodeId": ncp.nvram.node_id}
    nwk = ncp.air.nwk_of(key) if ncp.air is not None else None
    if nwk is None:
        nwk = next((n for raw, n, _ in ncp.address_table.values() if raw == key), None)
    if nwk is None:
        return {"status": st.NOT_FOUND, "nodeId": UNKNOWN_NODE}
    return {"status": st.OK, "nodeId": nwk}


@handler("lookupEui64ByNodeId")
def _lookup_eui64(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    nwk = p["nodeId"]
    if nwk == ncp.nvram.node_id and ncp.network_up:
        return {"status": st.OK, "eui64": bytes.fromhex(ncp.nvram.eui64)}
    raw = ncp.air.eui64_of(nwk) if ncp.air is not None else None
    if raw is None:
        raw = next((r for r, n, _ in ncp.address_table.values() if n == nwk), None)
    if raw is None:
        return {"status": st.NOT_FOUND, "eui64": bytes(8)}
    return {"status": st.OK, "eui64": raw}


# -- the child table ------------------------------------------------------------------------
@handler("getChildData")
def _get_child_data(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    index = p["index"]
    children = ncp.nvram.children
    if index >= len(children):
        # Empty slots answer NOT_JOINED; bellows reads all 256 and skips those.
        return {"status": st.NOT_JOINED, "childData": {
            "eui64": bytes(8), "type": 0, "id": UNKNOWN_NODE, "phy": 0, "power": 0,
            "timeout": 0, "remainingTimeout": 0}}
    child = children[index]
    return {"status": st.OK, "childData": {
        "eui64": bytes.fromhex(child.eui64), "type": child.node_type, "id": child.node_id,
        "phy": 0, "power": 0, "timeout": 8, "remainingTimeout": 256 * 60}}


@handler("setChildData")
def _set_child_data(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    from gatewayd.simulator.ncp.state import Child

    index, data = p["index"], p["childData"]
    if index >= ncp.config.get(st.CONFIG_MAX_END_DEVICE_CHILDREN, 32):
        return {"status": st.INVALID_INDEX}
    child = Child(eui64=eui(data["eui64"]).hex(), node_id=data["id"], node_type=data["type"])
    children = ncp.nvram.children
    if index < len(children):
        children[index] = child
    else:
        children.append(child)
    ncp.save()
    return {"status": st.OK}


@handler("childId")
def _child_id(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    children = ncp.nvram.children
    index = p["childIndex"]
    return {"childId": children[index].node_id if index < len(children) else UNKNOWN_NODE}


@handler("childIndex")
def _child_index(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    for index, child in enumerate(ncp.nvram.children):
        if child.node_id == p["childId"]:
            return {"childIndex": index}
    return {"childIndex": 0xFF}


@handler("getParentChildParameters")
def _parent_child_parameters(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    return {"childCount": len(ncp.nvram.children), "parentEui64": bytes(8),
            "parentNodeId": UNKNOWN_NODE}


# -- multicast and binding tables -----------------------------------------------------------
@handler("getMulticastTableEntry")
def _get_multicast(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    if p["index"] >= ncp.config.get(st.CONFIG_MULTICAST_TABLE_SIZE, 16):
        return {"status": st.INVALID_INDEX, "value": {"multicastId": 0, "endpoint": 0}}
    entry = ncp.multicast.get(p["index"], {"multicastId": 0, "endpoint": 0})
    return {"status": st.OK, "value": entry}


@handler("setMulticastTableEntry")
def _set_multicast(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    if p["index"] >= ncp.config.get(st.CONFIG_MULTICAST_TABLE_SIZE, 16):
        return {"status": st.INVALID_INDEX}
    value = p["value"]
    ncp.multicast[p["index"]] = {"multicastId": value["multicastId"],
                                 "endpoint": value["endpoint"]}
    return {"status": st.OK}


def _binding_ok(ncp: Ncp, index: int) -> bool:
    return index < ncp.config.get(st.CONFIG_BINDING_TABLE_SIZE, 16)


@handler("clearBindingTable")
def _clear_bindings(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    ncp.bindings.clear()
    return {"status": st.OK}


@handler("setBinding")
def _set_binding(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    if not _binding_ok(ncp, p["index"]):
        return {"status": st.INVALID_INDEX}
    ncp.bindings[p["index"]] = p["value"]
    return {"status": st.OK}


@handler("getBinding")
def _get_binding(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    unused = {"type": 0, "local": 0, "clusterId": 0, "remote": 0, "identifier": bytes(8),
              "networkIndex": 0}
    if not _binding_ok(ncp, p["index"]):
        return {"status": st.INVALID_INDEX, "value": unused}
    return {"status": st.OK, "value": ncp.bindings.get(p["index"], unused)}


@handler("deleteBinding")
def _delete_binding(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    if not _binding_ok(ncp, p["index"]):
        return {"status": st.INVALID_INDEX}
    ncp.bindings.pop(p["index"], None)
    return {"status": st.OK}


@handler("bindingIsActive")
def _binding_is_active(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    return {"active": p["index"] in ncp.bindings}


@handler("removeDevice")
def _remove_device(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    if not ncp.network_up:
        return {"status": st.NETWORK_DOWN}
    if ncp.air is None or not ncp.air.remove(eui(p["targetLong"])):
        return {"status": st.NOT_FOUND}
    return {"status": st.OK}


@handler("neighborCount")
def _neighbor_count(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    return {"value": 0}
