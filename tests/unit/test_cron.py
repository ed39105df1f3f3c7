"""Cron maths: parsing, DST rule vectors, and properties against a brute-force reference."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim, CronSimError
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.cron import (
    MACROS,
    CronSchedule,
    describe,
    fires_between,
    iso_utc,
    known_timezones,
    next_fire,
    parse_cron,
    preview,
    zone,
)
from shared.errors import InvalidCron, InvalidTimezone, Unprocessable
from tests.unit.cron_reference import FIELDS as FIELD_SPECS
from tests.unit.cron_reference import brute_force_fires, expressions, field_text, reference, value_of
from tests.unit.cron_vectors import SPRING_FORWARD_GAP


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
        ("61 * * * *", "minute field: 61 is out of range 0-59"),
        ("* 24 * * *", "hour field: 24 is out of range 0-23"),
        ("0 25 * * *", "hour field: 25 is out of range 0-23"),
        ("0 0 0 * *", "day-of-month field: 0 is out of range 1-31"),
        ("0 0 * 13 *", "month field: 13 is out of range 1-12"),
        ("0 0 * * 8", "day-of-week field: 8 is out of range 0-7"),
        ("0 0 30 2 *", "never matches"),
        ("0 0 31 4,6,9,11 *", "never matches"),
        ("0 0 * * FOO", "day-of-week field: unknown name 'FOO' \\(use SUN-SAT\\)"),
        ("0 0 * BAR *", "month field: unknown name 'BAR' \\(use JAN-DEC\\)"),
        ("0 0 * * MONDAY", "day-of-week field: unknown name 'MONDAY'"),
        ("0 MON * * *", "hour field: 'MON' is not a number"),
        ("0 0 L * *", "day-of-month field: 'L' is not a number"),
        (
            "0 0 * * 1#2",
            "day-of-week field: '1#2' is not a value \\(L, W, # and \\? are not standard cron\\)",
        ),
        ("@reboot", "unsupported macro"),
        ("0 0 ? * *", "day-of-month field: '\\?' is not a value"),
        ("*/0 * * * *", "minute field: step 0 is out of range 1-59"),
        ("*/x * * * *", "minute field: step 'x' is not a number"),
        ("1,,2 * * * *", "minute field: empty item in list '1,,2'"),
        ("1- * * * *", "minute field: a value is missing"),
        ("1-2-3 * * * *", "minute field: '2-3' is not a value"),
        ("٣ * * * *", "minute field: '٣' is not a value"),
    ],
)
def test_invalid_expressions_say_why(expr: str, reason: str) -> None:
    with pytest.raises(InvalidCron, match=reason):
        parse_cron(expr)


@pytest.mark.parametrize("name", ["Mars/Base", "", "../etc/passwd", "Europe/", " UTC", "zoneinfo/UTC"])
def test_unknown_zones_are_rejected(name: str) -> None:
    with pytest.raises(InvalidTimezone, match=f"unknown time zone {name!r}"):
        zone(name)


@pytest.mark.parametrize(
    "name", ["localtime", "posixrules", "Factory", "posix/Europe/Amsterdam", "right/UTC", "/etc/localtime"]
)
def test_host_dependent_zones_are_rejected(name: str) -> None:
    with pytest.raises(InvalidTimezone, match=f"time zone {name!r} depends on the host"):
        zone(name)


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("Europe/Amsterdam", "Europe/Amsterdam"),
        ("UTC", "Etc/UTC"),
        ("US/Eastern", "America/New_York"),
        ("Asia/Calcutta", "Asia/Kolkata"),
        ("Europe/Kiev", "Europe/Kyiv"),
        ("Etc/GMT+5", "Etc/GMT+5"),
    ],
)
def test_canonical_names_and_links_are_accepted_with_the_same_rules(name: str, canonical: str) -> None:
    instant = utc(2026, 7, 1, 12)
    assert instant.astimezone(zone(name)).utcoffset() == instant.astimezone(zone(canonical)).utcoffset()
    assert str(zone(name)) == name


def test_every_listed_zone_loads() -> None:
    names = known_timezones()
    assert {"Europe/Amsterdam", "UTC", "US/Eastern"} <= names
    assert not {"localtime", "posixrules", "Factory"} & names
    assert not [n for n in names if n.startswith(("posix/", "right/"))]
    for name in names:
        assert datetime(2026, 1, 1, tzinfo=zone(name)).utcoffset() is not None


@pytest.mark.parametrize(
    ("name", "suggestions"),
    [
        ("Europe/Amsterdamm", "did you mean Europe/Amsterdam\\?"),
        ("europe/amsterdam", "did you mean Europe/Amsterdam\\?"),
        ("Amsterdam", "did you mean Europe/Amsterdam\\?"),
        ("Amerika/New_York", "did you mean America/New_York\\?"),
        ("Mars/Base", "use an IANA name such as Europe/Amsterdam"),
    ],
)
def test_unknown_zone_gets_close_suggestions(name: str, suggestions: str) -> None:
    with pytest.raises(InvalidTimezone, match=f"unknown time zone '{name}'; {suggestions}"):
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


# --- defects of the croniter-based expansion (issue 12) ------------------------------------


@pytest.mark.parametrize(
    ("expr", "start", "expected"),
    [
        # `N-N` is the one value N, not the whole field.
        ("0 9-9 * * *", utc(2026, 11, 30), ["2026-11-30T09:00:00Z", "2026-12-01T09:00:00Z"]),
        ("57-57 * * * *", utc(2026, 11, 30), ["2026-11-30T00:57:00Z", "2026-11-30T01:57:00Z"]),
        ("*/30 22-22 * * 1-5", utc(2026, 11, 30), ["2026-11-30T22:00:00Z", "2026-11-30T22:30:00Z"]),
        ("*/30 22-22 * * 1-5", utc(2026, 11, 30, 22, 30), ["2026-12-01T22:00:00Z", "2026-12-01T22:30:00Z"]),
    ],
)
def test_single_value_range_is_that_value_not_the_whole_field(
    expr: str, start: datetime, expected: list[str]
) -> None:
    assert [p["utc"] for p in preview(expr, "UTC", start, 2)] == expected


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("5-1 * * * *", "minute field: range 5-1 is reversed"),
        ("0 17-9 * * *", "hour field: range 17-9 is reversed"),
        ("0 0 * DEC-JAN *", "month field: range DEC-JAN is reversed"),
        ("0 0 * * FRI-MON", "day-of-week field: range FRI-MON is reversed"),
    ],
)
def test_reversed_range_is_rejected_naming_the_field(expr: str, message: str) -> None:
    with pytest.raises(InvalidCron, match=message):
        parse_cron(expr)


@pytest.mark.parametrize("after", [datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, tzinfo=UTC)])
def test_preview_after_out_of_bounds_is_unprocessable(after: datetime) -> None:
    with pytest.raises(Unprocessable, match="after must be between 1970"):
        preview("0 0 29 2 *", "UTC", after, 100)


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
        {"utc": "2026-11-30T08:00:00Z", "local": "2026-11-30T09:00:00+01:00", "dst": None},
        {"utc": "2026-12-07T08:00:00Z", "local": "2026-12-07T09:00:00+01:00", "dst": None},
    ]


def test_preview_says_when_daylight_saving_moved_a_fire() -> None:
    vector = SPRING_FORWARD_GAP
    spring = preview(vector.expression, vector.timezone, vector.after, 2)
    assert spring[0] == vector.first_fire
    assert spring[1]["dst"] is None
    fixed = preview("30 2 * * *", "Europe/Amsterdam", utc(2026, 10, 24, 12), 1)
    assert fixed[0]["utc"] == "2026-10-25T00:30:00Z"
    assert fixed[0]["dst"] == {
        "kind": "first_of_repeated",
        "wallTime": "2026-10-25T02:30",
        "note": "02:30 occurs twice on 2026-10-25 (clocks fall back); this is the first occurrence",
    }
    wildcard = preview("*/30 2 * * *", "Europe/Amsterdam", utc(2026, 10, 24, 12), 5)
    kinds = [(f["utc"], f["dst"] and f["dst"]["kind"]) for f in wildcard]
    assert kinds == [
        ("2026-10-25T00:00:00Z", "first_of_repeated"),
        ("2026-10-25T00:30:00Z", "first_of_repeated"),
        ("2026-10-25T01:00:00Z", "second_of_repeated"),
        ("2026-10-25T01:30:00Z", "second_of_repeated"),
        ("2026-10-26T01:00:00Z", None),
    ]
    # A wildcard job in the gap does not fire at all, so no fire carries a note there.
    gap = preview("*/30 2 * * *", "Europe/Amsterdam", utc(2027, 3, 27, 12), 1)
    assert gap[0] == {"utc": "2027-03-29T00:00:00Z", "local": "2027-03-29T02:00:00+02:00", "dst": None}


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

# Schedules that fire often enough to meet DST transitions inside a 30 h window.
dense_expressions = st.builds(
    lambda *fields: " ".join(fields),
    field_text(0),
    field_text(1),
    st.sampled_from(["*", "*/2", "1-31", "*/10,25-31", "20-28", "1,15"]),
    st.sampled_from(["*", "3-4,9-11", "*/2", "SEP-dec,mar-APR"]),
    st.sampled_from(["*", "*/2", "0-6", "1-5", "SUN", "sat-sat", "5-7", "MON,SAT"]),
)


def _cronsim_fires(expr: str, tz: str, start: datetime, end: datetime) -> list[datetime]:
    fires: list[datetime] = []
    for moment in CronSim(_as_cronsim_reads_it(expr), start.astimezone(ZoneInfo(tz))):
        instant = moment.astimezone(UTC)
        if instant > end:
            return fires
        if instant > start:
            fires.append(instant)
    return fires


@settings(max_examples=60, deadline=None)
@given(dense_expressions, st.sampled_from(ZONES), st.sampled_from(ANCHORS), st.integers(-36, 12))
def test_agrees_with_brute_force_and_cronsim(expr: str, tz: str, anchor: datetime, hours: int) -> None:
    """Three implementations that share no code agree on every fire instant around DST changes."""
    start = anchor + timedelta(hours=hours)
    end = start + timedelta(hours=30)
    ours = list(fires_between(expr, tz, start, end))
    assert ours == brute_force_fires(expr, tz, start, end)
    minute, hour = expr.split()[:2]
    # DESIGN.md: any `*` in the minute or hour field makes a clock-following job; cronsim (like
    # Debian's code) looks only at the first character. They differ only for lists like `0,*`.
    same_rule = ("*" in minute) == minute.startswith("*") and ("*" in hour) == hour.startswith("*")
    # cronsim 2.8 mis-steps over Lord Howe's 30-minute shift (`* */3 * * *` starts at 16:30Z on
    # 2026-10-03, not at 03:00+11 = 16:00Z); the brute force above covers that zone.
    if same_rule and tz != "Australia/Lord_Howe":
        assert ours == _cronsim_fires(expr, tz, start, end)


@settings(max_examples=80, deadline=None)
@given(dense_expressions, st.sampled_from(ZONES), st.sampled_from(ANCHORS), st.integers(-2000, 2000))
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


# --- the grammar, differentially --------------------------------------------------------------


def _as_cronsim_reads_it(expr: str) -> str:
    """cronsim 2.8 reads a stepped one-value range `N-N/s` as `N/s` (N to the end); cron means N."""
    fields = MACROS.get(expr.lower(), expr).split()
    for index, text in enumerate(fields):
        items = []
        for item in text.split(","):
            base, _, step = item.partition("/")
            first, dash, last = base.partition("-")
            same = dash and step and value_of(first, index) == value_of(last, index)
            items.append(first if same else item)
        fields[index] = ",".join(items)
    return " ".join(fields)


def _cronsim_fields(expr: str) -> tuple[set[int], set[int], set[int], set[int], set[int], bool]:
    parsed = CronSim(_as_cronsim_reads_it(expr), datetime(2026, 1, 1))
    weekdays = {w % 7 for w in parsed.weekdays if isinstance(w, int)}
    return parsed.minutes, parsed.hours, parsed.days, parsed.months, weekdays, parsed.day_and


@settings(max_examples=400, deadline=None)
@given(expressions)
def test_parsed_fields_agree_with_cronsim_and_the_reference(expr: str) -> None:
    """Every expression of the grammar means the same to us, to cronsim and to the reference."""
    refused: str | None = None
    try:
        ours = parse_cron(expr)
    except InvalidCron as exc:
        refused = exc.message
    if refused is not None:
        assert "never matches" in refused  # e.g. `0 0 30 2 *`; cronsim refuses those too
        with pytest.raises(CronSimError):
            _cronsim_fields(expr)
        return
    got = tuple(
        set(f) for f in (ours.minutes, ours.hours, ours.days_of_month, ours.months, ours.days_of_week)
    )
    minutes, hours, doms, months, dows, day_and = _cronsim_fields(expr)
    assert got == (minutes, hours, doms, months, dows)
    assert (not (ours.dom_restricted and ours.dow_restricted)) == day_and
    ref = reference(expr)
    assert got == (ref.minutes, ref.hours, ref.doms, ref.months, ref.dows)
    assert (ours.dom_restricted and ours.dow_restricted) == ref.either_day
    assert ours.fixed_time == ref.fixed_time
    words = describe(expr, "UTC")  # cron-descriptor never fails on the grammar (no fallback used)
    assert words.endswith(" (UTC)") and not words.startswith("Cron ")


@st.composite
def _broken_field(draw: st.DrawFn) -> tuple[int, str, str]:
    """One field made invalid: a value out of range, a reversed range, or step 0."""
    index = draw(st.integers(0, 4))
    name, low, high, _, _ = FIELD_SPECS[index]
    kind = draw(st.sampled_from(["above", "reversed", "step0"]))
    if kind == "above":
        value = draw(st.integers(high + 1, high + 100))
        return index, str(value), f"{name} field: {value} is out of range {low}-{high}"
    if kind == "reversed":
        end = draw(st.integers(low, high - 1))
        start = draw(st.integers(end + 1, high))
        return index, f"{start}-{end}", f"{name} field: range {start}-{end} is reversed"
    return index, "*/0", f"{name} field: step 0 is out of range 1-{high}"


@settings(max_examples=150, deadline=None)
@given(st.tuples(*(field_text(i) for i in range(5))), _broken_field())
def test_invalid_fields_are_refused_by_us_and_cronsim_naming_field_value_and_range(
    fields: tuple[str, ...], broken: tuple[int, str, str]
) -> None:
    index, text, message = broken
    expr = " ".join(text if i == index else f for i, f in enumerate(fields))
    with pytest.raises(InvalidCron) as refused:
        parse_cron(expr)
    assert refused.value.message == message
    with pytest.raises(CronSimError):
        _cronsim_fields(expr)


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        # Both day fields restricted: the OR rule, so every Monday of February as well.
        ("0 0 29 2 MON", utc(2026, 1, 1), ["2026-02-02T00:00:00Z", "2026-02-09T00:00:00Z"]),
        # AND rule (day-of-week starts with *): Feb 29 on Sun/Tue/Thu/Sat: 2032, then 2048, 16 years
        # apart (a fixed eight-year search window said "never matches" here).
        ("0 0 29 2 */2", utc(2029, 1, 1), ["2032-02-29T00:00:00Z", "2048-02-29T00:00:00Z"]),
        # Across a century that is not a leap year.
        ("0 0 29 2 *", utc(2096, 3, 1), ["2104-02-29T00:00:00Z", "2108-02-29T00:00:00Z"]),
    ],
)
def test_rare_dates_far_apart_are_found(expr: str, after: datetime, expected: list[str]) -> None:
    assert [f["utc"] for f in preview(expr, "UTC", after, 2)] == expected


@pytest.mark.parametrize(
    ("expr", "zone_name"),
    [("0 0 29 2 *", "UTC"), ("0 0 31 * *", "Europe/Amsterdam"), ("0 0 29 2 */2", "America/New_York")],
)
def test_rare_dates_cost_a_handful_of_day_checks_per_fire(
    monkeypatch: pytest.MonkeyPatch, expr: str, zone_name: str
) -> None:
    """The search jumps to months and days that can match: it never walks the calendar day by day."""
    schedule = parse_cron(expr)
    calls = 0
    original = CronSchedule.matches_day

    def counted(self: CronSchedule, day: date) -> bool:
        nonlocal calls
        calls += 1
        return original(self, day)

    monkeypatch.setattr(CronSchedule, "matches_day", counted)
    preview(schedule.expression, zone_name, utc(2026, 11, 28), 100)
    assert calls <= 100 * 4  # a day-by-day walk needs ~1,461 per Feb 29


@pytest.mark.parametrize(
    ("expr", "words"),
    [
        # Vixie's rule: under a `*` both the day of month and the day of week must match.
        (
            "0 9 */2 * 1",
            "At 09:00, only on Monday, and only if it is also on day 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21,"
            " 23, 25, 27, 29, and 31 of the month (UTC)",
        ),
        (
            "0 9 1 * */2",
            "At 09:00, on day 1 of the month, and only if it is also on Sunday, Tuesday, Thursday, and Saturday (UTC)",
        ),
        ("0 9 1 * 1", "At 09:00, on day 1 of the month, or on Monday (UTC)"),  # both restricted: either
        # Steps from a single value run to the end of the field; a step must divide the cycle to be "every".
        ("0 12 * * fri/2", "At 12:00, only on Sunday and Friday (UTC)"),
        ("0 0 * jan/5 *", "At 00:00, only in January, June, and November (UTC)"),
        ("*/59 * * * *", "At 0 and 59 minutes past the hour (UTC)"),
        ("*,5 * * * *", "Every minute (UTC)"),
        ("0 0 * * 0-7", "At 00:00, Sunday through Saturday (UTC)"),
        # A step over the whole field is "every" only when it divides the cycle; never in days.
        ("0-59/59 * * * *", "At 0 and 59 minutes past the hour (UTC)"),
        ("0 0-23/5 * * *", "At 00:00, 05:00, 10:00, 15:00 and 20:00 (UTC)"),
        ("0 0 * 1-12/7 *", "At 00:00, only in January and August (UTC)"),
        ("0 0 * * 0-6/4", "At 00:00, only on Sunday and Thursday (UTC)"),
        ("0 0 */16 * *", "At 00:00, on day 1 and 17 of the month (UTC)"),
        ("0 9 * * */7", "At 09:00, only on Sunday (UTC)"),
        ("0 9 1 * */1", "At 09:00, on day 1 of the month (UTC)"),  # a full week: no condition
        ("5-40/10 * * * *", "Every 10 minutes, minutes 5 through 40 past the hour (UTC)"),
        # What the library reads right stays as written.
        ("*/15 * * * *", "Every 15 minutes (UTC)"),
        ("0 9 * * MON-fri", "At 09:00, Monday through Friday (UTC)"),
        ("0 0 1 */3 *", "At 00:00, on day 1 of the month, every 3 months (UTC)"),
    ],
)
def test_descriptions_say_what_fires(expr: str, words: str) -> None:
    """cron-descriptor read `0 9 */2 * 1` as "every 2 days, or on Monday" (it fires on Mondays with
    an odd date), `fri/2` as "every 2 weeks" (Fridays and Sundays), `*/59` as "every 59 minutes"
    (:00 and :59) and `jan/5` as "every 5 months" (January, June, November)."""
    assert describe(expr, "UTC") == words
