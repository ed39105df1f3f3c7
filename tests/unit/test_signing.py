"""Signature schemes: published vectors, the reference signer, and properties."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook

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


# --- The property's other half: a signed request verifies, and any single-byte change fails. ---

MODES = ["bearer", "hmac_sha256", "github_hmac", "standard_webhooks"]
# The header each mode carries its signature (or bearer token) in, and its timestamp header.
SIGNATURE_HEADER = {
    "bearer": "Authorization",
    "hmac_sha256": "X-Paperclip-Signature",
    "github_hmac": "X-Hub-Signature-256",
    "standard_webhooks": "webhook-signature",
}
TIMESTAMP_HEADER = {"hmac_sha256": "X-Paperclip-Timestamp", "standard_webhooks": "webhook-timestamp"}
# Hex digests and the `sha256=` prefix are compared case-insensitively (by design): a byte change
# that only flips a letter's case there is the same signature.
CASE_INSENSITIVE = {"X-Paperclip-Signature", "X-Hub-Signature-256"}


def signed(mode: str, secret: str, body: bytes, ts: str, msg_id: str = "msg_1") -> dict[str, str]:
    """Headers of a correctly signed request, built from each scheme's definition (not our code)."""
    if mode == "bearer":
        return {"Authorization": f"Bearer {secret}"}
    if mode == "hmac_sha256":
        return _hmac_headers(secret, body, ts)
    if mode == "github_hmac":
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Delivery": "d-1"}
    moment = datetime.fromtimestamp(int(ts), UTC)
    signature = Webhook(secret).sign(msg_id, moment, body.decode("utf-8", "surrogateescape"))
    return {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": signature}


def _mutations(raw: bytes, byte: int) -> list[tuple[int, bytes]]:
    """Every single-byte change of `raw`: position i gets a byte derived from `byte` (varied per
    position so that each example tries many values), skipped where that is the same byte."""
    out = []
    for i in range(len(raw)):
        new = (byte + i * 37) % 256
        if new != raw[i]:
            out.append((i, raw[:i] + bytes([new]) + raw[i + 1 :]))
    return out


def _must_fail(mode: str, headers: dict[str, str], body: bytes, secret: str, what: str) -> None:
    try:
        verify(mode, headers, body, [secret], NOW, 300)
    except AuthenticationFailed:
        return
    raise AssertionError(f"{mode}: {what}, and it still verifies")


def _same_but_case(original: str, changed: str) -> bool:
    return original != changed and original.lower() == changed.lower()


timestamps = st.one_of(
    st.just(str(int(NOW))),
    st.integers(int(NOW) - 299, int(NOW) + 299).map(str),
    st.integers(int(NOW * 1000) - 299_000, int(NOW * 1000) + 299_000).map(str),
)


@settings(max_examples=300)
@given(
    mode=st.sampled_from(MODES),
    body=st.one_of(
        st.binary(max_size=200), st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass"))
    ),
    ts=timestamps,
    byte=st.integers(0, 255),
)
def test_signed_request_verifies_and_any_single_byte_change_fails(
    mode: str, body: bytes, ts: str, byte: int
) -> None:
    """Every position of the body, the timestamp and the signature (bearer: its token) is changed
    in turn; header bytes are decoded the way aiohttp decodes them (UTF-8, surrogateescape)."""
    secret = new_webhook_secret()
    if mode == "standard_webhooks":
        ts = ts[:10]  # seconds only in this scheme
        body = body.decode("utf-8", "replace").encode()  # its reference signer signs text
    headers = signed(mode, secret, body, ts)
    assert verify(mode, headers, body, [secret], NOW, 300) is not None
    assert verify(mode, headers, body, [new_webhook_secret(), secret], NOW, 300) is not None

    if mode != "bearer":  # bearer signs nothing: documented
        for i, changed in _mutations(body, byte):
            _must_fail(mode, headers, changed, secret, f"body changed at byte {i}")
    names = [SIGNATURE_HEADER[mode]] + ([TIMESTAMP_HEADER[mode]] if mode in TIMESTAMP_HEADER else [])
    for name in names:
        raw = headers[name].encode()
        for i, changed in _mutations(raw, byte):
            if name == "Authorization" and i < len("Bearer "):
                continue  # the scheme word and its space, not the token
            value = changed.decode("utf-8", "surrogateescape")
            if name in CASE_INSENSITIVE and _same_but_case(headers[name], value):
                continue
            _must_fail(mode, {**headers, name: value}, body, secret, f"{name} changed at byte {i}: {value!r}")
