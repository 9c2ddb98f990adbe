"""REQ/RES response protection: AES-256-GCM under a fresh key per request.

This module is the one replaceable piece of the REQ/RES API's cryptography;
:mod:`gatewayd.cloud.reqres` only calls a :class:`ReqResCipher`. Format ``v1`` (docs/cloud.md):

* per request the hub derives ``K = HKDF-SHA256(ikm=device_key, salt=none,
  info="gatewayd reqres v1 " + id, length=32)`` and sends ``key = base64(K)``;
  the 32-byte device key itself never leaves the hub;
* the platform answers with ``data = base64(nonce || ciphertext || tag)``: a random 12-byte
  nonce, AES-256-GCM under ``K`` of the UTF-8 JSON of the response data, the 16-byte tag;
  no associated data (``K`` is unique to the request, so a response cannot be replayed
  onto another request);
* base64 is the standard alphabet with padding (RFC 4648 section 4).

A platform that knows the device key (a vendor-provisioned one) can also recompute ``K``
and so check that a request really comes from the hub.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
INFO_PREFIX = b"gatewayd reqres v1 "


class CipherError(Exception):
    """The response's ``data`` cannot be trusted."""


class AuthenticationFailed(CipherError):
    """The tag did not verify: tampered data or a different key."""


class MalformedCiphertext(CipherError):
    """Not base64, or too short to hold nonce and tag."""


class ReqResCipher(Protocol):
    def request_key(self, device_key: bytes, request_id: str) -> bytes: ...
    def encode_key(self, key: bytes) -> str: ...
    def open(self, key: bytes, data: str) -> bytes: ...


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise MalformedCiphertext("data is not standard base64") from None


class AesGcmV1:
    """Format v1 as described in the module documentation.

    cryptography is imported when the first cipher is made, not with this module: it is
    7 MB of a minimal hub's RSS (its Rust extension and OpenSSL), and a hub may never
    send a REQ/RES request. Making one is an import, so on the event loop after READY
    it is made in a thread (:class:`gatewayd.cloud.reqres.PlatformClient` does).
    """

    def __init__(self) -> None:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        self._invalid_tag = InvalidTag
        self._sha256 = hashes.SHA256
        self._aesgcm: type[AESGCM] = AESGCM
        self._hkdf = HKDF

    def request_key(self, device_key: bytes, request_id: str) -> bytes:
        if len(device_key) != KEY_SIZE:
            raise ValueError("the device key must be 32 bytes")
        hkdf = self._hkdf(algorithm=self._sha256(), length=KEY_SIZE, salt=None,
                          info=INFO_PREFIX + request_id.encode("utf-8"))
        return hkdf.derive(device_key)

    def encode_key(self, key: bytes) -> str:
        return base64.b64encode(key).decode("ascii")

    def decode_key(self, text: str) -> bytes:
        key = _b64decode(text)
        if len(key) != KEY_SIZE:
            raise MalformedCiphertext("the key must be 32 bytes")
        return key

    def seal(self, key: bytes, plaintext: bytes, nonce: bytes | None = None) -> str:
        """The platform's side (used by tests and shown in the documentation)."""
        nonce = nonce if nonce is not None else os.urandom(NONCE_SIZE)
        if len(nonce) != NONCE_SIZE:
            raise ValueError("the nonce must be 12 bytes")
        return base64.b64encode(nonce + self._aesgcm(key).encrypt(nonce, plaintext, None)).decode()

    def open(self, key: bytes, data: str) -> bytes:
        raw = _b64decode(data)
        if len(raw) < NONCE_SIZE + TAG_SIZE:
            raise MalformedCiphertext("data is too short for nonce and tag")
        try:
            return self._aesgcm(key).decrypt(raw[:NONCE_SIZE], raw[NONCE_SIZE:], None)
        except self._invalid_tag:
            raise AuthenticationFailed("the response failed authentication") from None
