"""Ids of the rows written on the hot path (runs, execution issues): UUIDv7 (RFC 9562).

A random id (v4) lands on a random page of its primary key, so a table written thousands of times
a second dirties pages all over the index, and after every checkpoint writes each of them whole to
the WAL again. A v7 id starts with the milliseconds of its creation: new rows land at the end of
the index, on pages already in memory. bench/id_order.py measures the difference.

Python 3.14 has `uuid.uuid7()`; until then, this. Within one millisecond ids are in random order
(no counter): the index only needs them close together, not strictly increasing.
"""

from __future__ import annotations

import os
import time
import uuid

_VERSION = 0x7 << 76
_VARIANT = 0b10 << 62
_RAND_A = 0xFFF  # 12 random bits after the version
_RAND_B = (1 << 62) - 1  # 62 random bits after the variant


def new_id() -> uuid.UUID:
    """A new UUIDv7: 48 bits of Unix time in milliseconds, then 74 random bits."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis << 80) | _VERSION | (((rand >> 62) & _RAND_A) << 64) | _VARIANT | (rand & _RAND_B)
    return uuid.UUID(int=value)
