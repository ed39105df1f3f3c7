"""bench.pipeline_ingest's summary: a round with a load that accepted nothing is left out of the
means and the interval, and says so with what Postgres saw — never silently, and never when
ingest waited on the dispatcher (that is the defect the hot-routine goal is about)."""

from __future__ import annotations

from typing import Any

import pytest

from bench.pipeline_ingest import _summarise


def _load(round_: int, dispatcher: str, accepted: float, behind: int = 0) -> dict[str, Any]:
    return {
        "shape": "one routine",
        "policy": "always_enqueue",
        "dispatcher": dispatcher,
        "round": round_,
        "accepted_per_sec": accepted,
        "p50_ms": 5.0,
        "p99_ms": 10.0,
        "drain_sec": 0.1,
        "server_errors": 0,
        "locks": {
            "samples": 400,
            "samples_with_ingest_behind_dispatcher": behind,
            "share_behind_dispatcher": behind / 400,
            "activity": {"webhook-gateway IO:WalSync": 0.72, "webhook-gateway LWLock:WALWrite": 0.7},
        },
    }


def _rounds(stalled: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        _load(0, "running", 950.0),
        _load(0, "stopped", 1000.0),
        _load(1, "running", 4000.0),  # its stopped load accepted nothing
        stalled,
        _load(2, "running", 970.0),
        _load(2, "stopped", 1000.0),
    ]


def test_a_round_whose_load_accepted_nothing_is_left_out_and_said_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    [row] = _summarise(_rounds(_load(1, "stopped", 0.0)))
    assert row["round_ratios"] == pytest.approx([0.95, 0.97])
    assert row["stopped_per_sec"] == 1000.0  # not pulled down by the empty load
    assert row["running_per_sec"] == pytest.approx(960.0)  # nor up by the round's other one
    out = capsys.readouterr().out
    assert (
        "left out: round 1 of one routine, always_enqueue: the load with the dispatcher stopped accepted"
        in out
    )
    assert "ingest never waited on the dispatcher (400 samples)" in out
    assert "webhook-gateway IO:WalSync 72%" in out
    assert "goal ≥ 0.90: met" in out


def test_a_load_that_accepted_nothing_while_ingest_waited_on_the_dispatcher_misses_the_goal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    [row] = _summarise(_rounds(_load(1, "stopped", 0.0, behind=300)))
    assert row["round_ratios"] == pytest.approx([0.95, 0.97])
    out = capsys.readouterr().out
    assert "ingest waited on the dispatcher in 75% of samples" in out
    assert "goal ≥ 0.90: MISSED" in out
