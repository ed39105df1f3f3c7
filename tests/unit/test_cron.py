"""Cron maths: parsing, DST rule vectors, and properties against a brute-force reference."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.cron import fires_between, iso_utc, next_fire, parse_cron, preview, zone
from shared.errors import InvalidCron, InvalidTimezone


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def fires(expr: str, tz: str, start: datetime, end: datetime) -> list[str]:
    return [iso_utc(f) for f in fires_between(expr, tz, start, end)]


# --- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr",
    [
        "0 9 * * 1",
        "*/15 9-17 * JAN-MAR mon-fri",
        "0 0 1,15 * *",
        "0 12 * * 7",
        "5 4 * * sun",
        "@hourly",
        "@daily",
    ],
)
def test_valid_expressions_parse(expr: str) -> None:
    parse_cron(expr)


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("", "empty"),
        ("* * * *", "expected 5 fields"),
        ("0 0 * * * *", "expected 5 fields"),
        ("61 * * * *", "invalid"),
        ("* 24 * * *", "invalid"),
        ("0 0 30 2 *", "never matches"),
        ("0 0 * * FOO", "invalid day-of-week name"),
        ("0 0 * BAR *", "invalid month name"),
        ("0 0 L * *", "invalid"),
        ("0 0 * * 1#2", "invalid"),
        ("@reboot", "unsupported macro"),
        ("0 0 ? * *", "invalid"),
    ],
)
def test_invalid_expressions_say_why(expr: str, reason: str) -> None:
    with pytest.raises(InvalidCron, match=reason):
        parse_cron(expr)


@pytest.mark.parametrize("name", ["Mars/Base", "", "../etc/passwd", "Europe/"])
def test_unknown_zones_are_rejected(name: str) -> None:
    with pytest.raises(InvalidTimezone):
        zone(name)


def test_seven_is_sunday_and_vixie_or_rule() -> None:
    sundays = fires("0 12 * * 7", "UTC", utc(2026, 11, 1), utc(2026, 11, 30))
    assert sundays == [
        "2026-11-01T12:00:00Z",
        "2026-11-08T12:00:00Z",
        "2026-11-15T12:00:00Z",
        "2026-11-22T12:00:00Z",
        "2026-11-29T12:00:00Z",
    ]
    # Both day fields restricted: the 13th OR a Friday.
    either = fires("0 0 13 * FRI", "UTC", utc(2026, 11, 1), utc(2026, 11, 30))
    assert either == [
        "2026-11-06T00:00:00Z",
        "2026-11-13T00:00:00Z",
        "2026-11-20T00:00:00Z",
        "2026-11-27T00:00:00Z",
    ]
    # Day-of-week restricted only: AND with the unrestricted day of month.
    assert fires("0 0 * * FRI", "UTC", utc(2026, 11, 1), utc(2026, 11, 14)) == [
        "2026-11-06T00:00:00Z",
        "2026-11-13T00:00:00Z",
    ]


# --- DST vectors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "tz", "start", "end", "expected"),
    [
        # Spring forward, fixed time in the gap: once, at the first instant after the gap.
        (
            "30 2 * * *",
            "Europe/Amsterdam",
            utc(2027, 3, 27, 12),
            utc(2027, 3, 28, 12),
            ["2027-03-28T01:00:00Z"],
        ),
        # Fall back, fixed time repeated: once, first occurrence.
        (
            "30 2 * * *",
            "Europe/Amsterdam",
            utc(2026, 10, 24, 12),
            utc(2026, 10, 25, 12),
            ["2026-10-25T00:30:00Z"],
        ),
        # Wildcard at fall back: both 02:00 and both 02:30.
        (
            "*/30 * * * *",
            "Europe/Amsterdam",
            utc(2026, 10, 24, 23, 45),
            utc(2026, 10, 25, 2, 0),
            [
                "2026-10-25T00:00:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-25T01:00:00Z",
                "2026-10-25T01:30:00Z",
                "2026-10-25T02:00:00Z",
            ],
        ),
        # Wildcard at spring forward: 02:00 and 02:30 do not exist and do not fire.
        (
            "*/30 * * * *",
            "Europe/Amsterdam",
            utc(2027, 3, 28, 0, 15),
            utc(2027, 3, 28, 1, 45),
            ["2027-03-28T00:30:00Z", "2027-03-28T01:00:00Z", "2027-03-28T01:30:00Z"],
        ),
        # New York: 02:30 skipped in March → 03:00 EDT = 07:00Z; 01:30 twice in November → first.
        (
            "30 2 * * *",
            "America/New_York",
            utc(2027, 3, 13, 12),
            utc(2027, 3, 14, 12),
            ["2027-03-14T07:00:00Z"],
        ),
        (
            "30 1 * * *",
            "America/New_York",
            utc(2026, 10, 31, 12),
            utc(2026, 11, 1, 12),
            ["2026-11-01T05:30:00Z"],
        ),
        ("30 1 * * *", "America/New_York", utc(2026, 11, 1, 5, 31), utc(2026, 11, 2, 0), []),
        (
            "*/30 1 * * *",
            "America/New_York",
            utc(2026, 11, 1, 4, 59),
            utc(2026, 11, 1, 7, 0),
            ["2026-11-01T05:00:00Z", "2026-11-01T05:30:00Z", "2026-11-01T06:00:00Z", "2026-11-01T06:30:00Z"],
        ),
        # Sydney (southern hemisphere): spring forward in October 02:00→03:00 (+10→+11).
        (
            "30 2 * * *",
            "Australia/Sydney",
            utc(2026, 10, 3, 6),
            utc(2026, 10, 4, 6),
            ["2026-10-03T16:00:00Z"],
        ),
        # … and fall back in April 03:00→02:00 (+11→+10): 02:30 first occurrence only.
        ("30 2 * * *", "Australia/Sydney", utc(2027, 4, 3, 6), utc(2027, 4, 4, 6), ["2027-04-03T15:30:00Z"]),
        (
            "*/30 2 * * *",
            "Australia/Sydney",
            utc(2027, 4, 3, 14, 45),
            utc(2027, 4, 3, 17, 0),
            ["2027-04-03T15:00:00Z", "2027-04-03T15:30:00Z", "2027-04-03T16:00:00Z", "2027-04-03T16:30:00Z"],
        ),
        # Lord Howe: 30-minute shift. Spring 02:00→02:30: 02:15 fires at 02:30 local (15:30Z).
        (
            "15 2 * * *",
            "Australia/Lord_Howe",
            utc(2026, 10, 3, 0),
            utc(2026, 10, 4, 0),
            ["2026-10-03T15:30:00Z"],
        ),
        (
            "*/15 2 * * *",
            "Australia/Lord_Howe",
            utc(2026, 10, 3, 14, 0),
            utc(2026, 10, 3, 16, 30),
            ["2026-10-03T15:30:00Z", "2026-10-03T15:45:00Z"],
        ),
        # Lord Howe fall back 02:00→01:30 (+11→+10:30): 01:45 wildcard twice, fixed once.
        (
            "45 1 * * *",
            "Australia/Lord_Howe",
            utc(2027, 4, 3, 12),
            utc(2027, 4, 4, 12),
            ["2027-04-03T14:45:00Z"],
        ),
        (
            "*/15 1 * * *",
            "Australia/Lord_Howe",
            utc(2027, 4, 3, 14, 40),
            utc(2027, 4, 3, 15, 40),
            ["2027-04-03T14:45:00Z", "2027-04-03T15:00:00Z", "2027-04-03T15:15:00Z"],
        ),
        # Chatham (+12:45/+13:45): spring 02:45→03:45 in September.
        ("0 3 * * *", "Pacific/Chatham", utc(2026, 9, 26, 6), utc(2026, 9, 27, 6), ["2026-09-26T14:00:00Z"]),
        # … a wildcard job skips 03:00 (inside the gap): 02:00 +12:45, then 04:00 +13:45.
        (
            "0 * * * *",
            "Pacific/Chatham",
            utc(2026, 9, 26, 12, 30),
            utc(2026, 9, 26, 15, 0),
            ["2026-09-26T13:15:00Z", "2026-09-26T14:15:00Z"],
        ),
        # Chatham fall back 03:45→02:45 in April: 03:00 wildcard twice, fixed once.
        ("0 3 * * *", "Pacific/Chatham", utc(2027, 4, 3, 6), utc(2027, 4, 4, 6), ["2027-04-03T13:15:00Z"]),
        (
            "0 * * * *",
            "Pacific/Chatham",
            utc(2027, 4, 3, 12, 30),
            utc(2027, 4, 3, 14, 30),
            ["2027-04-03T13:15:00Z", "2027-04-03T14:15:00Z"],
        ),
        # Kolkata: no DST, +05:30.
        (
            "30 2 * * *",
            "Asia/Kolkata",
            utc(2027, 3, 27, 12),
            utc(2027, 3, 29, 12),
            ["2027-03-27T21:00:00Z", "2027-03-28T21:00:00Z"],
        ),
    ],
)
def test_dst_vectors(expr: str, tz: str, start: datetime, end: datetime, expected: list[str]) -> None:
    assert fires(expr, tz, start, end) == expected


def test_preview_gives_utc_and_local() -> None:
    got = preview("0 9 * * 1", "Europe/Amsterdam", utc(2026, 11, 28), 2)
    assert got == [
        {"utc": "2026-11-30T08:00:00Z", "local": "2026-11-30T09:00:00+01:00"},
        {"utc": "2026-12-07T08:00:00Z", "local": "2026-12-07T09:00:00+01:00"},
    ]


# --- properties ----------------------------------------------------------------------------

ZONES = [
    "UTC",
    "Europe/Amsterdam",
    "America/New_York",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Asia/Kolkata",
    "America/Santiago",
    "Europe/London",
]
# Instants near transitions of those zones, so the windows straddle DST changes often.
ANCHORS = [
    utc(2026, 10, 25, 1),
    utc(2027, 3, 28, 1),
    utc(2026, 11, 1, 6),
    utc(2027, 3, 14, 7),
    utc(2026, 10, 3, 16),
    utc(2027, 4, 3, 15),
    utc(2026, 9, 26, 14),
    utc(2027, 4, 3, 14),
    utc(2027, 4, 4, 3),
    utc(2026, 9, 6, 4),
    utc(2026, 6, 15, 12),
]

expressions = st.builds(
    lambda *fields: " ".join(fields),
    st.sampled_from(["*", "*/15", "0", "30", "0,30", "5-10", "*/7", "45"]),
    st.sampled_from(["*", "2", "1-3", "*/2", "0", "9", "1,2,3"]),
    st.sampled_from(["*", "*", "1", "15", "*/10", "25-31"]),
    st.sampled_from(["*", "*", "3", "10", "*/2", "SEP-DEC"]),
    st.sampled_from(["*", "*", "0", "1-5", "SUN", "7", "MON,SAT"]),
)


def brute_force(expr: str, tz_name: str, start: datetime, end: datetime) -> list[datetime]:
    """Minute by minute in UTC, deciding each instant by the rule as written in DESIGN.md."""
    schedule, tz = parse_cron(expr), ZoneInfo(tz_name)
    result = []
    moment = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while moment <= end:
        local = moment.astimezone(tz)
        wall = local.replace(tzinfo=None)
        fire = schedule.matches_wall(wall) and (not schedule.fixed_time or local.fold == 0)
        previous = (moment - timedelta(minutes=1)).astimezone(tz)
        jump = local.utcoffset() - previous.utcoffset()  # type: ignore[operator]
        if schedule.fixed_time and jump > timedelta(0):
            skipped = wall - jump
            while skipped < wall:
                fire = fire or schedule.matches_wall(skipped)
                skipped += timedelta(minutes=1)
        if fire and moment > start:
            result.append(moment)
        moment += timedelta(minutes=1)
    return result


@settings(max_examples=60, deadline=None)
@given(expressions, st.sampled_from(ZONES), st.sampled_from(ANCHORS), st.integers(-36, 12))
def test_agrees_with_brute_force(expr: str, tz: str, anchor: datetime, hours: int) -> None:
    start = anchor + timedelta(hours=hours)
    end = start + timedelta(hours=30)
    assert list(fires_between(expr, tz, start, end)) == brute_force(expr, tz, start, end)


@settings(max_examples=80, deadline=None)
@given(expressions, st.sampled_from(ZONES), st.sampled_from(ANCHORS), st.integers(-2000, 2000))
def test_next_fire_is_strictly_after_and_increasing(
    expr: str, tz: str, anchor: datetime, minutes: int
) -> None:
    after = anchor + timedelta(minutes=minutes, seconds=17)
    schedule = parse_cron(expr)
    previous = after
    for _ in range(5):
        current = next_fire(schedule, tz, previous)
        assert current > previous
        local = current.astimezone(ZoneInfo(tz)).replace(tzinfo=None)
        # Every fire matches in local time, except a fixed-time slot moved out of a DST gap.
        moved = (
            schedule.fixed_time
            and current.astimezone(ZoneInfo(tz)).utcoffset()
            != (current - timedelta(minutes=1)).astimezone(ZoneInfo(tz)).utcoffset()
        )
        assert schedule.matches_wall(local) or moved
        previous = current
