"""Sign webhook deliveries the way the gateway verifies them, in every signing mode."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any, Literal

SigningMode = Literal["bearer", "hmac_sha256", "github_hmac", "standard_webhooks"]


def encode_body(payload: Any) -> bytes:
    """The exact bytes to sign and send for a JSON payload."""
    return b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()


def sign(
    mode: SigningMode,
    secret: str,
    body: bytes,
    *,
    delivery_id: str | None = None,
    timestamp: int | None = None,
) -> dict[str, str]:
    """Headers that authenticate `body` for a trigger in `mode` with its `secret`.

    `delivery_id` (generated when omitted) identifies the delivery for github_hmac and
    standard_webhooks: send the same id when you retry, so the gateway answers with the
    original run instead of recording a second one.
    """
    ts = int(time.time()) if timestamp is None else timestamp
    delivery = delivery_id or uuid.uuid4().hex
    headers = {"Content-Type": "application/json"}
    if mode == "bearer":
        headers["Authorization"] = f"Bearer {secret}"
    elif mode == "hmac_sha256":
        digest = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
        headers["X-Paperclip-Timestamp"] = str(ts)
        headers["X-Paperclip-Signature"] = f"sha256={digest}"
    elif mode == "github_hmac":
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        headers["X-Hub-Signature-256"] = f"sha256={digest}"
        headers["X-GitHub-Delivery"] = delivery
    elif mode == "standard_webhooks":
        key = secret.removeprefix("whsec_")
        try:
            raw_key = base64.b64decode(key, validate=True)
        except ValueError:
            raw_key = secret.encode()
        signed = f"{delivery}.{ts}.".encode() + body
        signature = base64.b64encode(hmac.new(raw_key, signed, hashlib.sha256).digest()).decode()
        headers["webhook-id"] = delivery
        headers["webhook-timestamp"] = str(ts)
        headers["webhook-signature"] = f"v1,{signature}"
    else:  # pragma: no cover - Literal guards this for typed callers
        raise ValueError(f"unknown signing mode {mode!r}")
    return headers
