"""The provisioning wire format (docs/provisioning.md), for the hub and the platform alike.

No I/O here: topics, request and answer bodies, the verification code, and sealing the
issued credentials to a key the hub made.

* **Endpoint and user.** The hub connects to the platform's provisioning endpoint (an MQTT
  broker) with the user ``token-<first 16 hex digits of SHA-256(token)>`` and the
  provisioning token as password (token mode), or ``enroll-<template id>`` and the enroll
  password (enroll mode). Its client id is the operation id.
* **Topics.** Requests on ``provisioning/<user>/<operation>/req/<action>``, answers on
  ``provisioning/<user>/<operation>/res/<action>``; a provisioning user may publish and
  read nothing else (the broker's ACL keys both on ``%u`` and ``%c``).
* **Bodies.** Request ``{"id": <32 hex>, "data": {...}}``; answer ``{"id", "status": 1|0,
  "code": <HTTP code>, "data": {...}}``, where a refusal's data is ``{"error", "message"}``.
* **Sealing.** The issued credentials travel as ``{"epk", "sealed"}``: the platform makes an
  ephemeral X25519 key, ``K = HKDF-SHA256(ikm = X25519(ephemeral, hub key), salt = epk ||
  hub public key, info = "gatewayd provisioning v1 " + context, length = 32)``, and
  ``sealed`` is REQ/RES's AES-256-GCM format (:class:`~gatewayd.cloud.reqres_cipher.AesGcmV1`)
  under ``K``. Only the hub that made the key can open it, even when a batch shares one
  provisioning token and another hub reads the same topics.
* **Verification code.** ``SHA-256("gatewayd provisioning code v1 " + operation + public
  key)``, first 8 bytes as a big-endian number, mod 10^6, shown ``123-456``: the hub and the
  platform derive it on their own, so the code the technician sees on the platform matches
  the hub's only if the platform holds this hub's key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gatewayd.cloud.reqres_cipher import AesGcmV1, CipherError
from gatewayd.credentials import CloudCredentials, InvalidField, cloud_from_fields
from gatewayd.runtime.jsonbody import BadBody, loads

TOPIC_ROOT = "provisioning"
SEAL_INFO = b"gatewayd provisioning v1 "
CODE_INFO = b"gatewayd provisioning code v1 "
REFRESH_INFO = b"gatewayd provisioning refresh v1 "
REFRESH_ENDPOINT = "provisioning/refresh"  # REQ/RES, on the cloud link
ACTIONS = ("start", "poll", "enroll")
MAX_MESSAGE = 64 * 1024
# A registration that lasts less would be refreshed in a tight loop. Seconds, not minutes:
# the simulator's tests issue 6-second registrations to watch refreshes happen.
MIN_LIFETIME = 5.0
OPERATION_RE = re.compile(r"[0-9a-f]{32}")
_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}[a-z0-9]")
_RAW = serialization.PublicFormat.Raw


class CodecError(ValueError):
    """A message that does not follow the format; the text says what is wrong with it."""


def token_user(token: str) -> str:
    return "token-" + hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]


def enroll_user(template: str) -> str:
    return f"enroll-{template}"


def request_topic(user: str, operation: str, action: str) -> str:
    return f"{TOPIC_ROOT}/{user}/{operation}/req/{action}"


def response_topic(user: str, operation: str, action: str) -> str:
    return f"{TOPIC_ROOT}/{user}/{operation}/res/{action}"


def split_request_topic(topic: str) -> tuple[str, str, str] | None:
    """(user, operation, action) of a request topic, or None for anything else."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != TOPIC_ROOT or parts[3] != "req" \
            or parts[4] not in ACTIONS or not OPERATION_RE.fullmatch(parts[2]):
        return None
    return parts[1], parts[2], parts[4]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: Any, what: str, size: int | None = None) -> bytes:
    if not isinstance(text, str):
        raise CodecError(f"{what}: must be base64 text")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise CodecError(f"{what}: not standard base64") from None
    if size is not None and len(raw) != size:
        raise CodecError(f"{what}: must be {size} bytes")
    return raw


# ---- keys, the code, sealing ---------------------------------------------------------------

def new_operation() -> tuple[str, bytes]:
    """A fresh operation id and the hub's X25519 private key for it."""
    return secrets.token_hex(16), X25519PrivateKey.generate().private_bytes_raw()


