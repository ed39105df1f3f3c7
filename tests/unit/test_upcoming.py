"""The fire simulator predicts exactly what the scheduler fires: its merged chain of fires equals
the slots the scheduler's own planning (`plan_fires`) records when driven by a clock we control."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routines_api.upcoming import ScheduleSpec, merge_fires, predicted_outcome, summer_time
from routines_dispatcher.policy import ActiveIssue
from routines_scheduler.catchup import plan_fires
from shared.cron import next_fire

GRACE = timedelta(seconds=60)
# Instants a few hours before daylight-saving changes in the zones below (and one quiet day).
TRANSITIONS = [
    datetime(2026, 3, 29, 0, 0, tzinfo=UTC),  # Europe spring forward
    datetime(2026, 10, 25, 0, 0, tzinfo=UTC),  # Europe fall back
    datetime(2026, 3, 8, 5, 0, tzinfo=UTC),  # New York spring forward
    datetime(2026, 11, 1, 4, 0, tzinfo=UTC),  # New York fall back
    datetime(2026, 4, 4, 13, 0, tzinfo=UTC),  # Lord Howe (30-minute shift)
    datetime(2026, 7, 14, 12, 0, tzinfo=UTC),
]
CRONS = st.builds(
    lambda m, h, dom, mon, dow: f"{m} {h} {dom} {mon} {dow}",
    st.sampled_from(["0", "30", "*/15", "*", "5,35", "59"]),
    st.sampled_from(["*", "2", "1-3", "*/6", "9", "0,12"]),
    st.sampled_from(["*", "*", "1", "15,29"]),
    st.sampled_from(["*", "*", "3,10,11"]),
    st.sampled_from(["*", "*", "1-5", "SUN"]),
)
ZONES = st.sampled_from(["UTC", "Europe/Amsterdam", "America/New_York", "Australia/Lord_Howe"])


def _spec(cron: str, tz: str, next_run_at: datetime | None) -> ScheduleSpec:
    return ScheduleSpec(uuid.uuid4(), uuid.uuid4(), None, cron, tz, next_run_at, "issue_created")


def scheduler_fires(cron: str, tz: str, created_at: datetime, wakeups: list[int], n: int) -> list[datetime]:
    """Drive the scheduler's planning with a controlled clock: the trigger is created at
    `created_at` (nextRunAt as the API stores it), and the scheduler wakes each time a little after
    the trigger is due (`wakeups`, seconds within the misfire grace)."""
    next_run_at = next_fire(cron, tz, created_at)
    fired: list[datetime] = []
    step = 0
    while len(fired) < n:
        now = next_run_at + timedelta(seconds=wakeups[step % len(wakeups)])
        step += 1
        plan = plan_fires(cron, tz, next_run_at, now, GRACE, "skip_missed")
        assert not plan.dropped  # woken within the grace: nothing is missed
        fired.extend(plan.enqueue)
        assert plan.next_run_at is not None
        next_run_at = plan.next_run_at
    return fired[:n]


@settings(max_examples=120, deadline=None)
@given(
    st.lists(st.tuples(CRONS, ZONES), min_size=1, max_size=3),
    st.sampled_from(TRANSITIONS),
    st.integers(0, 6 * 3600),
    st.lists(st.integers(0, 60), min_size=1, max_size=5),
    st.integers(1, 25),
)
def test_predicted_fires_equal_the_schedulers_real_fires(
    triggers: list[tuple[str, str]], base: datetime, offset_sec: int, wakeups: list[int], count: int
) -> None:
    created_at = base + timedelta(seconds=offset_sec)
    specs = [_spec(cron, tz, next_fire(cron, tz, created_at)) for cron, tz in triggers]
    predicted, truncated = merge_fires(specs, created_at, count=count, keep_overdue=True)
    real = sorted(
        (instant, index)
        for index, (cron, tz) in enumerate(triggers)
        for instant in scheduler_fires(cron, tz, created_at, wakeups, count)
    )[:count]
    by_spec = {id(s): i for i, s in enumerate(specs)}
    assert [(instant, by_spec[id(spec)]) for instant, spec in predicted] == real
    assert truncated  # schedules never end, so the count always binds


@settings(max_examples=60, deadline=None)
@given(CRONS, ZONES, st.sampled_from(TRANSITIONS), st.integers(1, 48))
def test_window_lists_every_fire_inside_it(cron: str, tz: str, base: datetime, hours: int) -> None:
    start, end = base, base + timedelta(hours=hours)
    fires, truncated = merge_fires([_spec(cron, tz, None)], start, count=10_000, until=end)
    real = [f for f in scheduler_fires(cron, tz, start - timedelta(microseconds=1), [0], 3000) if f <= end]
    assert [f for f, _ in fires] == real
    assert not truncated


def test_a_later_next_run_at_hides_the_fires_before_it() -> None:
    """A trigger re-enabled (or a routine resumed) fires from its new nextRunAt, not before."""
    start = datetime(2026, 7, 14, 12, 0, tzinfo=UTC)
    resumed = datetime(2026, 7, 14, 12, 30, tzinfo=UTC)
    fires, _ = merge_fires([_spec("*/10 * * * *", "UTC", resumed)], start, count=3)
    assert [f for f, _ in fires] == [resumed + timedelta(minutes=10 * i) for i in range(3)]


def test_an_overdue_next_run_at_is_the_next_fire_while_the_scheduler_is_behind() -> None:
    now = datetime(2026, 7, 14, 12, 0, 30, tzinfo=UTC)
    overdue = datetime(2026, 7, 14, 12, 0, tzinfo=UTC)
    fires, _ = merge_fires([_spec("* * * * *", "UTC", overdue)], now, count=2, keep_overdue=True)
    assert [f for f, _ in fires] == [overdue, overdue + timedelta(minutes=1)]


def test_predicted_outcomes() -> None:
    active = ActiveIssue(uuid.uuid4(), uuid.uuid4())
    assert predicted_outcome("active", "coalesce_if_active", True, None) == "issue_created"
    assert predicted_outcome("active", "coalesce_if_active", True, active) == "coalesced"
    assert predicted_outcome("active", "skip_if_active", True, active) == "skipped"
    assert predicted_outcome("active", "always_enqueue", True, active) == "issue_created"
    assert predicted_outcome("paused", "always_enqueue", True, None) == "paused"
    assert predicted_outcome("active", "always_enqueue", False, None) == "disabled"
    assert predicted_outcome("archived", "always_enqueue", False, None) == "archived"


@pytest.mark.parametrize(
    ("zone_name", "winter", "summer"),
    [
        ("Europe/Dublin", False, True),  # tzdata: winter is a negative DST, summer is "standard"
        ("Europe/London", False, True),
        ("Australia/Sydney", True, False),  # southern hemisphere: summer in January
        ("Asia/Tokyo", False, False),  # no daylight saving
    ],
)
def test_summer_time_is_the_clocks_being_ahead_whatever_tzdata_calls_standard(
    zone_name: str, winter: bool, summer: bool
) -> None:
    tz = ZoneInfo(zone_name)
    assert summer_time(datetime(2026, 1, 15, 12, tzinfo=tz)) is winter
    assert summer_time(datetime(2026, 7, 15, 12, tzinfo=tz)) is summer
