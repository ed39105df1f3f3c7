"""Cron maths: parse 5-field expressions and find fire instants in an IANA zone.

Pure functions; the time is always passed in. The field grammar is ours (see docs/api.md): numbers,
ranges `a-b` (a single-value range `N-N` is N; a reversed one is an error), steps over `*`, over a
range and from a start value (`*/s`, `a-b/s`, `a/s`), comma lists of any of these, three-letter
month and day names in any case, Sunday as 0 or 7, and the seven `@` macros.

The search runs in local wall time, month by month and day by day (it never walks minutes), and
maps to UTC with Debian cron(8)'s daylight-saving rule:

* fixed-time jobs (no `*` in the minute or hour field): a wall time inside a spring-forward gap
  fires once at the first instant after the gap; a repeated wall time fires once, at its first
  occurrence;
* wildcard jobs follow the clock: non-existent wall times never fire, repeated ones fire at both
  occurrences.
"""

from __future__ import annotations

import bisect
import calendar
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

from cron_descriptor import ExpressionDescriptor, FormatError, MissingFieldError, Options, WrongArgumentError

from shared.errors import InvalidCron, Unprocessable
from shared.timezones import known_timezones, zone

__all__ = [
    "MACROS",
    "CronSchedule",
    "DstNote",
    "Fire",
    "describe",
    "fires_between",
    "iso_utc",
    "known_timezones",
    "next_fire",
    "next_fire_detail",
    "parse_cron",
    "preview",
    "zone",
]

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_NUMBER = re.compile(r"[0-9]{1,4}")
_NAME = re.compile(r"[A-Za-z]+")
_MINUTE = timedelta(minutes=1)
# Longer than any daylight-saving shift in the tz database (2 h, Antarctica/Troll).
_DST_HORIZON = timedelta(hours=3)
# The Gregorian calendar repeats every 400 years: what does not match within them never does. (Feb 29
# on a given weekday can be 40 years apart; month skipping keeps even that to a few dozen steps.)
_SEARCH_YEARS = 400
# Previews and schedules are asked about this span of years; outside it the answer is a 422.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    first_name_value: int = 0


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, MONTH_NAMES, 1),
    _Field("day-of-week", 0, 7, DAY_NAMES, 0),  # 7 is Sunday too, as in Vixie cron
)


