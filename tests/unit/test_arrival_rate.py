"""The dispatcher's measure of how fast runs arrive (its fetch linger turns on above a rate)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from routines_dispatcher.worker import ArrivalRate


def test_counts_the_runs_of_the_last_second_only() -> None:
    rate = ArrivalRate(window=1.0)
    rate.add(20, now=10.0)
    rate.add(30, now=10.5)
    assert rate.runs(now=10.9) == 50
    assert rate.runs(now=11.2) == 30  # the fetch at 10.0 left the window
    assert rate.runs(now=12.0) == 0


def test_holds_a_window_of_fetches_even_when_nobody_asks_for_the_rate() -> None:
    # With the linger off the rate is never read: fetches must not pile up for the process's life.
    rate = ArrivalRate(window=1.0)
    for n in range(10_000):
        rate.add(20, now=n * 0.05)  # 20 fetches a second for 500 s
    assert len(rate) <= 21
    assert rate.runs(now=9_999 * 0.05) == 20 * len(rate)


@given(st.lists(st.tuples(st.floats(0, 5), st.integers(0, 100)), max_size=50))
def test_equals_the_sum_over_the_window(fetches: list[tuple[float, int]]) -> None:
    rate = ArrivalRate(window=1.0)
    now = 0.0
    seen: list[tuple[float, int]] = []
    for gap, runs in fetches:
        now += gap
        rate.add(runs, now)
        seen.append((now, runs))
        assert rate.runs(now) == sum(n for at, n in seen if at >= now - 1.0)
