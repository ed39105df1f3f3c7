"""The benchmarks' summary of paired ratios: a geometric mean and its 95 % confidence interval."""

from __future__ import annotations

import math

import pytest

from bench.common import ratio_interval, t95


def test_equal_ratios_have_no_spread() -> None:
    assert ratio_interval([0.9, 0.9, 0.9]) == pytest.approx((0.9, 0.9, 0.9))


def test_the_interval_is_students_t_on_the_logarithms() -> None:
    # logs 0.1, -0.1, 0: mean 0, standard deviation 0.1; t(2 degrees of freedom) = 4.30.
    mean, low, high = ratio_interval([math.exp(0.1), math.exp(-0.1), 1.0])
    half = 4.30 * 0.1 / math.sqrt(3)
    assert mean == pytest.approx(1.0)
    assert (low, high) == pytest.approx((math.exp(-half), math.exp(half)))


def test_a_ratio_and_its_inverse_balance() -> None:
    mean, low, high = ratio_interval([0.8, 1.25])
    assert mean == pytest.approx(1.0)
    assert low * high == pytest.approx(1.0)
    assert low < 0.8 and high > 1.25  # two pairs say little: t(1) = 12.71


def test_beyond_the_table_t_follows_its_expansion() -> None:
    # Student's t, two-sided 95 %: 2.0395 (31), 2.0227 (39), 2.0003 (60), 1.9840 (100).
    for df, quantile in [(30, 2.04), (31, 2.0395), (39, 2.0227), (60, 2.0003), (100, 1.9840)]:
        assert t95(df) == pytest.approx(quantile, abs=0.001)
    ratios = [0.9, 1.0] * 20  # 40 pairs
    mean, low, high = ratio_interval(ratios)
    logs = [math.log(r) for r in ratios]
    sd = math.sqrt(sum((x - sum(logs) / 40) ** 2 for x in logs) / 39)
    assert math.log(high / mean) == pytest.approx(2.0227 * sd / math.sqrt(40), rel=1e-3)
    assert low < mean < high


def test_a_load_that_accepted_nothing_leaves_no_interval() -> None:
    assert all(math.isnan(x) for x in ratio_interval([0.95, 0.0, 1.02]))


def test_too_few_ratios_give_no_interval() -> None:
    mean, low, high = ratio_interval([0.95])
    assert mean == pytest.approx(0.95)
    assert math.isnan(low) and math.isnan(high)
    assert all(math.isnan(x) for x in ratio_interval([]))
