"""The REQ/RES API: request/response over the cloud link's MQTT connection.

``await api.request("endpoint", {...})`` publishes
``<root>/req/<device-id>/<endpoint>`` = ``{"data": ..., "key": ..., "id": ...}`` and waits
for ``<root>/res/<device-id>/<endpoint>`` = ``{"status", "code", "id", "data"}`` with the
same id; ``data`` is encrypted by the platform (see :mod:`gatewayd.cloud.reqres_cipher` and
docs/cloud.md for the exact format).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any

from gatewayd.cloud.link import CloudLink
from gatewayd.cloud.reqres_cipher import AesGcmV1, AuthenticationFailed, CipherError, ReqResCipher

log = logging.getLogger(__name__)

ENDPOINT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
MAX_RESPONSE = 1024 * 1024


class ReqResError(Exception):
    """Base of every REQ/RES failure."""


class CloudOffline(ReqResError):
    """The cloud link is not connected; nothing was sent."""


class TooManyRequests(ReqResError):
    """The bound on requests in flight is reached."""


class RequestTimeout(ReqResError):
    """No response arrived in time."""


class RequestFailed(ReqResError):
    """The platform answered with status 0."""

    def __init__(self, endpoint: str, code: int | None, message: str) -> None:
        self.endpoint = endpoint
        self.code = code
        self.message = message
        super().__init__(f"{endpoint}: the platform refused the request (code {code}): "
                         f"{message}")


class ResponseAuthError(ReqResError):
    """The response's data failed authentication (tampered, or encrypted with another key)."""


class ResponseFormatError(ReqResError):
    """The response is not in the documented format."""


@dataclass
class _Pending:
    endpoint: str
    future: asyncio.Future[dict[str, Any]]


class ReqResClient:
    """Requests on behalf of one device (the hub) through a :class:`CloudLink`."""

    def __init__(self, link: CloudLink, device_key: bytes, *, device_id: str | None = None,
                 max_pending: int = 32, cipher: ReqResCipher | None = None) -> None:
        if len(device_key) != 32:
            raise ValueError("the device key must be 32 bytes")
        self._link = link
        self._device_key = device_key
        self._device_id = device_id or link.hub.id
        self._max_pending = max_pending
        self._cipher = cipher or AesGcmV1()
        self._pending: dict[str, _Pending] = {}
        link.add_subscription(f"res/{self._device_id}/+", self._on_response)

    async def request(self, endpoint: str, data: Any = None, timeout: float = 10.0) -> Any:
        """Send a request; the decrypted response data.

        Raises CloudOffline, TooManyRequests, RequestTimeout, RequestFailed (status 0),
        ResponseAuthError or ResponseFormatError.
        """
        if not ENDPOINT_RE.match(endpoint):
            raise ValueError(f"invalid endpoint {endpoint!r}: letters, digits, '_', '.', '-'")
        if not self._link.connected:
            raise CloudOffline(f"{endpoint}: the cloud link is not connected")
        if len(self._pending) >= self._max_pending:
            raise TooManyRequests(f"{endpoint}: {self._max_pending} requests already waiting")
        request_id = secrets.token_hex(16)
        key = self._cipher.request_key(self._device_key, request_id)
        body = json.dumps({"data": data, "key": self._cipher.encode_key(key),
                           "id": request_id})
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = _Pending(endpoint, future)
        try:
            self._link.publish(f"req/{self._device_id}/{endpoint}", body)
            response = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise RequestTimeout(f"{endpoint}: no response within {timeout:g} s") from None
        finally:
            self._pending.pop(request_id, None)
        return self._open(endpoint, key, response)

    def _open(self, endpoint: str, key: bytes, response: dict[str, Any]) -> Any:
        status = response.get("status")
        code = response.get("code")
        if isinstance(code, bool) or not isinstance(code, int | None):
            raise ResponseFormatError(f"{endpoint}: 'code' must be a number")
        if status not in (0, 1) or isinstance(status, bool):
            raise ResponseFormatError(f"{endpoint}: 'status' must be 0 or 1, got {status!r}")
        data = response.get("data")
        if status == 0:
            raise RequestFailed(endpoint, code, self._failure_message(key, data))
        if not isinstance(data, str):
            raise ResponseFormatError(f"{endpoint}: 'data' must be a base64 string")
        try:
            plaintext = self._cipher.open(key, data)
        except AuthenticationFailed:
            raise ResponseAuthError(f"{endpoint}: the response failed authentication "
                                    "(tampered, or encrypted with another key)") from None
        except CipherError as exc:
            raise ResponseFormatError(f"{endpoint}: {exc}") from None
        try:
            return json.loads(plaintext.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ResponseFormatError(f"{endpoint}: the decrypted data is not JSON") from None

    def _failure_message(self, key: bytes, data: Any) -> str:
        # A failure may carry encrypted details ({"message": ...}); only authenticated text
        # is shown, anything else is reduced to a generic sentence.
        if isinstance(data, str) and data:
            try:
                details = json.loads(self._cipher.open(key, data))
            except (CipherError, UnicodeDecodeError, json.JSONDecodeError):
                return "no details (the error data did not authenticate)"
            if isinstance(details, dict) and isinstance(details.get("message"), str):
                return str(details["message"])
            return json.dumps(details)[:200]
        return "no details"

    def _on_response(self, topic: str, payload: bytes) -> None:
        endpoint = topic.rsplit("/", 1)[-1]
        if len(payload) > MAX_RESPONSE:
            log.warning("reqres: ignoring a %d-byte response on %s", len(payload), topic)
            return
        try:
            response = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            log.warning("reqres: ignoring a response on %s that is not JSON", topic)
            return
        if not isinstance(response, dict) or not isinstance(response.get("id"), str):
            log.warning("reqres: ignoring a response on %s without an id", topic)
            return
        pending = self._pending.get(response["id"])
        if pending is None or pending.endpoint != endpoint:
            log.debug("reqres: response %s on %s matches no request", response["id"], topic)
            return
        if not pending.future.done():
            pending.future.set_result(response)
