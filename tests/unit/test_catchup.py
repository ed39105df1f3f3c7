"""Catch-up planning (pure): which slots fire, which are dropped, where the trigger goes next."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import example, given, settings
from hypothesis import strategies as st

from routines_scheduler.catchup import ENQUEUE_CAP, MAX_SLOTS_COUNTED, plan_fires
from tests.unit.cron_reference import brute_force_fires

GRACE = timedelta(seconds=60)
START = datetime(2026, 10, 24, 22, 0, tzinfo=UTC)  # the night Amsterdam falls back


def _first_fire_after(expr: str, tz: str, moment: datetime) -> datetime:
    return brute_force_fires(expr, tz, moment, moment + timedelta(days=2))[0]


def reference(
    expr: str, tz: str, next_run_at: datetime, now: datetime, policy: str
) -> tuple[list[datetime], list[datetime], datetime, int]:
    """DESIGN.md's catch-up rule over slots enumerated minute by minute (tests/unit/cron_reference.py)."""
    slots = brute_force_fires(expr, tz, next_run_at - timedelta(minutes=1), now)
    assert slots[0] == next_run_at
    on_time = [s for s in slots if now - s <= GRACE]
    missed = [s for s in slots if now - s > GRACE]
    kept = missed[-ENQUEUE_CAP:] if policy == "enqueue_missed_with_cap" else []
    dropped = missed[: len(missed) - len(kept)]
    return [*kept, *on_time], dropped, _first_fire_after(expr, tz, max(now, slots[-1])), len(slots)


LATENESS = st.one_of(
    st.integers(0, 60 * 60 * 3),  # minutes to hours: the usual catch-up
    st.integers(60 * 60 * 3, 60 * 60 * 24 * 28),  # an outage of up to four weeks
)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["* * * * *", "*/2 * * * *", "*/5 * * * *", "30 2 * * *", "0 * * * *", "*/30 1-3 * * *"]),
    st.sampled_from(["UTC", "Europe/Amsterdam", "Australia/Lord_Howe"]),
    st.integers(0, 60 * 30),
    LATENESS,
    st.sampled_from(["skip_missed", "enqueue_missed_with_cap"]),
)
# Three weeks of a minutely schedule: more slots than are ever counted (the truncation path).
@example("* * * * *", "Europe/Amsterdam", 7, 60 * 60 * 24 * 21 + 30, "enqueue_missed_with_cap")
@example("*/2 * * * *", "UTC", 0, 60 * 60 * 24 * 27, "skip_missed")
# Just over the counting limit: the look near `now` reaches the counted slots, so the count is exact.
@example("* * * * *", "UTC", 0, 60 * 10_009 + 30, "enqueue_missed_with_cap")
def test_plan_matches_the_definition(expr: str, tz: str, start_min: int, late_sec: int, policy: str) -> None:
    next_run_at = _first_fire_after(expr, tz, START + timedelta(minutes=start_min))
    now = next_run_at + timedelta(seconds=late_sec)
    plan = plan_fires(expr, tz, next_run_at, now, GRACE, policy)
    enqueue, dropped, following, total = reference(expr, tz, next_run_at, now, policy)
    assert plan.enqueue == enqueue
    assert plan.next_run_at == following
    assert plan.missed_enqueued == len([s for s in enqueue if now - s > GRACE])
    # A count is claimed exact unless there were too many slots to count, and then it must be.
    assert plan.dropped_at_least <= (total > MAX_SLOTS_COUNTED)
    if not plan.dropped_at_least:
        assert plan.dropped == dropped
    else:
        # Too many to count: what is reported is a true part of the dropped slots, the count is a
        # lower bound, and the audit's first and last dropped slot are exact.
        assert set(plan.dropped) <= set(dropped)
        assert plan.dropped == sorted(plan.dropped)
        assert (plan.dropped[0], plan.dropped[-1]) == (dropped[0], dropped[-1])
        assert MAX_SLOTS_COUNTED <= len(plan.dropped) < len(dropped)


def test_audit_record_says_how_many_and_when() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    plan = plan_fires("* * * * *", "UTC", now - timedelta(minutes=40), now, GRACE, "enqueue_missed_with_cap")
    assert len(plan.enqueue) == ENQUEUE_CAP + 2  # 25 newest missed, plus the two inside the grace
    assert plan.missed_enqueued == ENQUEUE_CAP
    audit = plan.audit("enqueue_missed_with_cap")
    assert audit is not None
    payload, reason = audit
    assert payload["missedSlots"] == {
        "count": 14,
        "atLeast": False,
        "from": "2026-11-28T11:20:00Z",
        "to": "2026-11-28T11:33:00Z",
        "catchUpPolicy": "enqueue_missed_with_cap",
    }
    assert (
        reason
        == "14 missed slot(s) between 2026-11-28T11:20:00Z and 2026-11-28T11:33:00Z dropped (enqueue_missed_with_cap)"
    )


def test_a_very_long_outage_is_bounded_and_still_keeps_the_newest_slots() -> None:
    now = datetime(2026, 11, 28, 12, 0, 30, tzinfo=UTC)
    plan = plan_fires("* * * * *", "UTC", now - timedelta(days=30), now, GRACE, "enqueue_missed_with_cap")
    assert plan.enqueue[-1] == datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert plan.missed_enqueued == ENQUEUE_CAP
    assert plan.enqueue == [
        datetime(2026, 11, 28, 11, 35, tzinfo=UTC) + timedelta(minutes=i) for i in range(26)
    ]
    assert plan.dropped_at_least
    assert plan.next_run_at == datetime(2026, 11, 28, 12, 1, tzinfo=UTC)
