"""Which retained topics devices have on the broker, asked of the broker rather than guessed.

What the publisher remembers covers this session only: a topic of an older session, or of
a device removed before a restart, is known to the broker alone. The link subscribes to
the devices' trees, publishes a marker to itself (non-retained, under the hub's tree) and
collects what comes back retained until the marker does: a broker sends a subscription's
retained messages before it relays anything published after the SUBSCRIBE. Used to release
an account (:mod:`~gatewayd.cloud.ownership`), to clear removed devices
(:mod:`~gatewayd.cloud.leftovers`) and the topics a device's tree no longer has
(:mod:`~gatewayd.cloud.stale`). Their rounds take turns on a link: each taps its marker's
topic, and a second tap on a topic replaces the first. :func:`retained_values` asks the
same way for the values of some attributes of every device under the root (which devices
an account has that the hub knows nothing of), bounded by a number of devices.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterable

from gatewayd.cloud.link import CloudLink
from gatewayd.cloud.topics import matches

# Devices asked about at once: a Zigbee device's tree is about 40 retained topics, so a
# round's burst stays within the 512 inbound messages the hub keeps waiting; 13 such
# devices at once lost some. One round costs a round trip to the broker.
ROUND = 8
MAX_VALUE = 256  # bytes of an attribute's value kept by retained_values (longer: not kept)


async def retained_topics(link: CloudLink, devices: Iterable[str], *, marker: str,
                          timeout: float) -> tuple[set[str], bool]:
    """The retained topics (absolute) under ``sweet-home/<device>/#`` for each of
    ``devices`` on ``link``'s connection, and whether that is all of them: False if a
    marker (``sweet-home/<hub>/<marker>``) did not come back within ``timeout``, or if the
    hub had to drop a message meanwhile.

    The devices are asked about :data:`ROUND` at a time: the hub keeps at most 512
    inbound messages waiting (:mod:`~gatewayd.cloud.net`), and a burst beyond that loses
    topics that would then stay on the broker for good. A round that lost messages all the
    same (a device with hundreds of topics, a flood of commands meanwhile) is asked again
    one device at a time."""
    ids = list(dict.fromkeys(devices))
    rounds = [ids[i:i + ROUND] for i in range(0, len(ids), ROUND)]
    found: set[str] = set()
    complete = True
    while rounds:
        group = rounds.pop(0)
        dropped = link.inbound_dropped
        answered = await _round(link, group, found, marker=marker, timeout=timeout)
        if not answered:
            return found, False
        if link.inbound_dropped != dropped:
            if len(group) > 1:
                rounds[:0] = [[device] for device in group]
            else:
                complete = False
    return found, complete


async def retained_values(link: CloudLink, attributes: Iterable[str], *, marker: str,
                          timeout: float, limit: int,
                          always: str = "") -> tuple[dict[str, dict[str, bytes]], bool]:
    """Per device id, the retained values of ``attributes`` (``$localip``: filters
    ``sweet-home/+/<attribute>``) on ``link``'s connection, and whether that is all of them.
    At most ``limit`` devices besides ``always`` (one whose values are always kept): the
    values of any further device are not kept, and the answer is then incomplete too, as
    it is if the marker did not come back in time or the hub had to drop a message. A
    value longer than :data:`MAX_VALUE` bytes is not kept either."""
    found: dict[str, dict[str, bytes]] = {}
    prefix = f"{link.root}/sweet-home/"
    overflow = False

    def keep(topic: str, payload: bytes) -> None:
        nonlocal overflow
        if not topic.startswith(prefix) or len(payload) > MAX_VALUE:
            return
        device_id, _, attribute = topic[len(prefix):].partition("/")
        if device_id not in found and device_id != always and len(found) - (
                always in found) >= limit:
            overflow = True
            return
        found.setdefault(device_id, {})[attribute] = payload

    filters = [f"sweet-home/+/{attribute}" for attribute in attributes]
    async with link.sweep_turn:
        dropped = link.inbound_dropped
        answered = await _taken(link, filters, keep, marker=marker, timeout=timeout)
        return found, answered and not overflow and link.inbound_dropped == dropped


async def _round(link: CloudLink, devices: list[str], found: set[str], *, marker: str,
                 timeout: float) -> bool:
    """Add what is retained under ``devices`` to ``found``; whether the marker came back.
    One round at a time on a link (:attr:`CloudLink.sweep_turn`)."""
    async with link.sweep_turn:
        return await _taken(link, [f"sweet-home/{device}/#" for device in devices],
                            lambda topic, _payload: found.add(topic), marker=marker,
                            timeout=timeout)


async def _taken(link: CloudLink, filters: list[str], keep: Callable[[str, bytes], None], *,
                 marker: str, timeout: float) -> bool:
    """Hand each retained message matching ``filters`` to ``keep`` until the marker comes
    back; whether it did in time."""
    root = link.root
    marker_topic = f"sweet-home/{link.hub.id}/{marker}"
    token = secrets.token_hex(8)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def collect(topic: str, payload: bytes, retained: bool) -> None:
        if topic == f"{root}/{marker_topic}" and payload == token.encode():
            if not done.done():
                done.set_result(None)
        elif retained and payload:
            keep(topic, payload)

    filters = list(filters)
    if not any(matches(f, marker_topic) for f in filters):
        filters.append(marker_topic)
    for topic_filter in filters:
        link.tap(topic_filter, collect)
    # Our SUBSCRIBEs go out before the marker's PUBLISH, which waits in the outbox.
    link.publish(marker_topic, token)
    try:
        await asyncio.wait_for(done, timeout)
    except TimeoutError:
        return False
    finally:
        for topic_filter in filters:
            link.tap(topic_filter, None)
    return True
