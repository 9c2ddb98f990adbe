"""What the broker sends the hub, and where each message goes.

Below its root the link subscribes to its devices' ``/set`` topics, to standing filters
(:meth:`Inbound.subscribe`: the platform's answers, provisioning) and to temporary taps
(:meth:`Inbound.tap`: a release or a sweep asking the broker what it keeps), and does so
again after every reconnect. A message reaches every tap whose filter matches it; then a
``/set`` of a known device goes to its command, anything else to the handlers of the
standing filters that match it. A handler that fails is logged; the others still run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from gatewayd import homie
from gatewayd.cloud.commands import CommandRunner
from gatewayd.cloud.topics import check_relative, matches

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], None]  # relative topic, payload
Tap = Callable[[str, bytes, bool], None]  # absolute topic, payload, retained


class Inbound:
    """The link's relative filters, and the routing of what matches them (and of
    ``/set`` topics of ``devices`` to ``commands``)."""

    def __init__(self, devices: Mapping[str, homie.Device], commands: CommandRunner) -> None:
        self._devices = devices
        self._commands = commands
        self._subscriptions: dict[str, MessageHandler] = {}
        self._taps: dict[str, Tap] = {}

    def filters(self) -> list[str]:
        """Every filter to subscribe to after a connect (relative to the root)."""
        return [*self._subscriptions, *self._taps]

    def subscribe(self, topic_filter: str, handler: MessageHandler) -> None:
        check_relative(topic_filter, wildcards=True)
        self._subscriptions[topic_filter] = handler

    def tap(self, topic_filter: str, handler: Tap | None) -> None:
        """Add a tap, or (``handler`` None) remove it."""
        check_relative(topic_filter, wildcards=True)
        if handler is None:
            self._taps.pop(topic_filter, None)
        else:
            self._taps[topic_filter] = handler

    def route(self, root: str, topic: str, payload: bytes, retained: bool) -> None:
        """One message from the broker; nothing outside ``root`` goes anywhere."""
        if not root or not topic.startswith(f"{root}/"):
            return
        relative = topic[len(root) + 1:]
        for topic_filter, tap in list(self._taps.items()):
            if matches(topic_filter, relative):
                tap(topic, payload, retained)
        parsed = homie.parse_set_topic(root, topic)
        if parsed is not None and parsed[0] in self._devices:
            self._commands.dispatch(self._devices[parsed[0]], parsed[1], payload, retained)
            return
        for topic_filter, handler in self._subscriptions.items():
            if matches(topic_filter, relative):
                try:
                    handler(relative, payload)
                except Exception:
                    log.exception("cloud link: handler for %s failed", topic_filter)
