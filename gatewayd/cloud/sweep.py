"""Which retained topics devices have on the broker, asked of the broker rather than guessed.

What the publisher remembers covers this session only: a topic of an older session, or of
a device removed before a restart, is known to the broker alone. The link subscribes to
the devices' trees, publishes a marker to itself (non-retained, under the hub's tree) and
collects what comes back retained until the marker does: a broker sends a subscription's
retained messages before it relays anything published after the SUBSCRIBE. Used to release
an account (:mod:`~gatewayd.cloud.ownership`) and to clear removed devices
(:mod:`~gatewayd.cloud.leftovers`).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable

from gatewayd.cloud.link import CloudLink
from gatewayd.cloud.topics import matches


async def retained_topics(link: CloudLink, devices: Iterable[str], *, marker: str,
                          timeout: float) -> tuple[set[str], bool]:
    """The retained topics (absolute) under ``sweet-home/<device>/#`` for each of
    ``devices`` on ``link``'s connection, and whether that is all of them: False if the
    marker (``sweet-home/<hub>/<marker>``) did not come back within ``timeout``."""
    root = link.root
    marker_topic = f"sweet-home/{link.hub.id}/{marker}"
    token = secrets.token_hex(8)
    found: set[str] = set()
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def collect(topic: str, payload: bytes, retained: bool) -> None:
        if topic == f"{root}/{marker_topic}" and payload == token.encode():
            if not done.done():
                done.set_result(None)
        elif retained and payload:
            found.add(topic)

    filters = [f"sweet-home/{device}/#" for device in dict.fromkeys(devices)]
    if not any(matches(f, marker_topic) for f in filters):
        filters.append(marker_topic)
    for topic_filter in filters:
        link.tap(topic_filter, collect)
    # Our SUBSCRIBEs go out before the marker's PUBLISH, which waits in the outbox.
    link.publish(marker_topic, token)
    try:
        await asyncio.wait_for(done, timeout)
    except TimeoutError:
        return found, False
    finally:
        for topic_filter in filters:
            link.tap(topic_filter, None)
    return found, True
