"""Whether the hub shows its cloud as reachable: the link's ups and downs, after a grace.

Onboarding says ``online`` from the moment its cloud step succeeded; the link may drop
afterwards, and reconnects by itself (cloud.md) without onboarding moving. What the hub
*shows* follows the link as well: once the link has been down for :data:`CLOUD_GRACE`
seconds, an ``online`` hub shows itself unreachable (the LED's ``offline`` pattern,
``online: cloud unreachable, reconnecting`` in systemd's STATUS=, the panel's badge) until
the link is back. A reconnect within the grace (a broker restarted, a Wi-Fi hiccup) shows
nothing. Presentation only: the onboarding state stays ``online``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gatewayd.cloud.attempts import CloudOutcome, CloudResult
from gatewayd.cloud.link import CloudLink

log = logging.getLogger(__name__)

# Seconds the link may be down before the hub shows it: longer than a broker's restart
# and the link's first reconnects (reconnect_min 1 s, doubling, with jitter).
CLOUD_GRACE = 10.0
# What systemd's STATUS= adds to "online" while the cloud is shown unreachable.
UNREACHABLE_TEXT = "cloud unreachable, reconnecting"

PresenceListener = Callable[[bool], None]  # called with ``reachable`` when it changes


class CloudPresence:
    """Follows the link (a :meth:`CloudLink.add_listener` listener); :attr:`reachable` is
    False once it has been down for ``grace`` seconds, True again when it connects."""

    def __init__(self, link: CloudLink, grace: float = CLOUD_GRACE) -> None:
        self._link = link
        self.grace = grace
        self.reachable = True
        self._timer: asyncio.TimerHandle | None = None
        self._listeners: list[PresenceListener] = []
        link.add_listener(self._on_result)

    def subscribe(self, listener: PresenceListener) -> None:
        self._listeners.append(listener)

    def status_text(self, state: str, text: str) -> str:
        """The onboarding part of STATUS= (``text``, in ``state``), as the hub shows it."""
        return f"{text}: {UNREACHABLE_TEXT}" if state == "online" and not self.reachable \
            else text

    def _on_result(self, result: CloudResult) -> None:
        if result.outcome == CloudOutcome.CONNECTED:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._set(True)
        elif self._timer is None and self.reachable:
            # The link lost its connection (or failed to make one): shown after the grace.
            self._timer = asyncio.get_running_loop().call_later(self.grace, self._grace_over)

    def _grace_over(self) -> None:
        self._timer = None
        # A link stopped meanwhile (a reset, the daemon stopping) is not trying: no news.
        if not self._link.connected and self._link.status()["started"]:
            self._set(False)

    def _set(self, reachable: bool) -> None:
        if reachable == self.reachable:
            return
        self.reachable = reachable
        if not reachable:
            log.info("cloud link: down for over %g s: shown as unreachable until it "
                     "reconnects", self.grace)
        for listener in list(self._listeners):
            try:
                listener(reachable)
            except Exception:
                log.exception("cloud presence: listener failed")
