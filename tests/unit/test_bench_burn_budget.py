"""bench.pipeline_ingest's curve of what unrelated CPU work costs ingest on this host, and the
budget it leaves the decisions at the hot-routine goal (≥ 0.90 of ingest alone)."""

from __future__ import annotations

from typing import Any

import pytest

from bench.pipeline_ingest import _add_budget, _budget_line, burn_budget


def test_the_budget_is_where_the_curve_crosses_the_goal() -> None:
    assert burn_budget([(0.1, 0.96), (0.2, 0.88), (0.3, 0.80)]) == pytest.approx(0.175)
    # Between (0, 1) and the first point.
    assert burn_budget([(0.2, 0.80), (0.1, 0.95)]) == pytest.approx(0.1 + 0.05 / 0.15 * 0.1)


def test_a_curve_that_never_falls_below_the_goal_has_no_budget_within_it() -> None:
    assert burn_budget([(0.1, 0.99), (0.2, 0.95)]) is None
    assert burn_budget([]) is None


def test_the_first_crossing_counts_on_a_noisy_curve() -> None:
    assert burn_budget([(0.1, 0.85), (0.2, 0.95)]) == pytest.approx(0.1 * 0.1 / 0.15)
    assert burn_budget([(0.1, 0.92), (0.2, 0.91), (0.3, 0.80)]) == pytest.approx(0.2 + 0.01 / 0.11 * 0.1)


def _load(round_: int, dispatcher: str, accepted: float, **more: Any) -> dict[str, Any]:
    return {"round": round_, "dispatcher": dispatcher, "accepted_per_sec": accepted, **more}


def test_the_budget_is_told_in_cores_and_in_cpu_a_decided_run() -> None:
    stopped = [_load(0, "stopped", 1000.0), _load(1, "stopped", 2000.0)]
    running = [
        _load(0, "running", 900.0, decision_cores=0.09),
        _load(1, "running", 1800.0, decision_cores=0.27),
    ]
    burned = [
        _load(0, "stopped+burn", 950.0, burn_cores=0.1),
        _load(1, "stopped+burn", 1900.0, burn_cores=0.1),
        _load(0, "stopped+burn", 800.0, burn_cores=0.2),
        _load(1, "stopped+burn", 1600.0, burn_cores=0.2),
    ]
    row: dict[str, Any] = {"stopped_per_sec": 1500.0, "shape": "one routine", "policy": "p", "ratio": 0.9}
    _add_budget(row, running, stopped, burned)
    assert [c["cores"] for c in row["burn_curve"]] == [0.1, 0.2]
    assert [c["ratio"].mean for c in row["burn_curve"]] == pytest.approx([0.95, 0.80])
    assert row["budget_cores"] == pytest.approx(0.1 + 0.05 / 0.15 * 0.1)
    assert row["budget_us_per_run"] == pytest.approx(row["budget_cores"] / 1350.0 * 1e6)
    assert row["decision_cores"] == pytest.approx(0.18)
    assert row["decision_us_per_run"] == pytest.approx(125.0)  # 100 and 150 µs a run
    line = _budget_line(row)
    assert "0.10 cores → 0.95" in line and "0.20 cores → 0.80" in line
    assert "up to 0.13 cores, 99 µs" in line and "took 0.18 cores, 125 µs a run" in line
