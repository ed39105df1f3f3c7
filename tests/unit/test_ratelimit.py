"""The gateway's token buckets (pure): a burst, then one token per 1/rate seconds, per key."""

from __future__ import annotations

from routines_gateway.ratelimit import TokenBuckets


def test_token_buckets() -> None:
    buckets = TokenBuckets(rate=1.0, burst=2)
    assert [buckets.take("k", now=0.0) for _ in range(3)] == [0, 0, 1]
    assert buckets.take("k", now=1.5) == 0
    assert buckets.take("other", now=1.5) == 0