@dataclass(frozen=True)
class CronSchedule:
    """A parsed expression: the allowed values of each field and the rules that apply."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]  # 0 = Sunday
    dom_restricted: bool
    dow_restricted: bool
    fixed_time: bool  # no `*` in minute or hour: the DST rule for fixed-time jobs applies
    hour_list: tuple[int, ...] = field(default=(), repr=False, compare=False)  # sorted, for bisect
    minute_list: tuple[int, ...] = field(default=(), repr=False, compare=False)
    dom_list: tuple[int, ...] = field(default=(), repr=False, compare=False)
    month_list: tuple[int, ...] = field(default=(), repr=False, compare=False)
    dow_ahead: tuple[int, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hour_list", tuple(sorted(self.hours)))
        object.__setattr__(self, "minute_list", tuple(sorted(self.minutes)))
        object.__setattr__(self, "dom_list", tuple(sorted(self.days_of_month)))
        object.__setattr__(self, "month_list", tuple(sorted(self.months)))
        # For each weekday: how many days until an allowed weekday (0 if it is one; 7: none is).
        ahead = tuple(next((k for k in range(7) if (w + k) % 7 in self.days_of_week), 7) for w in range(7))
        object.__setattr__(self, "dow_ahead", ahead)

    def matches_date(self, day: int, weekday: int) -> bool:
        """Whether a day of a matching month matches (`weekday`: 0 = Sunday)."""
        dom = day in self.days_of_month
        dow = weekday in self.days_of_week
        if self.dom_restricted and self.dow_restricted:
            return dom or dow  # Vixie cron: either field may match
        return dom and dow

    def matches_day(self, day: date) -> bool:
        return day.month in self.months and self.matches_date(day.day, day.isoweekday() % 7)

    def matches_wall(self, wall: datetime) -> bool:
        return wall.minute in self.minutes and wall.hour in self.hours and self.matches_day(wall)


# --- grammar -------------------------------------------------------------------------------


def _value(token: str, field: _Field) -> int:
    """One number or name of a field, within its range."""
    if _NUMBER.fullmatch(token):
        value = int(token)
        if not field.low <= value <= field.high:
            raise InvalidCron(f"{field.name} field: {value} is out of range {field.low}-{field.high}")
        return value
    if _NAME.fullmatch(token):
        if not field.names:
            raise InvalidCron(f"{field.name} field: {token!r} is not a number")
        if token.upper() not in field.names:
            raise InvalidCron(
                f"{field.name} field: unknown name {token!r} (use {field.names[0]}-{field.names[-1]})"
            )
        return field.names.index(token.upper()) + field.first_name_value
    if token == "":
        raise InvalidCron(f"{field.name} field: a value is missing")
    hint = " (L, W, # and ? are not standard cron)" if set(token) & set("LW#?lw") else ""
    raise InvalidCron(f"{field.name} field: {token!r} is not a value{hint}")


def _step(token: str, field: _Field) -> int:
    if not _NUMBER.fullmatch(token):
        raise InvalidCron(f"{field.name} field: step {token!r} is not a number")
    step = int(token)
    if not 1 <= step <= field.high:
        raise InvalidCron(f"{field.name} field: step {step} is out of range 1-{field.high}")
    return step


def _parse_item(item: str, field: _Field) -> range:
    """One list item: `*`, `v`, `a-b`, each optionally `/step` (`v/s` means v to the end of the field)."""
    base, slash, step_text = item.partition("/")
    step = _step(step_text, field) if slash else 1
    if base == "*":
        return range(field.low, field.high + 1, step)
    if "-" in base:
        first, _, last = base.partition("-")
        start, end = _value(first, field), _value(last, field)
        if start > end:
            raise InvalidCron(f"{field.name} field: range {base} is reversed")
        return range(start, end + 1, step)
    start = _value(base, field)
    return range(start, (field.high if slash else start) + 1, step)


def _parse_field(text: str, field: _Field) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise InvalidCron(f"{field.name} field: empty item in list {text!r}")
        values.update(_parse_item(item, field))
    if field.names is DAY_NAMES:
        values = {v % 7 for v in values}
    return frozenset(values)


@lru_cache(maxsize=4096)
def parse_cron(expression: str) -> CronSchedule:
    """Parse and validate; errors say which field, which value and what is allowed (InvalidCron)."""
    text = " ".join(expression.split())
    if not text:
        raise InvalidCron("cron expression is empty")
    if text.startswith("@"):
        if text.lower() not in MACROS:
            raise InvalidCron(f"unsupported macro {text!r}; use one of {', '.join(sorted(MACROS))}")
        text = MACROS[text.lower()]
    fields = text.split(" ")
    if len(fields) != 5:
        raise InvalidCron(
            f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
        )
    minutes, hours, doms, months, dows = (
        _parse_field(text, field) for text, field in zip(fields, _FIELDS, strict=True)
    )
    schedule = CronSchedule(
        expression=text,
        minutes=minutes,
        hours=hours,
        days_of_month=doms,
        months=months,
        days_of_week=dows,
        dom_restricted=not fields[2].startswith("*"),
        dow_restricted=not fields[4].startswith("*"),
        fixed_time="*" not in fields[0] and "*" not in fields[1],
    )
    if _next_day(schedule, date(2000, 1, 1)) is None:
        raise InvalidCron(
            f"cron expression never matches a date: day {fields[2]} never occurs in month {fields[3]}"
        )
    return schedule


# --- searching wall time -------------------------------------------------------------------


def _first_day_in_month(schedule: CronSchedule, first: int, length: int, weekday_of_1st: int) -> int | None:
    """The first matching day of a month from day `first` on (`weekday_of_1st`: 0 = Sunday)."""
    doms = schedule.dom_list
    at = bisect.bisect_left(doms, first)
    if schedule.dom_restricted and schedule.dow_restricted:  # OR: the earlier of the two
        by_dom = doms[at] if at < len(doms) and doms[at] <= length else None
        candidate = first + schedule.dow_ahead[(weekday_of_1st + first - 1) % 7]
        by_dow = candidate if candidate <= length else None
        return min((d for d in (by_dom, by_dow) if d is not None), default=None)
    for dom in doms[at:]:  # AND: the day of month, then its weekday
        if dom > length:
            return None
        if (weekday_of_1st + dom - 1) % 7 in schedule.days_of_week:
            return dom
    return None


def _next_day(schedule: CronSchedule, day: date) -> date | None:
    """The first matching date on or after `day`: months that cannot match are never looked at."""
    months = schedule.month_list
    year, month, first = day.year, day.month, day.day
    if month not in schedule.months:
        at = bisect.bisect_right(months, month)
        year, month, first = (year, months[at], 1) if at < len(months) else (year + 1, months[0], 1)
    while year <= min(day.year + _SEARCH_YEARS, 9000):
        weekday_of_1st, length = calendar.monthrange(year, month)  # Monday = 0
        found = _first_day_in_month(schedule, first, length, (weekday_of_1st + 1) % 7)
        if found is not None:
            return date(year, month, found)
        at = bisect.bisect_right(months, month)
        year, month, first = (year, months[at], 1) if at < len(months) else (year + 1, months[0], 1)
    return None


def _next_wall(schedule: CronSchedule, after: datetime) -> datetime | None:
    """The first naive wall time strictly after `after` that matches, or None."""
    start = after.replace(second=0, microsecond=0) + _MINUTE
    day = start.date()
    hours, minutes = schedule.hour_list, schedule.minute_list
    if schedule.matches_day(day):
        index = bisect.bisect_left(hours, start.hour)
        if index < len(hours):
            hour = hours[index]
            if hour == start.hour:
                at = bisect.bisect_left(minutes, start.minute)
                if at < len(minutes):
                    return datetime.combine(day, time(hour, minutes[at]))
                index += 1
            if index < len(hours):
                return datetime.combine(day, time(hours[index], minutes[0]))
    found = _next_day(schedule, day + timedelta(days=1))
    if found is None:
        return None
    return datetime.combine(found, time(hours[0], minutes[0]))


# --- mapping wall time to instants (the DST rule) -----------------------------------------

DstKind = Literal["shifted_out_of_gap", "first_of_repeated", "second_of_repeated"]


@dataclass(frozen=True)
class DstNote:
    """How daylight saving moved one fire: its cron wall time and what happened to it."""

    kind: DstKind
    wall_time: datetime  # the naive local time the expression names


@dataclass(frozen=True)
class Fire:
    """One fire instant (UTC) and, on a transition day, how daylight saving moved it."""

    at: datetime
    dst: DstNote | None = None


def _offset(wall: datetime, tz: ZoneInfo, fold: int) -> timedelta:
    offset = wall.replace(tzinfo=tz, fold=fold).utcoffset()
    assert offset is not None
    return offset


def _gap_end(wall: datetime, tz: ZoneInfo) -> datetime:
    """For a wall time inside a spring-forward gap: the UTC instant the gap ends."""
    low = (wall - _offset(wall, tz, 1)).replace(tzinfo=UTC)  # surely before the transition
    high = (wall - _offset(wall, tz, 0)).replace(tzinfo=UTC)  # surely after it
    after_offset = _offset(wall, tz, 1)
    while high - low > timedelta(seconds=1):
        mid = low + (high - low) / 2
        if mid.astimezone(tz).utcoffset() == after_offset:
            high = mid
        else:
            low = mid
    return high.replace(microsecond=0)


def wall_fires(wall: datetime, tz: ZoneInfo, fixed_time: bool) -> list[Fire]:
    """The fires of a matching wall time, by the DST rule, each saying how DST moved it."""
    first = wall.replace(tzinfo=tz, fold=0)
    second = wall.replace(tzinfo=tz, fold=1)
    if first.utcoffset() == second.utcoffset():
        return [Fire(first.astimezone(UTC))]
    exists_first = first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall
    if not exists_first:  # spring-forward gap
        return [Fire(_gap_end(wall, tz), DstNote("shifted_out_of_gap", wall))] if fixed_time else []
    # Repeated at fall-back: fold=0 is the first occurrence.
    fires = [Fire(first.astimezone(UTC), DstNote("first_of_repeated", wall))]
    if not fixed_time:
        fires.append(Fire(second.astimezone(UTC), DstNote("second_of_repeated", wall)))
    return fires


def wall_instants(wall: datetime, tz: ZoneInfo, fixed_time: bool) -> list[datetime]:
    """The UTC instants at which a matching wall time fires, by the DST rule."""
    return [fire.at for fire in wall_fires(wall, tz, fixed_time)]


def next_fire_detail(schedule: CronSchedule | str, tz: ZoneInfo | str, after: datetime) -> Fire:
    """The first fire strictly after `after` (an aware datetime), with its DST note."""
    if isinstance(schedule, str):
        schedule = parse_cron(schedule)
    if isinstance(tz, str):
        tz = zone(tz)
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    after = after.astimezone(UTC)
    local = after.astimezone(tz)
    wall = local.replace(tzinfo=None)
    # A fall-back ahead repeats wall times we have already passed; start early enough to see them.
    ahead = (after + _DST_HORIZON).astimezone(tz).utcoffset()
    now_offset = local.utcoffset()
    assert ahead is not None and now_offset is not None
    stepped_back = ahead < now_offset
    if stepped_back:
        wall -= now_offset - ahead
    # Step back a minute so a wall time equal to `wall` (e.g. a second occurrence) is considered.
    cursor = wall - _MINUTE
    best: Fire | None = None
    while True:
        found = _next_wall(schedule, cursor)
        if found is None:
            raise InvalidCron("cron expression never matches a date")
        lower_bound = (found - max(_offset(found, tz, 0), _offset(found, tz, 1))).replace(tzinfo=UTC)
        if best is not None and lower_bound > best.at:
            return best
        fires = wall_fires(found, tz, schedule.fixed_time)
        for fire in fires:
            if fire.at > after and (best is None or fire.at < best.at):
                best = fire
        # Only a DST transition reorders wall times and instants: without one in sight, the first
        # matching wall time's instant is the answer (a later wall time cannot come earlier).
        if best is not None and not stepped_back and len(fires) == 1 and fires[0].dst is None:
            return best
        cursor = found


def next_fire(schedule: CronSchedule | str, tz: ZoneInfo | str, after: datetime) -> datetime:
    """The first fire instant (UTC) strictly after `after` (an aware datetime)."""
    return next_fire_detail(schedule, tz, after).at


def fires_between(
    schedule: CronSchedule | str,
    tz: ZoneInfo | str,
    start: datetime,
    end: datetime,
    limit: int = 100_000,
) -> Iterator[datetime]:
    """Fire instants in (start, end], ascending, at most `limit`."""
    current = start
    for _ in range(limit):
        current = next_fire(schedule, tz, current)
        if current > end:
            return
        yield current


def check_search_start(after: datetime) -> None:
    """Searches start between 1970 and 2200 (Unprocessable otherwise)."""
    if not EARLIEST <= after <= LATEST:
        raise Unprocessable(
            f"after must be between 1970-01-01T00:00:00Z and 2200-01-01T00:00:00Z, got {after.isoformat()}",
            {"field": "after"},
        )


def preview(expression: str, tz_name: str, after: datetime, count: int) -> list[dict[str, object]]:
    """The next `count` fires: UTC and local ISO 8601, and how daylight saving moved each (or null)."""
    schedule, tz = parse_cron(expression), zone(tz_name)
    check_search_start(after)
    result: list[dict[str, object]] = []
    current = after
    for _ in range(count):
        fire = next_fire_detail(schedule, tz, current)
        current = fire.at
        result.append(
            {
                "utc": iso_utc(fire.at),
                "local": fire.at.astimezone(tz).isoformat(),
                "dst": _dst_json(fire, tz),
            }
        )
    return result


def _dst_json(fire: Fire, tz: ZoneInfo) -> dict[str, str] | None:
    if fire.dst is None:
        return None
    wall = fire.dst.wall_time
    clock = wall.strftime("%H:%M")
    day = wall.date().isoformat()
    if fire.dst.kind == "shifted_out_of_gap":
        moved_to = fire.at.astimezone(tz).strftime("%H:%M")
        note = f"{clock} does not exist on {day} (clocks spring forward); fires at {moved_to} instead"
    elif fire.dst.kind == "first_of_repeated":
        note = f"{clock} occurs twice on {day} (clocks fall back); this is the first occurrence"
    else:
        note = f"{clock} occurs twice on {day} (clocks fall back); this is the second occurrence"
    return {"kind": fire.dst.kind, "wallTime": wall.isoformat(timespec="minutes"), "note": note}


@lru_cache(maxsize=4096)
def describe(expression: str, tz_name: str) -> str:
    """The schedule in words with its zone, e.g. `At 09:00, Monday through Friday (Europe/Amsterdam)`.

    cron-descriptor writes the words. It gets the expression as written where it reads that form
    right (keeping "every 15 minutes"), else the value lists the parser produced: it reads a step
    from a single value (`fri/2`, `jan/5`) as "every 2 weeks", and `*/59` as "every 59 minutes".
    And it reads a day of month beside a day of week as either one — cron's rule only when both
    are restricted; under a `*` (`*/2` … `1`) both must match, so that day is described apart, as a
    condition."""
    schedule = parse_cron(expression)
    written = schedule.expression.split(" ")
    fields = written if all(map(_reads_as_written, written, _FIELDS)) else _plain_fields(schedule).split(" ")
    condition = ""
    plain = _plain_fields(schedule).split(" ")
    dom_partial, dow_partial = plain[2] != "*", plain[4] != "*"
    if dom_partial and dow_partial and not (schedule.dom_restricted and schedule.dow_restricted):
        if schedule.dom_restricted:  # the week day is the `*` one: a condition on the date
            fields[4] = "*"
            condition = _words(f"0 0 * * {plain[4]}", "get_day_of_week_description")
        else:
            fields[2] = "*"
            condition = _words(f"0 0 {plain[2]} * *", "get_day_of_month_description")
        condition = ", and only if it is also " + condition.removeprefix(", ").removeprefix("only ")
    try:
        return f"{_words(' '.join(fields), 'get_description')}{condition} ({tz_name})"
    except (FormatError, MissingFieldError, WrongArgumentError, ValueError, IndexError):
        return f"Cron {schedule.expression} ({tz_name})"  # not reached for the grammar (property-tested)


def _words(expression: str, part: str) -> str:
    options = Options()
    options.use_24hour_time_format = True
    words: str = getattr(ExpressionDescriptor(expression, options), part)()
    return words


_STEP = re.compile(r"(\*|(\d+)-(\d+))/(\d+)")
_PLAIN_ITEM = re.compile(r"(\d+|[A-Za-z]{3})(-(\d+|[A-Za-z]{3}))?")
_EVERY_READS_RIGHT = ("minute", "hour", "month")  # fixed cycles; days of month and week are not


def _reads_as_written(text: str, spec: _Field) -> bool:
    """Whether cron-descriptor describes this field as written: numbers, names, ranges and lists
    of them, `*`, and a step where "every n" is true — in minutes, hours and months, over the
    whole field only when n divides its cycle (`*/15` minutes is every 15 minutes; `*/59` and
    `0-59/59` are :00 and :59, `0-23/5` hours is 0, 5, …, 20 and then 0 again), over a part of it
    always ("every 10 minutes, minutes 5 through 40"). Never in days of month or week (a month is
    28 to 31 days: `*/16` is the 1st and the 17th), never Sunday written as 7."""
    if text == "*":
        return True
    step = _STEP.fullmatch(text)
    if step is not None:
        if spec.name not in _EVERY_READS_RIGHT:
            return False
        whole = step.group(1) == "*" or (int(step.group(2)), int(step.group(3))) == (spec.low, spec.high)
        return not whole or (spec.high - spec.low + 1) % int(step.group(4)) == 0
    if spec.names is DAY_NAMES and "7" in text:
        return False  # Sunday as 7 reads as "Sunday through Sunday" (`0-7`)
    return all(_PLAIN_ITEM.fullmatch(item) for item in text.split(","))


def _plain_fields(schedule: CronSchedule) -> str:
    """The schedule as comma lists of numbers and ranges, `*` only where the field is a `*`."""
    fields = schedule.expression.split(" ")
    sets = (schedule.minutes, schedule.hours, schedule.days_of_month, schedule.months, schedule.days_of_week)
    plain = []
    for text, values, spec in zip(fields, sets, _FIELDS, strict=True):
        full = set(range(spec.low, min(spec.high, 6 if spec.names is DAY_NAMES else spec.high) + 1))
        if text.startswith("*") and values == full:
            plain.append("*")
            continue
        runs: list[list[int]] = []
        for value in sorted(values):
            if runs and value == runs[-1][1] + 1:
                runs[-1][1] = value
            else:
                runs.append([value, value])
        plain.append(",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs))
    return " ".join(plain)


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
