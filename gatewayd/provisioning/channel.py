"""One MQTT session to the platform's provisioning endpoint, for one operation.

It reuses the cloud link's connection (:class:`gatewayd.cloud.net.Connection`: the
same failure classification, TLS rules, backoff with jitter and Nagle off) with a sink of
its own: requests are matched to answers by id, a request still unanswered after a
reconnect is sent again (same id: the platform answers a repeated id again), and at most
:data:`MAX_PENDING` wait. No will, no retained messages: the session leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from gatewayd.cloud.attempts import CloudOutcome, CloudResult
from gatewayd.cloud.endpoint import Endpoint, Opener
from gatewayd.cloud.net import Connection
from gatewayd.config import CloudConfig
from gatewayd.provisioning import codec

log = logging.getLogger(__name__)

MAX_PENDING = 4  # one flow runs at a time; a little room for a resend


class ChannelError(Exception):
    """No usable answer: the endpoint did not answer in time, or the session failed."""


class ProvisioningChannel:
    """Runs on the asyncio loop; the paho thread reaches it only through the loop."""

    def __init__(self, endpoint: Endpoint, user: str, password: str, operation: str,
                 link: CloudConfig, *, opener: Opener | None = None) -> None:
        self.endpoint = endpoint
        self._opener = opener  # as the cloud link's connections (gatewayd.cloud.endpoint)
        self.user = user
        self.operation = operation
        self._password = password
        self._link = link
        self._conn: Connection | None = None
        self._pending: dict[str, tuple[str, str, asyncio.Future[codec.Answer]]] = {}
        self._outcome: asyncio.Future[CloudResult] | None = None
        self._latest: CloudResult | None = None
        self._subscribed = asyncio.Event()
        self.connected = False
        self._closing = False
        self.dropped = 0  # answers that did not parse or matched no request

    # ---- lifecycle -----------------------------------------------------------------------

    async def open(self, timeout: float) -> CloudResult:
        """Connect and subscribe to this operation's answers. Returns ``connected``, or the
        first refusal, or (after ``timeout`` of failed attempts) the latest failure."""
        loop = asyncio.get_running_loop()
        self._outcome = loop.create_future()
        self._conn = Connection(
            self.endpoint, username=self.user, password=self._password,
            client_id=self.operation, protocol=self._link.protocol,
            keepalive=self._link.keepalive, connect_timeout=min(timeout, 30.0), will=None,
            reconnect_min=self._link.reconnect_min,
            reconnect_max=min(self._link.reconnect_max, 10.0), loop=loop, sink=self,
            opener=self._opener)
        self._conn.start()
        try:
            result = await asyncio.wait_for(asyncio.shield(self._outcome), timeout)
        except TimeoutError:
            result = self._latest or CloudResult(
                CloudOutcome.TIMEOUT, f"no answer from the provisioning endpoint "
                                      f"{self.endpoint} within {timeout:g} s")
        if result.outcome != CloudOutcome.CONNECTED:
            return result
        try:
            await asyncio.wait_for(self._subscribed.wait(), timeout)
        except TimeoutError:
            return CloudResult(CloudOutcome.TIMEOUT, "the provisioning endpoint did not "
                                                     "confirm the subscription")
        return result

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        self._closing = True
        for _, _, future in self._pending.values():
            future.cancel()
        self._pending.clear()
        if conn is not None:
            conn.stop()
            if not await conn.join(5):
                log.warning("provisioning: the connection did not end in time")

    async def request(self, action: str, data: dict[str, Any], timeout: float) -> codec.Answer:
        """Send one request and wait for its answer; ChannelError after ``timeout``."""
        if self._conn is None:
            raise ChannelError("the provisioning session is closed")
        if len(self._pending) >= MAX_PENDING:
            raise ChannelError("too many provisioning requests waiting")
        request_id = secrets.token_hex(16)
        body = codec.request_body(request_id, data)
        future: asyncio.Future[codec.Answer] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (action, body, future)
        try:
            self._send(action, body)
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise ChannelError(f"the platform did not answer {action!r} within "
                               f"{timeout:g} s") from None
        finally:
            self._pending.pop(request_id, None)
            future.cancel()

    def _send(self, action: str, body: str) -> None:
        if self._conn is not None:
            topic = codec.request_topic(self.user, self.operation, action)
            self._conn.publish(topic, body.encode("utf-8"), qos=1, retain=False)

    # ---- ConnectionSink (on the loop) ----------------------------------------------------

    def on_connected(self, gen: int, local_ip: str) -> None:
        del gen, local_ip
        self.connected = True
        if self._conn is not None:
            self._conn.subscribe([codec.response_topic(self.user, self.operation, "+")])
        self._settle(CloudResult(CloudOutcome.CONNECTED, f"connected to {self.endpoint}"))

    def on_subscribed(self, mid: int, refused: list[str]) -> None:
        del mid
        if refused:
            log.error("provisioning: the endpoint refused the answer subscription (%s)",
                      ", ".join(refused))
            return
        first = not self._subscribed.is_set()
        self._subscribed.set()
        if not first:  # a reconnect: what waits may have been lost with the connection
            for action, body, future in list(self._pending.values()):
                if not future.done():
                    self._send(action, body)

    def on_connect_failed(self, gen: int, result: CloudResult) -> None:
        del gen
        self._latest = result
        if result.credentials_refused:
            self._settle(result)  # retrying a refused password helps nobody
        # Any other refusal is the broker's (busy, moved, a client id it will not take):
        # the connection tries again, backing off, until open() gives up.

    def on_connection_lost(self, gen: int, reason: str) -> None:
        del gen
        self.connected = False
        if not self._closing:
            log.info("provisioning: %s; reconnecting", reason)

    def on_published(self, gen: int, mid: int) -> None:
        del gen, mid

    def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        del retained
        try:
            request_id, answer = codec.parse_answer(payload)
        except codec.CodecError as exc:
            self.dropped += 1
            log.warning("provisioning: dropped an answer on %s: %s", topic, exc)
            return
        entry = self._pending.get(request_id)
        expected = codec.response_topic(self.user, self.operation, entry[0]) if entry else ""
        if entry is None or entry[2].done() or topic != expected:
            self.dropped += 1  # late, repeated, or for a request this hub did not send
            return
        entry[2].set_result(answer)

    def _settle(self, result: CloudResult) -> None:
        if self._outcome is not None and not self._outcome.done():
            self._outcome.set_result(result)
