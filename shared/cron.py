"""Cron maths: parse 5-field expressions and find fire instants in an IANA zone.

Pure functions; the time is always passed in. croniter parses and expands the fields; the
search runs in local wall time and maps to UTC with Debian cron(8)'s daylight-saving rule:

* fixed-time jobs (no `*` in the minute or hour field): a wall time inside a spring-forward
  gap fires once at the first instant after the gap; a repeated wall time fires once, at
  its first occurrence;
* wildcard jobs follow the clock: non-existent wall times never fire, repeated ones fire
  at both occurrences.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterBadCronError, CroniterError, croniter

from shared.errors import InvalidCron, InvalidTimezone

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}
_DAYS = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"}
_FIELD_CHARS = re.compile(r"^[0-9A-Za-z*/,\-]+$")
_MINUTE = timedelta(minutes=1)
# Longer than any daylight-saving shift in the tz database (2 h, Antarctica/Troll).
_DST_HORIZON = timedelta(hours=3)
# No valid 5-field expression needs more than a leap cycle to match again.
_MAX_SEARCH_DAYS = 366 * 8 + 2


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

    def matches_day(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days_of_month
        dow = (day.isoweekday() % 7) in self.days_of_week
        if self.dom_restricted and self.dow_restricted:
            return dom or dow  # Vixie cron: either field may match
        return dom and dow

    def matches_wall(self, wall: datetime) -> bool:
        return wall.minute in self.minutes and wall.hour in self.hours and self.matches_day(wall)


def _check_names(field: str, allowed: set[str], what: str) -> None:
    for token in re.split(r"[,\-/]", field):
        if token.isalpha() and token.lower() not in allowed:
            raise InvalidCron(f"invalid {what} name {token!r}")
        if token and not token.isalnum() and token != "*":
            raise InvalidCron(f"invalid {what} value {token!r}")
        if any(c.isalpha() for c in token) and not token.isalpha():
            raise InvalidCron(f"invalid {what} value {token!r}")


@lru_cache(maxsize=4096)
def parse_cron(expression: str) -> CronSchedule:
    """Parse and validate; errors say why (InvalidCron)."""
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
    names = ("minute", "hour", "day-of-month", "month", "day-of-week")
    for field, name in zip(fields, names, strict=True):
        if not _FIELD_CHARS.match(field):
            raise InvalidCron(f"invalid characters in {name} field {field!r}")
    _check_names(fields[0], set(), "minute")
    _check_names(fields[1], set(), "hour")
    _check_names(fields[2], set(), "day-of-month")
    _check_names(fields[3], _MONTHS, "month")
    _check_names(fields[4], _DAYS, "day-of-week")
    try:
        expanded, nth = croniter.expand(text)
    except (CroniterBadCronError, CroniterError, ValueError) as exc:
        raise InvalidCron(f"invalid cron expression: {exc}") from None
    if nth:
        raise InvalidCron("nth-weekday (#) is not standard cron")

    def values(index: int, low: int, high: int) -> frozenset[int]:
        raw = expanded[index]
        if raw == ["*"]:
            return frozenset(range(low, high + 1))
        return frozenset(int(v) % 7 if index == 4 else int(v) for v in raw)

    schedule = CronSchedule(
        expression=text,
        minutes=values(0, 0, 59),
        hours=values(1, 0, 23),
        days_of_month=values(2, 1, 31),
        months=values(3, 1, 12),
        days_of_week=values(4, 0, 6),
        dom_restricted=not fields[2].startswith("*"),
        dow_restricted=not fields[4].startswith("*"),
        fixed_time="*" not in fields[0] and "*" not in fields[1],
    )
    if _next_wall(schedule, datetime(2000, 1, 1)) is None:
        raise InvalidCron("cron expression never matches a date")
    return schedule


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """An IANA zone, or InvalidTimezone."""
    if not name or name != name.strip() or name.startswith(("/", ".")) or ".." in name:
        raise InvalidTimezone(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidTimezone(f"unknown time zone {name!r}") from None


def known_timezones() -> set[str]:
    return available_timezones()


def _next_wall(schedule: CronSchedule, after: datetime) -> datetime | None:
    """The first naive wall time strictly after `after` that matches, or None."""
    candidate = after.replace(second=0, microsecond=0) + _MINUTE
    minutes = sorted(schedule.minutes)
    hours = sorted(schedule.hours)
    for _ in range(_MAX_SEARCH_DAYS):
        if schedule.matches_day(candidate):
            for hour in hours:
                if hour < candidate.hour:
                    continue
                start = candidate.minute if hour == candidate.hour else 0
                for minute in minutes:
                    if minute >= start:
                        return candidate.replace(hour=hour, minute=minute)
        candidate = (candidate + timedelta(days=1)).replace(hour=0, minute=0)
    return None


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


def wall_instants(wall: datetime, tz: ZoneInfo, fixed_time: bool) -> list[datetime]:
    """The UTC instants at which a matching wall time fires, by the DST rule."""
    first = wall.replace(tzinfo=tz, fold=0)
    second = wall.replace(tzinfo=tz, fold=1)
    exists_first = first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall
    if first.utcoffset() == second.utcoffset():
        return [first.astimezone(UTC)]
    if not exists_first:  # spring-forward gap
        return [_gap_end(wall, tz)] if fixed_time else []
    # Repeated at fall-back: fold=0 is the first occurrence.
    if fixed_time:
        return [first.astimezone(UTC)]
    return [first.astimezone(UTC), second.astimezone(UTC)]


def next_fire(schedule: CronSchedule | str, tz: ZoneInfo | str, after: datetime) -> datetime:
    """The first fire instant (UTC) strictly after `after` (an aware datetime)."""
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
    if ahead < now_offset:
        wall -= now_offset - ahead
    # Step back a minute so a wall time equal to `wall` (e.g. a second occurrence) is considered.
    cursor = wall - _MINUTE
    best: datetime | None = None
    while True:
        found = _next_wall(schedule, cursor)
        if found is None:
            raise InvalidCron("cron expression never matches a date")
        lower_bound = (found - max(_offset(found, tz, 0), _offset(found, tz, 1))).replace(tzinfo=UTC)
        if best is not None and lower_bound > best:
            return best
        for instant in wall_instants(found, tz, schedule.fixed_time):
            if instant > after and (best is None or instant < best):
                best = instant
        cursor = found


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


def preview(expression: str, tz_name: str, after: datetime, count: int) -> list[dict[str, str]]:
    """The next `count` fires, each as UTC and local ISO 8601 strings."""
    schedule, tz = parse_cron(expression), zone(tz_name)
    result = []
    current = after
    for _ in range(count):
        current = next_fire(schedule, tz, current)
        result.append({"utc": iso_utc(current), "local": current.astimezone(tz).isoformat()})
    return result


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
