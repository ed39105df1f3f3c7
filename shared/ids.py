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

# Not a documented module of asyncpg, but the type of every uuid it returns; asyncpg is pinned
# (pyproject.toml), and tests/unit/test_ids.py holds these ids to uuid.UUID's behaviour.
from asyncpg.pgproto.pgproto import UUID as _FastUUID


def new_id() -> uuid.UUID:
    """A new UUIDv7: 48 bits of Unix time in milliseconds, the version, 74 random bits (the
    variant's two bits among them).

    Made as asyncpg's own UUID, a `uuid.UUID` that asyncpg returns for every uuid column: equal to,
    and hashed like, the standard one, but built from bytes and turned into a string ten times
    faster (a decision names each new issue id in its messages).
    """
    raw = bytearray(os.urandom(16))
    raw[0:6] = (time.time_ns() // 1_000_000).to_bytes(6, "big")
    raw[6] = 0x70 | (raw[6] & 0x0F)  # version 7
    raw[8] = 0x80 | (raw[8] & 0x3F)  # variant 10
    return _FastUUID(bytes(raw))


def parse_id(text: str) -> uuid.UUID:
    """A UUID from its text (32 hex digits; hyphens are ignored, as `uuid.UUID` ignores them), as
    asyncpg's UUID: eight times faster to parse than `uuid.UUID` (a dispatcher reads every run id
    it is sent). ValueError for anything else, braces and `urn:uuid:` included."""
    return _FastUUID(text)
