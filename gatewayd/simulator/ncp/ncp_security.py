"""EZSP security and token commands: initial and current security state, the network
and TC link keys (exportKey/importKey/getNetworkKeyInfo), the link key table, transient
keys, network key switches, and the NVM3 token interface."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gatewayd.simulator.ncp import status as st
from gatewayd.simulator.ncp.handlers import handler
from gatewayd.simulator.ncp.ncp_messaging import eui
from gatewayd.simulator.ncp.state import LinkKey

if TYPE_CHECKING:
    from gatewayd.simulator.ncp.ncp import Ncp

ZERO_KEY = bytes(16)


def _context(key_type: int, index: int = 0, partner: bytes = bytes(8),
             flags: int = 0) -> dict[str, Any]:
    return {"coreKeyType": key_type, "keyIndex": index, "derivedType": 0, "eui64": partner,
            "multiNetworkIndex": 0, "flags": flags, "psaKeyAlgPermission": 0}


def _metadata(out_fc: int = 0, in_fc: int = 0) -> dict[str, Any]:
    return {"bitmask": st.KEY_HAS_OUTGOING_FRAME_COUNTER | st.KEY_HAS_INCOMING_FRAME_COUNTER
            | st.KEY_HAS_PARTNER_EUI64 | st.KEY_IS_AUTHORIZED,
            "outgoingFrameCounter": out_fc, "incomingFrameCounter": in_fc, "ttlInSeconds": 0}


def _key_table_size(ncp: Ncp) -> int:
    return ncp.config.get(st.CONFIG_KEY_TABLE_SIZE, 16)


@handler("setInitialSecurityState")
def _set_initial_security_state(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    if ncp.network_up:
        return {"status": st.INVALID_STATE}
    ncp.initial_security = p["state"]
    return {"status": st.OK}


@handler("getCurrentSecurityState")
def _get_current_security_state(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    net = ncp.nvram.network
    if net is None or not ncp.network_up:
        return {"status": st.NOT_JOINED, "state": {"bitmask": 0,
                                                   "trustCenterLongAddress": bytes(8)}}
    bitmask = st.CURRENT_HAVE_TRUST_CENTER_LINK_KEY
    if net.security_bitmask & st.INITIAL_TRUST_CENTER_GLOBAL_LINK_KEY:
        bitmask |= st.CURRENT_GLOBAL_LINK_KEY
    hashed = st.INITIAL_TRUST_CENTER_USES_HASHED_LINK_KEY
    if net.security_bitmask & hashed == hashed:
        bitmask |= st.CURRENT_TRUST_CENTER_USES_HASHED_LINK_KEY
    # The coordinator is the trust centre: its own EUI64.
    return {"status": st.OK, "state": {"bitmask": bitmask,
                                       "trustCenterLongAddress": bytes.fromhex(ncp.nvram.eui64)}}


def _link_key(ncp: Ncp, index: int) -> LinkKey | None:
    table = ncp.nvram.key_table
    return table[index] if index < len(table) else None


@handler("exportKey")
def _export_key(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    context = p["context"]
    net = ncp.nvram.network
    key_type = context["coreKeyType"]
    key: bytes | None = None
    if key_type == st.KEY_NETWORK and net is not None:
        key = bytes.fromhex(net.network_key)
    elif key_type == st.KEY_TC_LINK and net is not None:
        key = bytes.fromhex(net.tc_link_key)
    elif key_type == st.KEY_APP_LINK:
        entry = _link_key(ncp, context["keyIndex"])
        key = bytes.fromhex(entry.key) if entry is not None else None
    elif key_type == st.KEY_TC_LINK_WITH_TIMEOUT:
        key = ncp.transient_keys.get(eui(context["eui64"]))
    if key is None:
        return {"status": st.NOT_FOUND, "key": ZERO_KEY, "context": context}
    return {"status": st.OK, "key": key, "context": context}


@handler("importKey")
def _import_key(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    context, key = p["context"], bytes(p["key"].serialize())
    key_type = context["coreKeyType"]
    if key_type == st.KEY_NETWORK:
        net = ncp.nvram.network
        if net is not None and ncp.network_up:
            return {"status": st.INVALID_STATE, "context": context}
        ncp.pending["network_key"] = key
    elif key_type == st.KEY_TC_LINK:
        ncp.pending["tc_link_key"] = key
    elif key_type == st.KEY_APP_LINK:
        if not context["flags"] & st.CONTEXT_EUI_IS_VALID:
            return {"status": st.INVALID_PARAMETER, "context": context}
        _store_link_key(ncp, eui(context["eui64"]), key, None)
    elif key_type == st.KEY_TC_LINK_WITH_TIMEOUT:
        ncp.transient_keys[eui(context["eui64"])] = key
    else:
        return {"status": st.NOT_SUPPORTED, "context": context}
    return {"status": st.OK, "context": context}


@handler("getNetworkKeyInfo")
def _get_network_key_info(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    net = ncp.nvram.network
    return {"status": st.OK, "networkKeyInfo": {
        "networkKeySet": net is not None, "alternateNetworkKeySet":
            ncp.next_network_key is not None,
        "networkKeySequenceNumber": net.network_key_seq if net else 0,
        "altNetworkKeySequenceNumber": (net.network_key_seq + 1) & 0xFF if net else 0,
        "networkKeyFrameCounter": ncp.nvram.nwk_frame_counter}}


def _store_link_key(ncp: Ncp, partner: bytes, key: bytes, index: int | None) -> int | None:
    table = ncp.nvram.key_table
    size = _key_table_size(ncp)
    if index is None:
        index = next((i for i, k in enumerate(table) if k is not None
                      and k.eui64 == partner.hex()), None)
    if index is None:
        index = next((i for i, k in enumerate(table) if k is None), len(table))
    if index >= size:
        return None
    while len(table) <= index:
        table.append(None)
    table[index] = LinkKey(eui64=partner.hex(), key=key.hex())
    ncp.save()
    return index


@handler("importLinkKey")
def _import_link_key(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    index = _store_link_key(ncp, eui(p["address"]), bytes(p["key"].serialize()), p["index"])
    return {"status": st.OK if index is not None else st.INVALID_INDEX}


def _export(ncp: Ncp, index: int | None) -> dict[str, Any]:
    entry = _link_key(ncp, index) if index is not None else None
    if entry is None or index is None:
        status = st.INVALID_INDEX if index is not None and index >= _key_table_size(ncp) \
            else st.NOT_FOUND
        return {"status": status, "context": _context(st.KEY_APP_LINK), "plaintextKey":
                ZERO_KEY, "keyData": _metadata()}
    partner = bytes.fromhex(entry.eui64)
    return {"status": st.OK, "context": _context(
        st.KEY_APP_LINK, index, partner,
        st.CONTEXT_KEY_INDEX_IS_VALID | st.CONTEXT_EUI_IS_VALID),
        "plaintextKey": bytes.fromhex(entry.key),
        "keyData": _metadata(entry.outgoing_fc, entry.incoming_fc)}


def _find(ncp: Ncp, partner: bytes) -> int | None:
    return next((i for i, k in enumerate(ncp.nvram.key_table)
                 if k is not None and k.eui64 == partner.hex()), None)


@handler("exportLinkKeyByIndex")
def _export_link_key_by_index(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    return _export(ncp, p["index"])


@handler("exportLinkKeyByEui")
def _export_link_key_by_eui(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    return _export(ncp, _find(ncp, eui(p["eui64"])))


@handler("getApsKeyInfo")
def _get_aps_key_info(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    context = p["context"]
    index = context["keyIndex"] if context["flags"] & st.CONTEXT_KEY_INDEX_IS_VALID else \
        _find(ncp, eui(context["eui64"]))
    answer = _export(ncp, index)
    return {"status": answer["status"], "keyData": answer["keyData"],
            "context": answer["context"] if answer["status"] == st.OK else context}


@handler("findKeyTableEntry")
def _find_key_table_entry(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    index = _find(ncp, eui(p["address"])) if p["linkKey"] else None
    return {"index": 0xFF if index is None else index}


@handler("eraseKeyTableEntry")
def _erase_key_table_entry(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    index = p["index"]
    if index >= _key_table_size(ncp):
        return {"status": st.INVALID_INDEX}
    if index < len(ncp.nvram.key_table):
        ncp.nvram.key_table[index] = None
        ncp.save()
    return {"status": st.OK}


@handler("clearKeyTable")
def _clear_key_table(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    ncp.nvram.key_table.clear()
    ncp.save()
    return {"status": st.OK}


@handler("checkKeyContext")
def _check_key_context(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    return {"status": _export_key(ncp, {"context": p["context"]})["status"]}


@handler("importTransientKey")
def _import_transient_key(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    ncp.transient_keys[eui(p["eui64"])] = bytes(p["plaintextKey"].serialize())
    return {"status": st.OK}


def _export_transient(ncp: Ncp, partner: bytes | None) -> dict[str, Any]:
    key = ncp.transient_keys.get(partner) if partner is not None else None
    if key is None or partner is None:
        return {"status": st.NOT_FOUND, "context": _context(st.KEY_TC_LINK_WITH_TIMEOUT),
                "plaintextKey": ZERO_KEY, "keyData": _metadata()}
    return {"status": st.OK, "context": _context(st.KEY_TC_LINK_WITH_TIMEOUT, 0, partner,
                                                 st.CONTEXT_EUI_IS_VALID),
            "plaintextKey": key, "keyData": _metadata()}


@handler("exportTransientKeyByIndex")
def _export_transient_by_index(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    partners = list(ncp.transient_keys)
    index = p["index"]
    return _export_transient(ncp, partners[index] if index < len(partners) else None)


@handler("exportTransientKeyByEui")
def _export_transient_by_eui(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    return _export_transient(ncp, eui(p["eui64"]))


@handler("clearTransientLinkKeys")
def _clear_transient_link_keys(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    ncp.transient_keys.clear()
    return {}


@handler("broadcastNextNetworkKey")
def _broadcast_next_network_key(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    if not ncp.network_up:
        return {"status": st.NETWORK_DOWN}
    key = bytes(p["key"].serialize())
    ncp.next_network_key = key if key != ZERO_KEY else bytes(range(16))
    ncp.transmitted()
    return {"status": st.OK}


@handler("broadcastNetworkKeySwitch")
def _broadcast_network_key_switch(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    net = ncp.nvram.network
    if net is None or not ncp.network_up or ncp.next_network_key is None:
        return {"status": st.INVALID_STATE}
    net.network_key = ncp.next_network_key.hex()
    net.network_key_seq = (net.network_key_seq + 1) & 0xFF
    ncp.next_network_key = None
    ncp.nvram.nwk_frame_counter = 0  # a new key starts a new frame counter
    ncp.save()
    ncp.emit("switchNetworkKeyHandler", sequenceNumber=net.network_key_seq)
    return {"status": st.OK}


# -- tokens (NVM3) -------------------------------------------------------------------------
def _token_key(token: int, index: int) -> str:
    return f"{token:#x}:{index}"


@handler("getTokenCount")
def _get_token_count(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    return {"count": len(ncp.nvram.tokens)}


@handler("getTokenInfo")
def _get_token_info(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    keys = sorted(ncp.nvram.tokens)
    if p["index"] >= len(keys):
        return {"status": st.INVALID_INDEX, "tokenInfo": {
            "nvm3Key": 0, "isCnt": False, "isIdx": False, "size": 0, "arraySize": 0}}
    token, _, _ = keys[p["index"]].partition(":")
    size = len(bytes.fromhex(ncp.nvram.tokens[keys[p["index"]]]))
    return {"status": st.OK, "tokenInfo": {"nvm3Key": int(token, 16), "isCnt": False,
                                           "isIdx": False, "size": size, "arraySize": 1}}


@handler("getTokenData")
def _get_token_data(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    data = ncp.nvram.tokens.get(_token_key(p["token"], p["index"]))
    if data is None:
        return {"status": st.NOT_FOUND, "tokenData": b""}
    return {"status": st.OK, "tokenData": bytes.fromhex(data)}


@handler("setTokenData")
def _set_token_data(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    ncp.nvram.tokens[_token_key(p["token"], p["index"])] = bytes(p["tokenData"]).hex()
    ncp.save()
    return {"status": st.OK}


@handler("getToken")
def _get_token(ncp: Ncp, p: dict[str, Any]) -> dict[str, Any]:
    return {"status": st.NOT_FOUND, "tokenData": bytes(8)}  # legacy token API: unused
