"""Topics of the cloud link: our MQTT client id, relative topics and filter matching. No I/O."""

from __future__ import annotations

MAX_CLIENT_ID = 64


def client_id_for(device_id: str) -> str:
    """The hub's MQTT client id: its device id, as it is.

    The platform tells devices apart by client id (every hub of an account shares the MQTT
    user), and its ACL lets a client publish REQ and read RES only under its own device id.
    MQTT 3.1.1 promises only 23 characters, but the brokers the hub targets (mosquitto,
    EMQX) accept far more; ``[hub] device_id`` is limited to 64 characters, and a longer one
    is refused here rather than silently shortened (a shortened id would not match the
    REQ/RES topics).
    """
    if not 0 < len(device_id) <= MAX_CLIENT_ID:
        raise ValueError(f"device id {device_id!r}: 1-{MAX_CLIENT_ID} characters as MQTT "
                         "client id")
    return device_id


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

