"""The NCP's own ZDO: what the coordinator's stack answers when the host sends a ZDO
request to the coordinator itself (zigpy asks its coordinator for its node descriptor).

A real EmberZNet stack handles these in firmware and hands the response to the host as
an incoming message from node 0x0000; the frames are built here by hand (ZigBee spec
2.4.3 / 2.4.4 layouts), little-endian.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gatewayd.simulator.ncp.ncp import Ncp

NODE_DESC_REQ, SIMPLE_DESC_REQ, ACTIVE_EP_REQ = 0x0002, 0x0004, 0x0005
NWK_ADDR_REQ, IEEE_ADDR_REQ = 0x0000, 0x0001
SUCCESS, INV_REQUESTTYPE, NOT_ACTIVE, NOT_SUPPORTED = 0x00, 0x80, 0x83, 0x84
SILICON_LABS = 0x1049


def _u16(value: int) -> bytes:
    return value.to_bytes(2, "little")


def node_descriptor() -> bytes:
    return bytes((
        0x00,  # logical type coordinator; no complex or user descriptor
        0x40,  # APS flags 0; frequency band 2.4 GHz
        0x8F,  # MAC capabilities: alternate PAN coordinator, FFD, mains, rx on, allocate
    )) + _u16(SILICON_LABS) + bytes((82,)) + _u16(128) + _u16(0x2C41) + _u16(128) + b"\x00"


def answer(ncp: Ncp, cluster: int, payload: bytes) -> tuple[int, bytes] | None:
    """The response (cluster id, payload) to a ZDO request for the coordinator, or None
    when the request needs no answer."""
    if cluster & 0x8000 or not payload:
        return None  # a response, not a request
    tsn, args = payload[0], payload[1:]
    me = ncp.nvram.node_id
    rsp = cluster | 0x8000
    head = bytes((tsn,))
    if cluster == NODE_DESC_REQ:
        return rsp, head + bytes((SUCCESS,)) + _u16(me) + node_descriptor()
    if cluster == ACTIVE_EP_REQ:
        eps = sorted(ncp.endpoints)
        return rsp, head + bytes((SUCCESS,)) + _u16(me) + bytes((len(eps), *eps))
    if cluster == SIMPLE_DESC_REQ:
        ep = ncp.endpoints.get(args[2]) if len(args) >= 3 else None
        if ep is None:
            return rsp, head + bytes((NOT_ACTIVE,)) + _u16(me) + b"\x00"
        ins, outs = ep["inputClusterList"], ep["outputClusterList"]
        desc = (bytes((ep["endpoint"],)) + _u16(ep["profileId"]) + _u16(ep["deviceId"])
                + bytes((ep["deviceVersion"], len(ins))) + b"".join(_u16(c) for c in ins)
                + bytes((len(outs),)) + b"".join(_u16(c) for c in outs))
        return rsp, head + bytes((SUCCESS,)) + _u16(me) + bytes((len(desc),)) + desc
    if cluster in (IEEE_ADDR_REQ, NWK_ADDR_REQ):
        ieee = bytes.fromhex(ncp.nvram.eui64)
        return rsp, head + bytes((SUCCESS,)) + ieee + _u16(me)
    return rsp, head + bytes((NOT_SUPPORTED,))
