"""Webhook signature schemes (pure). Every comparison is constant-time."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from shared.crypto import constant_time_equals

MAX_HEADER = 4096
_TIMESTAMP = re.compile(r"[0-9]{1,16}")  # ASCII digits only: str.isdigit() also accepts "²"


def printable_ascii(value: str) -> bool:
    """Only visible ASCII and spaces: what every header a signing scheme defines consists of."""
    return value.isascii() and value.isprintable()


class AuthenticationFailed(Exception):
    """Why a delivery failed verification (for logs and metrics; never sent to the caller)."""

    def __init__(self, reason: str, stale: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.stale = stale


@dataclass(frozen=True)
class Verified:
    """A verified delivery: its delivery id (if the scheme has one) and the signature it carried."""

    delivery_id: str | None
    signature: str | None


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None or not value.strip():
        raise AuthenticationFailed(f"missing {name}")
    if len(value) > MAX_HEADER:
        raise AuthenticationFailed(f"oversized {name}")
    if not printable_ascii(value):
        raise AuthenticationFailed(f"non-ASCII {name}")
    return value.strip()


def _check_timestamp(raw: str, now: float, window: int, allow_ms: bool) -> None:
    if not _TIMESTAMP.fullmatch(raw):
        raise AuthenticationFailed("malformed timestamp")
    value = int(raw)
    seconds = value / 1000 if allow_ms and value > 1_000_000_000_000 else float(value)
    if abs(now - seconds) > window:
        raise AuthenticationFailed("timestamp outside the replay window", stale=True)


def _hmac_hex(key: bytes, message: bytes) -> str:
    return hmac.digest(key, message, "sha256").hex()  # OpenSSL's one-shot HMAC


def _matches_any(offered: str, expected: Iterable[str]) -> bool:
    """Whether `offered` equals one of `expected`. Every one is compared, each in constant time,
    so timing does not reveal which live secret (or none) matched."""
    matched = False
    for candidate in expected:
        matched |= constant_time_equals(offered, candidate)
    return matched


def verify_bearer(headers: Mapping[str, str], secrets: Sequence[str]) -> Verified:
    scheme, _, token = _header(headers, "Authorization").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationFailed("malformed Authorization header")
    if not _matches_any(token, secrets):
        raise AuthenticationFailed("wrong bearer secret")
    return Verified(None, None)


def verify_hmac_sha256(
    headers: Mapping[str, str], body: bytes, secrets: Sequence[str], now: float, window: int
) -> Verified:
    """X-Paperclip-Signature = hex HMAC-SHA256(secret, `<timestamp as sent>.<raw body>`)."""
    timestamp = _header(headers, "X-Paperclip-Timestamp")
    signature = _header(headers, "X-Paperclip-Signature").lower().removeprefix("sha256=")
    if len(signature) != 64:
        raise AuthenticationFailed("malformed signature")
    _check_timestamp(timestamp, now, window, allow_ms=True)
    message = timestamp.encode() + b"." + body
    if not _matches_any(signature, (_hmac_hex(secret.encode(), message) for secret in secrets)):
        raise AuthenticationFailed("signature mismatch")
    return Verified(None, signature)


def verify_github_hmac(headers: Mapping[str, str], body: bytes, secrets: Sequence[str]) -> Verified:
    """X-Hub-Signature-256 = `sha256=` + hex HMAC-SHA256(secret, raw body); X-GitHub-Delivery is the id."""
    raw = _header(headers, "X-Hub-Signature-256")
    if not raw.lower().startswith("sha256="):
        raise AuthenticationFailed("malformed signature")
    signature = raw[7:].lower()
    if not _matches_any(signature, (_hmac_hex(secret.encode(), body) for secret in secrets)):
        raise AuthenticationFailed("signature mismatch")
    delivery = headers.get("X-GitHub-Delivery")
    return Verified(delivery.strip() if delivery and delivery.strip() else None, signature)


def standard_webhooks_key(secret: str) -> bytes:
    """The Standard Webhooks signing key: base64 after the `whsec_` prefix."""
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        return secret.encode()


def verify_standard_webhooks(
    headers: Mapping[str, str], body: bytes, secrets: Sequence[str], now: float, window: int
) -> Verified:
    """Standard Webhooks: v1 signatures over `<webhook-id>.<webhook-timestamp>.<body>`."""
    msg_id = _header(headers, "webhook-id")
    timestamp = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature").split()
    _check_timestamp(timestamp, now, window, allow_ms=False)
    message = f"{msg_id}.{timestamp}.".encode() + body
    offered = [s.partition(",")[2] for s in signatures if s.startswith("v1,")]
    if not offered:
        raise AuthenticationFailed("no v1 signature")
    matched = None
    for secret in secrets:
        expected = base64.b64encode(
            hmac.new(standard_webhooks_key(secret), message, hashlib.sha256).digest()
        ).decode()
        for candidate in offered:
            if constant_time_equals(expected, candidate):
                matched = candidate
    if matched is None:
        raise AuthenticationFailed("signature mismatch")
    return Verified(msg_id, matched)


def verify(
    mode: str, headers: Mapping[str, str], body: bytes, secrets: Sequence[str], now: float, window: int
) -> Verified:
    """Verify a delivery by the trigger's signing mode, or raise AuthenticationFailed."""
    if not secrets:
        raise AuthenticationFailed("no live secret")
    if mode == "bearer":
        return verify_bearer(headers, secrets)
    if mode == "hmac_sha256":
        return verify_hmac_sha256(headers, body, secrets, now, window)
    if mode == "github_hmac":
        return verify_github_hmac(headers, body, secrets)
    if mode == "standard_webhooks":
        return verify_standard_webhooks(headers, body, secrets, now, window)
    raise AuthenticationFailed(f"unknown signing mode {mode}")