def public_key(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(
        serialization.Encoding.Raw, _RAW)


def verification_code(operation: str, hub_public: bytes) -> str:
    digest = hashlib.sha256(CODE_INFO + operation.encode("ascii") + hub_public).digest()
    number = int.from_bytes(digest[:8], "big") % 1_000_000
    return f"{number // 1000:03d}-{number % 1000:03d}"


def _box_key(shared: bytes, epk: bytes, hub_public: bytes, context: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=epk + hub_public,
                info=SEAL_INFO + context.encode("utf-8")).derive(shared)


def seal_to(hub_public: bytes, context: str, value: Any, *, ephemeral: bytes | None = None,
            nonce: bytes | None = None) -> dict[str, str]:
    """The platform's side: ``value`` (JSON) readable only with the hub's private key."""
    eph = X25519PrivateKey.from_private_bytes(ephemeral) if ephemeral is not None \
        else X25519PrivateKey.generate()
    epk = eph.public_key().public_bytes(serialization.Encoding.Raw, _RAW)
    shared = eph.exchange(X25519PublicKey.from_public_bytes(hub_public))
    key = _box_key(shared, epk, hub_public, context)
    return {"epk": b64(epk),
            "sealed": AesGcmV1().seal(key, json.dumps(value).encode("utf-8"), nonce)}


def open_sealed(private: bytes, context: str, box: Any) -> Any:
    """The hub's side of :func:`seal_to`; CodecError if it is not for this key."""
    if not isinstance(box, dict):
        raise CodecError("credentials: must be an object {\"epk\", \"sealed\"}")
    epk = unb64(box.get("epk"), "credentials.epk", 32)
    me = X25519PrivateKey.from_private_bytes(private)
    mine = me.public_key().public_bytes(serialization.Encoding.Raw, _RAW)
    try:
        shared = me.exchange(X25519PublicKey.from_public_bytes(epk))
        sealed = box.get("sealed")
        if not isinstance(sealed, str):
            raise CodecError("credentials.sealed: must be base64 text")
        plaintext = AesGcmV1().open(_box_key(shared, epk, mine, context), sealed)
        return loads(plaintext, "the sealed credentials")
    except (CipherError, BadBody) as exc:  # our own words: tampered, another key, not JSON
        raise CodecError(f"credentials: cannot be opened with this hub's key ({exc})") from None
    except ValueError:  # cryptography's, for a low-order point: not words for a user
        raise CodecError("credentials: cannot be opened with this hub's key (credentials.epk "
                         "is not a usable X25519 public key)") from None


def refresh_proof(token: str, nonce: bytes, hub_public: bytes) -> str:
    """Proof that a refresh request comes from the holder of the current token."""
    mac = hmac.new(token.encode("utf-8"), REFRESH_INFO + nonce + hub_public, hashlib.sha256)
    return b64(mac.digest())


# ---- requests and answers --------------------------------------------------------------------

def request_body(request_id: str, data: dict[str, Any]) -> str:
    return json.dumps({"id": request_id, "data": data})


@dataclass(frozen=True)
class Answer:
    """A platform answer: status 1 with data, or status 0 with an error code and message."""

    status: int
    code: int
    data: dict[str, Any]

    @property
    def error(self) -> str:
        return str(self.data.get("error") or "")

    @property
    def message(self) -> str:
        text = self.data.get("message")
        return text[:300] if isinstance(text, str) else ""


def parse_answer(payload: bytes) -> tuple[str, Answer]:
    """(request id, answer) of an answer message; CodecError for a malformed one."""
    if len(payload) > MAX_MESSAGE:
        raise CodecError(f"answer too large ({len(payload)} bytes)")
    try:
        body = loads(payload, "answer")
    except BadBody as exc:
        raise CodecError(str(exc)) from None
    if not isinstance(body, dict) or not isinstance(body.get("id"), str):
        raise CodecError("answer has no id")
    status, code, data = body.get("status"), body.get("code", 200), body.get("data", {})
    if status not in (0, 1) or isinstance(status, bool):
        raise CodecError("answer: status must be 0 or 1")
    if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
        raise CodecError("answer: code must be an HTTP status code (100-599)")
    if not isinstance(data, dict):
        raise CodecError("answer: data must be an object")
    return body["id"], Answer(status, code, data)


def parse_request(payload: bytes) -> tuple[str, dict[str, Any]]:
    """The platform's side: (request id, data); CodecError for a malformed one."""
    if len(payload) > MAX_MESSAGE:
        raise CodecError("request too large")
    try:
        body = loads(payload, "request")
    except BadBody as exc:
        raise CodecError(str(exc)) from None
    if not isinstance(body, dict) or not isinstance(body.get("id"), str) \
            or not isinstance(body.get("data"), dict):
        raise CodecError("request needs an id and a data object")
    return body["id"], body["data"]


def seconds(value: Any, least: float = 0.0) -> float | None:
    """``value`` as a finite number of seconds, at least ``least``; None if it is not one
    (JSON from Python carries NaN and Infinity, which compare false with everything, and
    integers of any length, which a float cannot hold: OverflowError, in Python's words)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) and number >= least else None


@dataclass(frozen=True)
class Issued:
    """What an approval or an enrollment hands the hub, once opened and validated."""

    device_id: str
    cloud: CloudCredentials
    expires_in: float | None  # seconds; None: the credentials do not expire


def issued_from(value: Any) -> Issued:
    """Validate opened credentials with the rules every account goes through."""
    if not isinstance(value, dict):
        raise CodecError("credentials: must be an object")
    device_id = value.get("device_id")
    if not isinstance(device_id, str) or not _ID.fullmatch(device_id):
        raise CodecError("credentials.device_id: must be a device id")
    expires_in = value.get("expires_in")
    lifetime = seconds(expires_in, MIN_LIFETIME) if expires_in is not None else None
    if expires_in is not None and lifetime is None:
        raise CodecError(f"credentials.expires_in: must be a number of seconds, at least "
                         f"{MIN_LIFETIME:g}")
    try:
        cloud = cloud_from_fields(
            wsp=value.get("wsp"), token=value.get("token"), host=value.get("host"),
            port=value.get("port"), mqtts_port=value.get("mqtts_port", 0),
            root_topic=value.get("root_topic", ""), mqtt_user=value.get("mqtt_user", ""),
            port_field="port", root_field="root_topic")
    except InvalidField as exc:
        raise CodecError(f"credentials.{exc.field}: {exc.message}") from None
    return Issued(device_id, cloud, lifetime)


def issued_to_json(device_id: str, cloud: CloudCredentials,
                   expires_in: float | None) -> dict[str, Any]:
    """The platform's side of :func:`issued_from`."""
    return {"device_id": device_id, "wsp": cloud.wsp, "token": cloud.token,
            "host": cloud.host, "port": cloud.port, "mqtts_port": cloud.mqtts_port,
            "root_topic": cloud.root_topic, "mqtt_user": cloud.mqtt_user,
            "expires_in": expires_in}
