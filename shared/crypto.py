"""Secrets at rest (AES-256-GCM) and bearer tokens (random, stored as SHA-256)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NONCE_BYTES = 12
_V1 = b"\x01"  # version 1: 0x01 | nonce | ciphertext+tag (key not named: try every key)
_V2 = b"\x02"  # version 2: 0x02 | key id (4 bytes) | nonce | ciphertext+tag
_KEY_ID_BYTES = 4


def key_id(key_b64: str) -> bytes:
    """A short public name for a key (first bytes of its SHA-256), stored with each ciphertext."""
    return hashlib.sha256(b"routines-key-id:" + base64.b64decode(key_b64)).digest()[:_KEY_ID_BYTES]


class SecretBox:
    """Encrypts webhook secrets with a key ring; the trigger id is bound as associated data.

    `keys` is one base64 key, a comma-separated ring, or a sequence: the first key encrypts,
    every key decrypts, so a key can be rotated without downtime (docs/operations.md)."""

    def __init__(self, keys: str | Sequence[str]) -> None:
        ring = [k.strip() for k in keys.split(",")] if isinstance(keys, str) else [k.strip() for k in keys]
        ring = [k for k in ring if k]
        if not ring:
            raise ValueError("a SecretBox needs at least one key")
        self._ring = [(key_id(k), AESGCM(base64.b64decode(k))) for k in ring]
        self._by_id = {kid: aead for kid, aead in reversed(self._ring)}

    @property
    def current_key_id(self) -> bytes:
        return self._ring[0][0]

    def encrypt(self, plaintext: str, context: str) -> bytes:
        kid, aead = self._ring[0]
        nonce = os.urandom(_NONCE_BYTES)
        return _V2 + kid + nonce + aead.encrypt(nonce, plaintext.encode(), context.encode())

    def decrypt(self, blob: bytes, context: str) -> str:
        version = blob[:1]
        if version == _V2:
            kid = blob[1 : 1 + _KEY_ID_BYTES]
            body = blob[1 + _KEY_ID_BYTES :]
            aead = self._by_id.get(kid)
            if aead is None:
                raise ValueError("secret encrypted with a key that is not in the key ring")
            candidates = [aead]
        elif version == _V1:
            body = blob[1:]
            candidates = [aead for _, aead in self._ring]
        else:
            raise ValueError("unknown secret encryption version")
        nonce, sealed = body[:_NONCE_BYTES], body[_NONCE_BYTES:]
        for aead in candidates:
            try:
                return aead.decrypt(nonce, sealed, context.encode()).decode()
            except InvalidTag:
                continue
        raise ValueError("secret does not decrypt with any key in the key ring")

    def is_current(self, blob: bytes) -> bool:
        """True when `blob` is already sealed by the encrypting (first) key."""
        return blob[:1] == _V2 and blob[1 : 1 + _KEY_ID_BYTES] == self.current_key_id


def new_secret_key() -> str:
    """A fresh base64 AES-256 key for `ROUTINES_SECRET_KEY`."""
    return base64.b64encode(os.urandom(32)).decode()


def new_webhook_secret() -> str:
    """A webhook signing secret: 256 random bits, Standard-Webhooks style `whsec_` + base64."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def new_public_id() -> str:
    """24 lowercase hex characters (96 random bits)."""
    return secrets.token_hex(12)


def new_token(kind: str) -> str:
    """A bearer token: a kind prefix (for humans and secret scanners) and 256 random bits."""
    prefix = {"instance_admin": "rta_", "board": "rtb_", "agent": "rtk_"}[kind]
    return prefix + secrets.token_urlsafe(32)


def _raw_bytes(text: str) -> bytes:
    """The bytes a header value arrived as: aiohttp decodes what is not UTF-8 into lone surrogates
    (surrogateescape), which plain .encode() refuses — a credential made of them is just wrong.
    Other lone surrogates (a form posted in UTF-7) are encoded as themselves (surrogatepass): bytes
    no ASCII token can equal."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def hash_token(token: str) -> bytes:
    """SHA-256 of a token: tokens carry 256 random bits, so a fast hash is the right tool."""
    return hashlib.sha256(_raw_bytes(token)).digest()


def constant_time_equals(a: str | bytes, b: str | bytes) -> bool:
    """Compare without leaking where the inputs differ."""
    a_bytes = _raw_bytes(a) if isinstance(a, str) else a
    b_bytes = _raw_bytes(b) if isinstance(b, str) else b
    return hmac.compare_digest(a_bytes, b_bytes)
