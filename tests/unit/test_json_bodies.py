"""Request JSON is strict and storable in Postgres jsonb; anything else is a 400, never a 500."""

from __future__ import annotations

import pytest

from shared.errors import BadRequest
from shared.http import parse_json


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (rb'{"a": "\u0000"}', "u0000"),
        (rb'{"\u0000": 1}', "u0000"),
        (rb'{"a": ["\udbd8"]}', "surrogates"),
        (b'{"a": NaN}', "NaN"),
        (b'{"a": -Infinity}', "Infinity"),
        (b"[" * 100_000, "nested"),
        (b"\xff\xfe", "JSON"),
    ],
)
def test_unstorable_json_is_rejected(raw: bytes, reason: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_json(raw)
    assert reason in info.value.message + str(info.value.details)


def test_valid_json_with_paired_surrogates_passes() -> None:
    assert parse_json(rb'{"\ud83d\ude00": [1, 2.5, null, true]}') == {"😀": [1, 2.5, None, True]}
