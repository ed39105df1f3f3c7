"""Prometheus metrics of the dispatcher."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Sequence

from prometheus_client import Counter, Histogram

RUNS_DECIDED = Counter("routines_dispatcher_runs_decided_total", "Runs decided", ["status"])
DECISION_LATENCY = Histogram(
    "routines_dispatcher_decision_latency_seconds",
    "Time from a run being recorded to its decision",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
REDELIVERIES = Counter("routines_dispatcher_redeliveries_total", "Messages delivered more than once")
SWEEPER_PICKUPS = Counter("routines_dispatcher_sweeper_pickups_total", "Runs decided by the sweeper")
TERMINATED = Counter("routines_dispatcher_terminated_total", "Messages that can never succeed", ["reason"])


def observe_many(histogram: Histogram, values: Sequence[float]) -> None:
    """`histogram.observe(v)` for every value (finite ones: a NaN would be counted in the first
    bucket), counted the same way — a value goes into the first bucket whose bound is at least
    it — with one increment per bucket, not per value: a transaction decides hundreds of runs, and
    observing each took a twentieth of the dispatcher's CPU. prometheus_client has no such call,
    so this uses its histogram's own bounds and counters (pinned version;
    tests/unit/test_dispatcher_messages.py checks the result against `observe`)."""
    histogram._raise_if_not_observable()  # type: ignore[no-untyped-call]  # as observe does
    if not values:
        return
    bounds = histogram._upper_bounds
    for index, count in Tally(bisect_left(bounds, v) for v in values).items():
        histogram._buckets[index].inc(count)
    histogram._sum.inc(sum(values))
