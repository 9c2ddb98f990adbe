"""Topics of the cloud link: our MQTT client id, relative topics and filter matching. No I/O."""

from __future__ import annotations

import hashlib


def client_id_for(device_id: str) -> str:
    """A stable MQTT client id; at most 23 characters, the limit every broker accepts."""
    cid = f"gw-{device_id}"
    if len(cid) <= 23:
        return cid
    return "gw-" + hashlib.sha256(device_id.encode()).hexdigest()[:20]


def check_relative(topic: str, *, wildcards: bool) -> None:
    """A topic (filter) below the root: no leading '/', no empty levels, no NUL."""
    levels = topic.split("/")
    bad = not topic or "\x00" in topic or any(level == "" for level in levels)
    for i, level in enumerate(levels):
        if ("+" in level or "#" in level) and not (
                wildcards and (level == "+" or (level == "#" and i == len(levels) - 1))):
            bad = True
    if bad:
        raise ValueError(f"invalid topic {topic!r} (relative to the root)")


def matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching for the link's own (relative) subscriptions."""
    fparts = topic_filter.split("/")
    tparts = topic.split("/")
    for i, f in enumerate(fparts):
        if f == "#":
            return True
        if i >= len(tparts) or (f != "+" and f != tparts[i]):
            return False
    return len(fparts) == len(tparts)

