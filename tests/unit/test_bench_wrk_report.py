"""Reading wrk's report (`bench.loadgen.parse_wrk`): the figures every benchmark table is made of."""

from __future__ import annotations

import math

import pytest

from bench.loadgen import parse_wrk

# wrk prints each percentile right-aligned in ten columns: a two-letter unit fills them, a
# one-letter one (a second or more) is padded with a space after it.
P99_OF_A_SECOND = "    1.02s" + " "
REPORT = """Running 8s test @ http://127.0.0.1:40123
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    17.42ms   93.70ms   1.31s    98.91%
    Req/Sec     3.74k   412.33     4.50k    75.00%
  Latency Distribution
     50%    7.00ms
     75%    8.21ms
     90%   10.03ms
     99%{p99}
  29696 requests in 8.00s, 5.27MB read
  Non-2xx or 3xx responses: 96
Requests/sec:   3712.00
Transfer/sec:    674.57KB
status 202 29600
status 503 96
"""


def report(p99: str = P99_OF_A_SECOND) -> str:
    return REPORT.format(p99=p99)


def test_a_p99_of_a_second_or_more_is_read_not_lost() -> None:
    result = parse_wrk(report())
    assert result.p50_ms == pytest.approx(7.0)
    assert result.p99_ms == pytest.approx(1020.0)


def test_statuses_and_rates_are_read() -> None:
    result = parse_wrk(report())
    assert result.statuses == {202: 29600, 503: 96}
    assert result.server_errors == 96
    assert result.total == 29696
    assert result.per_sec(202) == pytest.approx(3712.0 * 29600 / 29696)
    assert result.ok_per_sec == pytest.approx(3712.0 * (29696 - 96) / 29696)


@pytest.mark.parametrize(
    ("shown", "ms"),
    [("  950.00us", 0.95), ("   12.50ms", 12.5), ("    2.00m ", 120_000.0), ("    1.00h ", 3_600_000.0)],
)
def test_every_unit_wrk_prints_is_read(shown: str, ms: float) -> None:
    assert parse_wrk(report(shown)).p99_ms == pytest.approx(ms)


def test_a_report_without_a_latency_distribution_has_no_percentiles() -> None:
    """Not one request completed: wrk prints no distribution; the percentiles are unknown (NaN)."""
    head, _, tail = report().partition("  Latency Distribution\n")
    result = parse_wrk(head + tail.split("\n", 4)[4])
    assert math.isnan(result.p50_ms) and math.isnan(result.p99_ms)
