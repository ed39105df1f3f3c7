"""Secrets at rest (AES-256-GCM) and bearer tokens (random, stored as SHA-256)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NONCE_BYTES = 12
_KEY_VERSION = b"\x01"


class SecretBox:
    """Encrypts webhook secrets with the configured key; the trigger id is bound as associated data."""

    def __init__(self, key_b64: str) -> None:
        self._aead = AESGCM(base64.b64decode(key_b64))

    def encrypt(self, plaintext: str, context: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return _KEY_VERSION + nonce + sealed

    def decrypt(self, blob: bytes, context: str) -> str:
        if blob[:1] != _KEY_VERSION:
            raise ValueError("unknown secret encryption version")
        nonce, sealed = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
        return self._aead.decrypt(nonce, sealed, context.encode()).decode()


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


def hash_token(token: str) -> bytes:
    """SHA-256 of a token: tokens carry 256 random bits, so a fast hash is the right tool."""
    return hashlib.sha256(token.encode()).digest()


def constant_time_equals(a: str | bytes, b: str | bytes) -> bool:
    """Compare without leaking where the inputs differ."""
    a_bytes = a.encode() if isinstance(a, str) else a
    b_bytes = b.encode() if isinstance(b, str) else b
    return hmac.compare_digest(a_bytes, b_bytes)
