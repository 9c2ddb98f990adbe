"""The platform client: the hub's requests to the platform over REQ/RES.

``await platform.request("endpoint", {...})`` publishes
``<root>/req/<device-id>/<endpoint>`` = ``{"data": ..., "key": ..., "id": ...}`` and waits
for ``<root>/res/<device-id>/<endpoint>`` = ``{"status", "code", "id", "data"}`` with the
same id; ``data`` is encrypted by the platform with the request's key (see
:mod:`gatewayd.cloud.reqres_cipher` and docs/cloud.md for the exact format).

One client per daemon, owned by the cloud link; the hub's own flows, plugins
(``ctx.platform``) and ``gatewayctl platform request`` all use it. What it promises:

* requests are matched to responses by id (and endpoint), and time out cleanly: nothing
  stays pending after its timeout, and a request that timed out (or whose caller gave up)
  before the broker had it is never sent;
* a request survives one reconnect: if the broker had it before the link dropped (the
  response may be lost with the connection), it is sent again, once, with the same id
  after the link is back; if the link drops again before the answer it fails with
  :class:`LinkLost`. A request the broker never had simply goes out from the link's
  outbox after the reconnect;
* at most ``max_pending`` requests wait in total and ``max_per_caller`` per caller, and
  ``max_per_caller`` of the total are the hub's own (caller ``hub``): plugins and
  ``gatewayctl`` together cannot crowd out its token refresh or an account's release;
* late, duplicate, unknown-id, malformed and undecryptable responses (a failure's data
  included) are dropped with a log line and counted, never raised: a forged answer cannot
  cut a request short (but a failure without data, which the protocol allows the platform
  to send, cannot be authenticated: only the broker's ACL on the response topic guards
  it); if no genuine answer comes, the timeout says how many were dropped and why. An
  answer that cannot be matched by its id (too large, not JSON, no id) counts against every
  request waiting on the endpoint its topic names; one whose id came on another endpoint's
  topic, against the request of that id;
* a request over ``MAX_REQUEST`` bytes on the wire is deprecated (sent, with a warning once
  per caller and endpoint; refused from 0.2); the text of a refusal is shown cut to
  ``MAX_MESSAGE`` characters, its control characters replaced.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from gatewayd.cloud.attempts import CloudOutcome, CloudResult
from gatewayd.cloud.reqres_cipher import (
    AesGcmV1,
    AuthenticationFailed,
    CipherError,
    ReqResCipher,
)
from gatewayd.runtime.jsonbody import BadBody, loads

log = logging.getLogger(__name__)

# One or two topic levels (``echo``, ``rfid/authorize``): letters, digits, '_', '.', '-'.
_LEVEL = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}"
ENDPOINT_RE = re.compile(rf"{_LEVEL}(/{_LEVEL})?")
MAX_RESPONSE = 1024 * 1024
MAX_REQUEST = 64 * 1024  # bytes of a request on the wire, {"data", "key", "id"} (interfaces.md)
# A request's bytes besides its data: the JSON frame, a key of 32 bytes in base64, a
# 32-digit id. json.dumps escapes all but ASCII, so characters are bytes.
_FRAME = len(json.dumps({"data": None, "key": "=" * 44, "id": "0" * 32})) - len("null")
MAX_WARNED = 64  # (caller, endpoint) pairs whose oversized requests were said
MAX_MESSAGE = 500  # characters of the platform's refusal shown
# What a line of text must not carry to a terminal or a log: C0 and C1 controls, DEL, the
# Unicode line and paragraph separators and the bidirectional overrides.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
MAX_TIMEOUT = 300.0
HUB = "hub"  # the caller of the hub's own flows, who has slots no other caller can take


class PlatformError(Exception):
    """A request that did not get a successful answer.

    ``status`` is the platform's (0) when it answered, None otherwise; ``code`` is an
    HTTP-style code: the platform's own, or 503 (offline, link lost), 429 (too many
    requests waiting), 504 (no answer in time).
    """

    status: int | None = None
    code = 500
    error_code = "platform-error"  # what the control socket's API answers (interfaces.md)

    def __init__(self, endpoint: str, message: str) -> None:
        super().__init__(f"{endpoint}: {message}")
        self.endpoint = endpoint
        self.message = message

    def to_json(self) -> dict[str, Any]:
        return {"error": self.error_code, "endpoint": self.endpoint, "status": self.status,
                "code": self.code, "message": self.message}


class CloudOffline(PlatformError):
    """The cloud link is not connected; nothing was sent."""

    code = 503
    error_code = "cloud-offline"


class LinkLost(PlatformError):
    """The link dropped twice while the request waited; it was sent twice already."""

    code = 503
    error_code = "link-lost"


class TooManyRequests(PlatformError):
    """The bound on requests waiting (in total, of callers other than the hub, or of this
    caller) is reached."""

    code = 429
    error_code = "too-many-requests"


class RequestTimeout(PlatformError):
    """No genuine answer arrived in time."""

    code = 504
    error_code = "timeout"


class RequestFailed(PlatformError):
    """The platform answered with status 0 and its own code."""

    status = 0
    error_code = "platform-refused"

    def __init__(self, endpoint: str, code: int | None, message: str) -> None:
        said = f"code {code}" if code is not None else "without a code"
        super().__init__(endpoint, f"the platform refused the request ({said}): {message}")
        self.code = code if code is not None else 500
        self.message = message


class BadRequest(ValueError):
    """A request the client refuses before sending it (its endpoint, timeout or data); the
    message names what is wrong, for whoever made the request."""


def check_request(endpoint: object, timeout: object, data: object = None) -> int:
    """:class:`BadRequest` unless ``endpoint``, ``timeout`` and ``data`` are a request's
    (data JSON can write); the bytes the request will be on the wire."""
    if not isinstance(endpoint, str) or not ENDPOINT_RE.fullmatch(endpoint):
        raise BadRequest(f"endpoint: {endpoint!r} is not one or two levels of letters, digits, "
                         "'_', '.' and '-', such as echo or rfid/authorize")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) \
            or not 0 < timeout <= MAX_TIMEOUT:
        raise BadRequest(f"timeout: a number of seconds, above 0 and at most {MAX_TIMEOUT:g}")
    try:
        # allow_nan=False: Python writes NaN and Infinity, which are not JSON and which a
        # platform's parser may refuse or read differently.
        return len(json.dumps(data, allow_nan=False)) + _FRAME
    except (TypeError, ValueError):
        raise BadRequest("data: must be JSON: objects with text keys, lists, text, "
                         "finite numbers, true, false and null") from None


def shown(text: str) -> str:
    """The platform's text as a message may show it: one line, no control characters
    (replaced), at most ``MAX_MESSAGE`` characters (saying it was cut)."""
    line = _CONTROL.sub(lambda m: " " if m.group() in "\t\n\r\v\f\u2028\u2029" else "\ufffd",
                        text[:MAX_MESSAGE])
    return line if len(text) <= MAX_MESSAGE else \
        f"{line}... (cut: {len(text)} characters in all)"


class Link(Protocol):
    """What the client needs of the cloud link."""

    @property
    def connected(self) -> bool: ...

    def publish(self, topic: str, payload: str, *, retain: bool = False,
                done: asyncio.Future[bool] | None = None) -> None:
        """Queue ``payload`` on ``<root>/<topic>``; ``done`` resolves True on the broker's
        PUBACK, and cancelling it withdraws a publication not yet acknowledged."""

    def add_subscription(self, topic_filter: str, handler: Any) -> None: ...

    def add_listener(self, listener: Any) -> None: ...


@dataclass(eq=False)
class _Pending:
    endpoint: str
    caller: str
    key: bytes
    body: str
    future: asyncio.Future[Any]
    acked: asyncio.Future[bool] | None = None  # the latest sending's, from the link
    on_broker: bool = False  # the broker acknowledged (a) sending
    resent: bool = False
    # Answers dropped while it waited, which its timeout names: why -> (how many, the
    # first one's detail); at most one entry for each of _DROPPED's reasons.
    dropped: dict[str, tuple[int, str]] = field(default_factory=dict)

    def count_drop(self, why: str, detail: str) -> None:
        count, first = self.dropped.get(why, (0, detail))
        self.dropped[why] = count + 1, first


# What a timeout says of the answers dropped while the request waited ({was}: was or were).
_DROPPED = {
    "too-large": f"{{was}} too large ({{detail}}, at most {MAX_RESPONSE // (1024 * 1024)} MiB)",
    "malformed": "{was} malformed ({detail})",
    "unauthentic": "failed authentication",
    "other-endpoint": "came with its id on another endpoint's topic ({detail})",
}


def _dropped_note(dropped: dict[str, tuple[int, str]]) -> str:
    """`` (an answer was too large (...) and was dropped; 2 answers ...)``, or nothing."""
    said = []
    for why, (count, detail) in dropped.items():
        was = "was" if count == 1 else "were"
        subject = "an answer" if count == 1 else f"{count} answers"
        detail = detail if count == 1 else f"first: {detail}"
        said.append(f"{subject} {_DROPPED[why].format(was=was, detail=detail)} and {was} "
                    "dropped")
    return f" ({'; '.join(said)})" if said else ""


@dataclass
class _Counts:
    sent: int = 0
    answered: int = 0
    refused: int = 0
    timeouts: int = 0
    resent: int = 0
    dropped: Counter[str] = field(default_factory=Counter)


class PlatformClient:
    """Requests on behalf of one device (the hub) through the cloud link."""

    def __init__(self, link: Link, device_key: bytes, device_id: str, *,
                 max_pending: int = 32, max_per_caller: int = 8,
                 cipher: ReqResCipher | None = None) -> None:
        if len(device_key) != 32:
            raise ValueError("the device key must be 32 bytes")
        self._link = link
        self._device_key = device_key
        self.device_id = device_id
        self.max_pending = max_pending
        self.max_per_caller = max_per_caller
        # None until the first request: the default cipher imports cryptography (7 MB),
        # which a hub that never asks the platform anything does without.
        self._cipher: ReqResCipher | None = cipher
        self._pending: dict[str, _Pending] = {}
        self._counts = _Counts()
        self._warned: set[tuple[str, str]] = set()  # (caller, endpoint): oversized, said
        link.add_subscription(f"res/{device_id}/#", self._on_response)
        link.add_listener(self._on_link)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def request(self, endpoint: str, data: Any = None, *, timeout: float = 10.0,
                      caller: str = HUB) -> Any:
        """Send a request; the decrypted response data.

        Raises a :class:`PlatformError`: :class:`CloudOffline`, :class:`TooManyRequests`,
        :class:`RequestTimeout`, :class:`LinkLost` or :class:`RequestFailed` (status 0),
        and :class:`BadRequest` for a bad endpoint or timeout, or data that is not JSON.
        A request over ``MAX_REQUEST`` bytes is sent with a warning (deprecated: refused
        from 0.2; interfaces.md section 9).
        """
        size = check_request(endpoint, timeout, data)
        if size > MAX_REQUEST:
            self._oversized(caller, endpoint, size)
        cipher = self._cipher
        if cipher is None:
            # An import: in a thread, so that the event loop is not held after READY; before
            # the checks below, so that nothing can change between them and the send.
            cipher = self._cipher = await asyncio.to_thread(AesGcmV1)
        if not self._link.connected:
            raise CloudOffline(endpoint, "the cloud link is not connected")
        if len(self._pending) >= self.max_pending:
            raise TooManyRequests(endpoint, f"{self.max_pending} requests are already waiting")
        shared = self.max_pending - self.max_per_caller
        others = sum(1 for p in self._pending.values() if p.caller != HUB)
        if caller != HUB and others >= shared:
            raise TooManyRequests(endpoint, f"{others} requests of plugins and gatewayctl are "
                                            f"already waiting (the other {self.max_per_caller} "
                                            "are kept for the hub's own)")
        mine = sum(1 for p in self._pending.values() if p.caller == caller)
        if mine >= self.max_per_caller:
            raise TooManyRequests(endpoint, f"{caller} has {mine} requests waiting already")
        request_id = secrets.token_hex(16)
        key = cipher.request_key(self._device_key, request_id)
        body = json.dumps({"data": data, "key": cipher.encode_key(key), "id": request_id},
                          allow_nan=False)  # checked above
        loop = asyncio.get_running_loop()
        pending = _Pending(endpoint, caller, key, body, loop.create_future())
        self._pending[request_id] = pending
        try:
            self._send(request_id, pending)
            return await asyncio.wait_for(asyncio.shield(pending.future), timeout)
        except TimeoutError:
            self._counts.timeouts += 1
            raise RequestTimeout(endpoint, f"no response within {timeout:g} s"
                                           f"{_dropped_note(pending.dropped)}") from None
        finally:
            self._pending.pop(request_id, None)
            pending.future.cancel()
            if pending.acked is not None:
                # Withdrawn from the link: still waiting in its outbox, or in flight when the
                # connection drops, it would reach the platform after its caller was told
                # it failed (the link never sends a publication whose future is cancelled).
                pending.acked.cancel()

    def status(self) -> dict[str, Any]:
        """The ``platform`` part of ``gatewayctl status``: counts, never data."""
        c = self._counts
        return {"pending": len(self._pending), "sent": c.sent, "answered": c.answered,
                "refused": c.refused, "timeouts": c.timeouts, "resent": c.resent,
                "dropped": dict(sorted(c.dropped.items()))}

    # ---- sending ----------------------------------------------------------------------------

    def _oversized(self, caller: str, endpoint: str, size: int) -> None:
        """Until 0.2 a request of any size went out, and a plugin may rely on that
        (interfaces.md section 1: a tightening needs a release of notice)."""
        if (caller, endpoint) in self._warned or len(self._warned) >= MAX_WARNED:
            return
        self._warned.add((caller, endpoint))
        log.warning("platform request %s from %s is %d bytes, over the %d a request may be: "
                    "sent, but deprecated: gatewayd 0.2 refuses it before sending (the "
                    "simulated platform already answers 413)", endpoint, caller, size,
                    MAX_REQUEST)

    def _send(self, request_id: str, pending: _Pending) -> None:
        acked: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        acked.add_done_callback(lambda f: self._acked(request_id, f))
        pending.acked = acked
        self._link.publish(f"req/{self.device_id}/{pending.endpoint}", pending.body, done=acked)
        self._counts.sent += 1

    def _acked(self, request_id: str, acked: asyncio.Future[bool]) -> None:
        pending = self._pending.get(request_id)
        if pending is not None and not acked.cancelled() and acked.result():
            pending.on_broker = True

    def _on_link(self, result: CloudResult) -> None:
        """After a reconnect: send again, once, what the broker had taken already."""
        if result.outcome != CloudOutcome.CONNECTED:
            return
        for request_id, pending in list(self._pending.items()):
            if not pending.on_broker or pending.future.done():
                continue  # still in the outbox: it goes out now anyway
            if pending.resent:
                pending.future.set_exception(LinkLost(
                    pending.endpoint, "the cloud link dropped twice while waiting for the "
                                      "answer; the request was sent twice"))
                continue
            pending.resent, pending.on_broker = True, False
            self._counts.resent += 1
            log.info("platform: %s sent again after a reconnect (request %s)",
                     pending.endpoint, request_id[:8])
            self._send(request_id, pending)

    # ---- answers ----------------------------------------------------------------------------

    def _drop(self, why: str, topic: str, detail: str = "") -> None:
        self._counts.dropped[why] += 1
        log.warning("platform: dropped a response on %s: %s%s", topic, why.replace("-", " "),
                    f" ({detail})" if detail else "")

    def _drop_unmatched(self, why: str, topic: str, endpoint: str, detail: str) -> None:
        """An answer without an id to match: it may have been the answer to any request
        waiting on the endpoint its topic names, and each one's timeout says so."""
        self._drop(why, topic, detail)
        for pending in self._pending.values():
            if pending.endpoint == endpoint and not pending.future.done():
                pending.count_drop(why, detail)

    def _on_response(self, topic: str, payload: bytes) -> None:
        endpoint = topic.split("/", 2)[2] if topic.count("/") >= 2 else ""
        if len(payload) > MAX_RESPONSE:
            self._drop_unmatched("too-large", topic, endpoint, f"{len(payload)} bytes")
            return
        try:
            response = loads(payload, "the response")
        except BadBody as exc:
            self._drop_unmatched("malformed", topic, endpoint, str(exc))
            return
        if not isinstance(response, dict) or not isinstance(response.get("id"), str):
            self._drop_unmatched("malformed", topic, endpoint, "no id")
            return
        pending = self._pending.get(response["id"])
        if pending is None or pending.future.done():
            # Late (after its timeout), a duplicate, or for a request we never sent.
            self._drop("unknown-id", topic, f"id {response['id'][:8]}")
            return
        if pending.endpoint != endpoint:
            self._drop("unknown-id", topic, "the id belongs to another endpoint")
            pending.count_drop("other-endpoint", shown(endpoint))
            return
        try:
            outcome = self._open(pending, response)
        except CipherError as exc:
            why = "unauthentic" if isinstance(exc, AuthenticationFailed) else "malformed"
            self._drop(why, topic, str(exc))
            pending.count_drop(why, str(exc))
            return
        if isinstance(outcome, RequestFailed):
            self._counts.refused += 1
            pending.future.set_exception(outcome)
        else:
            self._counts.answered += 1
            pending.future.set_result(outcome)

    def _open(self, pending: _Pending, response: dict[str, Any]) -> Any:
        """The answer's value (or a RequestFailed); CipherError for one to drop."""
        status, code, data = response.get("status"), response.get("code"), response.get("data")
        if isinstance(code, bool) or not isinstance(code, int | None):
            raise CipherError("'code' must be a number")
        if status not in (0, 1) or isinstance(status, bool):
            raise CipherError(f"'status' must be 0 or 1, got {status!r}")
        if status == 0:
            return RequestFailed(pending.endpoint, code, self._failure_message(pending.key,
                                                                               data))
        if not isinstance(data, str):
            raise CipherError("'data' must be a base64 string")
        assert self._cipher is not None  # made by the request this answers
        plaintext = self._cipher.open(pending.key, data)
        try:
            return loads(plaintext, "the decrypted data")
        except BadBody as exc:
            raise CipherError(str(exc)) from None

    def _failure_message(self, key: bytes, data: Any) -> str:
        """A failure's message: its encrypted details' ``message``, or "no details" for a
        failure without data (which the protocol allows). A failure whose data does not
        authenticate raises CipherError: it is dropped like a forged success, not taken
        as the answer."""
        if data is None or data == "":
            return "no details"
        if not isinstance(data, str):
            raise CipherError("'data' must be a base64 string")
        assert self._cipher is not None  # made by the request this answers
        try:
            details = loads(self._cipher.open(key, data), "the error data")
        except BadBody as exc:
            raise CipherError(str(exc)) from None
        if isinstance(details, dict) and isinstance(details.get("message"), str):
            return shown(details["message"])
        return shown(json.dumps(details))
