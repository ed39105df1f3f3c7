"""The event loop's counters and histograms expose exactly what prometheus_client's would (less
the `_created` series), whatever values and labels they are fed."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from shared.loop_metrics import LoopCounter, LoopHistogram

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
LABEL = st.sampled_from(["a", "b", "/x/{id}", 'q"uote'])
VALUE = st.one_of(
    st.sampled_from([0.0, -1.0, *BUCKETS, 7.0, math.inf, math.nan]), st.floats(0, 10, allow_nan=False)
)


def _exposition(registry: CollectorRegistry) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


@given(st.lists(st.tuples(VALUE, LABEL, LABEL), max_size=40))
def test_a_histogram_exposes_what_prometheus_clients_does(observations: list[tuple[float, str, str]]) -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("h_seconds", "help", ["route", "method"], buckets=BUCKETS, registry=theirs)
    loop = LoopHistogram("h_seconds", "help", ["route", "method"], BUCKETS, registry=ours)
    for value, route, method in observations:
        reference.labels(route, method).observe(value)
        loop.observe(value, route, method)
    assert _exposition(ours) == _exposition(theirs)


@given(st.lists(st.tuples(LABEL, st.sampled_from([0, 1, 2.5])), max_size=40))
def test_a_counter_exposes_what_prometheus_clients_does(increments: list[tuple[str, float]]) -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Counter("c_total", "help", ["outcome"], registry=theirs)
    loop = LoopCounter("c_total", "help", ["outcome"], registry=ours)
    for label, amount in increments:
        reference.labels(label).inc(amount)
        loop.inc(label, amount=amount)
    assert _exposition(ours) == _exposition(theirs)


def test_a_histogram_without_labels_is_exported_before_its_first_observation() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    Histogram("v_seconds", "help", buckets=BUCKETS, registry=theirs)
    LoopHistogram("v_seconds", "help", [], BUCKETS, registry=ours)
    assert _exposition(ours) == _exposition(theirs)
    assert 'v_seconds_bucket{le="+Inf"} 0.0' in _exposition(ours)


@pytest.mark.parametrize(
    "buckets", [(5e-05, 1e6, 2.5e7), (0.5, 1, math.inf)], ids=["large-bounds", "explicit-inf"]
)
def test_bucket_bounds_are_written_as_prometheus_client_writes_them(buckets: tuple[float, ...]) -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("b_seconds", "help", ["k"], buckets=buckets, registry=theirs)
    loop = LoopHistogram("b_seconds", "help", ["k"], buckets, registry=ours)
    for value in (0.0, 1.0, 3e6, 1e9):
        reference.labels("v").observe(value)
        loop.observe(value, "v")
    assert _exposition(ours) == _exposition(theirs)


def test_what_prometheus_client_refuses_is_refused() -> None:
    registry = CollectorRegistry()
    counter = LoopCounter("r_total", "help", ["outcome"], registry=registry)
    histogram = LoopHistogram("r_seconds", "help", ["route", "method"], BUCKETS, registry=registry)
    with pytest.raises(ValueError, match="amount >= 0"):
        counter.inc("a", amount=-1)
    with pytest.raises(ValueError, match="1 label values"):
        counter.inc("a", "2")  # an amount passed as a label value
    with pytest.raises(ValueError, match="2 label values"):
        histogram.observe(0.1, "only-the-route")
    assert _exposition(registry) == [
        "# HELP r_total help",
        "# TYPE r_total counter",
        "# HELP r_seconds help",
        "# TYPE r_seconds histogram",
    ]
