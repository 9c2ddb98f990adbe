"""The replies of an established secure session that are plain data: the networks reply
cut to one frame, the ``pair`` message's fields, a refusal (docs/ble-protocol.md §6.1).
Used by :mod:`gatewayd.ble.secure_service`; no I/O, no state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gatewayd.ble.secure_protocol import MAX_MESSAGE_LEN, encode_message
from gatewayd.onboarding.pairing import PAIR_FIELDS, InvalidRequest


def networks_reply(rid: Any, networks: list[dict[str, Any]]) -> dict[str, Any]:
    """The strongest networks that fit one frame, and whether any were left out.

    A full scan cache (64 networks) of long names is about 5 KB of JSON, more than the
    4067 bytes a DATA frame carries, while a phone needs the few strongest networks only.
    """
    ordered = sorted(networks, key=_signal, reverse=True)  # stable: the host's order on ties
    reply = {"type": "networks", "id": rid, "networks": ordered, "truncated": False}
    if len(encode_message(reply)) <= MAX_MESSAGE_LEN:
        return reply
    # Compact JSON of a list is its items' JSON joined by commas, so each network's cost
    # can be counted on its own instead of encoding the reply once per candidate length.
    used = len(encode_message({**reply, "networks": [], "truncated": True}))
    kept: list[dict[str, Any]] = []
    for network in ordered:
        size = len(encode_message(network)) + (1 if kept else 0)
        if used + size > MAX_MESSAGE_LEN:
            break  # not a shorter, weaker one instead: the list stays "the N strongest"
        kept.append(network)
        used += size
    return {**reply, "networks": kept, "truncated": True}


def _signal(network: dict[str, Any]) -> float:
    signal = network.get("signal")
    return signal if isinstance(signal, int | float) else -1


def pair_fields(raw: Any) -> Mapping[str, Any]:
    """The fields of a ``pair`` message: the /pair names, plain values (docs/ble-protocol.md).
    Runs inside the pairing front door, after the busy and mode checks."""
    if not isinstance(raw, dict):
        raise InvalidRequest("fields: must be an object")
    unknown = sorted(set(raw) - set(PAIR_FIELDS))
    if unknown:
        raise InvalidRequest(f"{unknown[0]}: unknown field", unknown[0])
    for key, value in raw.items():
        if not isinstance(value, str | bool | int):
            raise InvalidRequest(f"{key}: must be a string, number or boolean", key)
    return raw


def failure(rid: Any, status: int, code: str, message: str, field: str | None = None, *,
             reply_type: str = "pair") -> dict[str, Any]:
    return {"type": reply_type, "id": rid, "ok": False, "status": status, "code": code,
            "message": message, "field": field}
