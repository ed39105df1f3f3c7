"""Redaction is exact: the one-search shortcut never lets through what the substitutions catch."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.logging import REDACTED, redact_secrets, redact_text

_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]+):(?P<pw>[^@/\s]+)@")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+")
_OUR_TOKENS = re.compile(r"\b(rt[a-z]?_[A-Za-z0-9_-]{16,}|whsec_[A-Za-z0-9+/=_-]{16,})")


def reference(text: str) -> str:
    """The three substitutions, always run (the behaviour before the shortcut)."""
    text = _URL_PASSWORD.sub(r"\g<scheme>\g<user>:" + REDACTED + "@", text)
    text = _BEARER.sub(r"\1" + REDACTED, text)
    return _OUR_TOKENS.sub(REDACTED, text)


FRAGMENTS = [
    "postgresql://routines:s3cret@db:5432/x",
    "nats://u:p@h",
    "Bearer abc.def",
    "BEARER\tx",
    "bearer ",
    "xbearer abc",
    "rtk_" + "A" * 16,
    "rt_" + "b" * 20,
    "whsec_" + "Zz09+/=_-" * 2,
    "whsec_short",
    "://",
    "@",
    " ",
    "é",
    # What the substring pre-test looks for, alone and in other cases.
    "BeArEr tok",
    "http://",
    "u:p@",
    "_",
    "rtk_",
    "whsec_",
    "\u212a",  # KELVIN SIGN: equal to k under re.IGNORECASE
]


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12)), max_size=8))
def test_redact_text_is_the_three_substitutions(parts: list[str]) -> None:
    text = "".join(parts)
    assert redact_text(text) == reference(text)


def test_secret_keys_and_values_are_redacted_in_log_lines() -> None:
    line = redact_secrets(
        None,
        "info",
        {
            "event": "x",
            "authorization": "anything",
            "trigger_id": "kept",
            "signing_mode": "hmac_sha256",
            "error": "connect to postgresql://u:pw@h failed",
            "nested": {"api_key": "k", "note": "Bearer abc"},
            "status": 401,
        },
    )
    assert line == {
        "event": "x",
        "authorization": REDACTED,
        "trigger_id": "kept",
        "signing_mode": "hmac_sha256",
        "error": f"connect to postgresql://u:{REDACTED}@h failed",
        "nested": {"api_key": REDACTED, "note": f"Bearer {REDACTED}"},
        "status": 401,
    }
