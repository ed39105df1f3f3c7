"""The dispatcher's messages, written as JSON directly, say exactly what encoding a dict per
decision said; and the decision-latency histogram counts a batch as observing each value would."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry, Histogram

from routines_dispatcher.decide import Decision, _columns, dispatched_message, wakeup_message
from routines_dispatcher.metrics import DECISION_LATENCY, observe_many
from routines_dispatcher.policy import Outcome

AT = datetime(2026, 12, 6, tzinfo=UTC)


def _decision(status: Outcome, issue: uuid.UUID | None) -> Decision:
    return Decision(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), status, issue, AT)


def test_dispatched_message_is_the_json_of_each_decision() -> None:
    issue = uuid.uuid4()
    decisions = [
        _decision(Outcome.ISSUE_CREATED, uuid.uuid4()),
        _decision(Outcome.COALESCED, issue),
        _decision(Outcome.SKIPPED, issue),
        _decision(Outcome.FAILED, None),
    ]
    assert json.loads(dispatched_message(decisions)) == {
        "decisions": [
            {
                "runId": str(d.run_id),
                "status": d.status.value,
                "issueId": str(d.issue_id) if d.issue_id else None,
            }
            for d in decisions
        ]
    }


@pytest.mark.parametrize("status", [Outcome.ISSUE_CREATED, Outcome.COALESCED])
def test_wakeup_message_names_every_run(status: Outcome) -> None:
    issue = uuid.uuid4()
    runs = [_decision(status, uuid.uuid4() if status is Outcome.ISSUE_CREATED else issue) for _ in range(3)]
    expected = {
        "issueId": str(runs[-1].issue_id),
        "runId": str(runs[-1].run_id),
        "runIds": [str(d.run_id) for d in runs],
        "routineId": str(runs[-1].routine_id),
        "reason": "run_coalesced",
    }
    if status is Outcome.ISSUE_CREATED:
        expected |= {"issueIds": [str(d.issue_id) for d in runs], "reason": "issue_created"}
    assert json.loads(wakeup_message(runs)) == expected


def _samples(histogram: Histogram) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("le", "")): s.value
        for metric in histogram.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


def test_observe_many_counts_as_observing_each() -> None:
    buckets = DECISION_LATENCY._upper_bounds[:-1]  # the dispatcher's own bounds (+Inf is added)
    one, many = (Histogram("latency", "", buckets=buckets, registry=CollectorRegistry()) for _ in range(2))
    # On a bound, either side of one, past the last, zero, and a value repeated.
    values = [0.0, 0.005, 0.0051, 0.01, 0.3, 0.3, 1.0, 2.5, 59.9, 60.0, 61.0, 3600.0, math.nextafter(5, 0)]
    for value in values:
        one.observe(value)
    observe_many(many, values[:5])
    observe_many(many, values[5:])
    observe_many(many, [])
    got, expected = _samples(many), _samples(one)
    # The sum is added up in another order: equal but for rounding.
    assert got.pop(("latency_sum", "")) == pytest.approx(expected.pop(("latency_sum", "")), rel=1e-12)
    assert got == expected
    assert got[("latency_count", "")] == len(values)


def test_observe_many_refuses_a_labelled_histogram_as_observe_does() -> None:
    labelled = Histogram("by_kind", "", ["kind"], registry=CollectorRegistry())
    with pytest.raises(ValueError, match="missing label values"):
        labelled.observe(1.0)
    with pytest.raises(ValueError, match="missing label values"):
        observe_many(labelled, [1.0])


def test_a_column_of_nothing_but_nulls_is_sent_as_one_null() -> None:
    """The arrays a decision's statements get: a column is NULL only when every row's value is
    (a falsy value, or a NULL first, is still a column of values)."""
    first, second = uuid.uuid4(), uuid.uuid4()
    rows = [(first, None, None, "", 0, None), (second, None, "x", "", 0, second)]
    assert _columns(rows) == [[first, second], None, [None, "x"], ["", ""], [0, 0], [None, second]]
    assert _columns([(None,)] * 3) == [None]
