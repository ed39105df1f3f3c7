"""Row ids of the hot path: UUIDv7 (RFC 9562), ordered by the millisecond they were made."""

from __future__ import annotations

import time
import uuid

import pytest

from shared.ids import new_id, parse_id


def test_an_id_is_a_version_7_uuid_of_the_rfc_variant() -> None:
    value = new_id()
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert uuid.UUID(str(value)) == value


def test_an_id_begins_with_the_millisecond_it_was_made() -> None:
    before = time.time_ns() // 1_000_000
    value = new_id()
    after = time.time_ns() // 1_000_000
    assert before <= int.from_bytes(value.bytes[:6], "big") <= after


def test_ids_of_later_milliseconds_sort_after_earlier_ones() -> None:
    earlier = [new_id() for _ in range(50)]
    time.sleep(0.002)
    later = [new_id() for _ in range(50)]
    assert max(earlier) < min(later)


def test_ids_do_not_repeat() -> None:
    ids = [new_id() for _ in range(100_000)]  # mostly within the same few milliseconds
    assert len(set(ids)) == len(ids)


def test_the_random_part_is_random() -> None:
    """74 random bits: ids made within one millisecond differ beyond the timestamp (all 12 bits
    of rand_a and all 62 of rand_b take both values somewhere in a thousand ids)."""
    ids = [new_id().int for _ in range(1000)]
    rand_a = [(i >> 64) & 0xFFF for i in ids]
    rand_b = [i & ((1 << 62) - 1) for i in ids]
    for bit in range(12):
        assert {(a >> bit) & 1 for a in rand_a} == {0, 1}
    for bit in range(62):
        assert {(b >> bit) & 1 for b in rand_b} == {0, 1}


def test_an_id_read_from_text_is_the_uuid_it_names() -> None:
    for value in (uuid.uuid4(), new_id(), uuid.UUID(int=0), uuid.UUID(int=(1 << 128) - 1)):
        for text in (str(value), value.hex, str(value).upper()):
            parsed = parse_id(text)
            assert parsed == value and hash(parsed) == hash(value) and str(parsed) == str(value)
            assert isinstance(parsed, uuid.UUID)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "x",
        "g" * 32,
        "a" * 31,
        "a" * 33,
        "a" * 10_000,
        "{12345678-1234-5678-1234-567812345678}",
        "urn:uuid:12345678-1234-5678-1234-567812345678",
        " 12345678-1234-5678-1234-567812345678",
        "12345678-1234-5678-1234-56781234567\u0660",  # an Arabic-Indic zero is not a hex digit
        "１" * 32,
        "\x00" * 36,
    ],
)
def test_anything_else_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="invalid UUID"):
        parse_id(text)
