"""Signature schemes: published vectors, the reference signer, and properties."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook

from routines_gateway.ratelimit import TokenBuckets
from routines_gateway.signing import AuthenticationFailed, verify, verify_github_hmac
from shared.crypto import new_webhook_secret

NOW = 1_800_000_000.0


def test_github_published_test_vector() -> None:
    secret, body = "It's a Secret to Everybody", b"Hello, World!"
    signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    verified = verify_github_hmac(
        {"X-Hub-Signature-256": signature, "X-GitHub-Delivery": "d-1"}, body, [secret]
    )
    assert verified.delivery_id == "d-1"
    with pytest.raises(AuthenticationFailed):
        verify_github_hmac({"X-Hub-Signature-256": signature}, b"Hello, World?", [secret])


def test_standard_webhooks_reference_signer_verifies() -> None:
    secret = new_webhook_secret()
    body = '{"event":"ping"}'
    moment = datetime.fromtimestamp(NOW, UTC)
    signature = Webhook(secret).sign("msg_1", moment, body)
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(NOW)),
        "webhook-signature": f"v0,xx {signature}",
    }
    assert verify("standard_webhooks", headers, body.encode(), [secret], NOW, 300).delivery_id == "msg_1"
    with pytest.raises(AuthenticationFailed):
        verify("standard_webhooks", headers, b'{"event":"pong"}', [secret], NOW, 300)
    with pytest.raises(AuthenticationFailed):
        verify("standard_webhooks", headers, body.encode(), [secret], NOW + 301, 300)


def _hmac_headers(secret: str, body: bytes, ts: str) -> dict[str, str]:
    sig = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Paperclip-Timestamp": ts, "X-Paperclip-Signature": sig}


@pytest.mark.parametrize("ts", [str(int(NOW)), str(int(NOW * 1000))])
def test_hmac_sha256_seconds_and_milliseconds(ts: str) -> None:
    secret, body = new_webhook_secret(), b'{"a":1}'
    headers = _hmac_headers(secret, body, ts)
    assert (
        verify("hmac_sha256", headers, body, [secret], NOW, 300).signature == headers["X-Paperclip-Signature"]
    )
    prefixed = {**headers, "X-Paperclip-Signature": "sha256=" + headers["X-Paperclip-Signature"]}
    verify("hmac_sha256", prefixed, body, [secret], NOW, 300)
    for now in (NOW + 301, NOW - 301):
        with pytest.raises(AuthenticationFailed) as info:
            verify("hmac_sha256", headers, body, [secret], now, 300)
        assert info.value.stale


def test_bearer_checks_every_live_secret() -> None:
    old, new = new_webhook_secret(), new_webhook_secret()
    verify("bearer", {"Authorization": f"Bearer {old}"}, b"", [new, old], NOW, 300)
    for header in ("", "Bearer", f"Basic {old}", "Bearer wrong"):
        with pytest.raises(AuthenticationFailed):
            verify("bearer", {"Authorization": header} if header else {}, b"", [new], NOW, 300)


@given(
    st.sampled_from(["bearer", "hmac_sha256", "github_hmac", "standard_webhooks"]),
    st.dictionaries(
        st.sampled_from(
            [
                "Authorization",
                "X-Paperclip-Signature",
                "X-Paperclip-Timestamp",
                "X-Hub-Signature-256",
                "webhook-id",
                "webhook-timestamp",
                "webhook-signature",
                "X-GitHub-Delivery",
            ]
        ),
        st.text(max_size=80),
    ),
    st.binary(max_size=200),
)
def test_random_input_never_verifies(mode: str, headers: dict[str, str], body: bytes) -> None:
    with pytest.raises(AuthenticationFailed):
        verify(mode, headers, body, [new_webhook_secret()], time.time(), 300)


def test_token_buckets() -> None:
    buckets = TokenBuckets(rate=1.0, burst=2)
    assert [buckets.take("k", now=0.0) for _ in range(3)] == [0, 0, 1]
    assert buckets.take("k", now=1.5) == 0
    assert buckets.take("other", now=1.5) == 0
