"""Test oracles for cron, written without shared/cron.py: a grammar strategy and a reference matcher.

The reference decides membership value by value ("does any list item admit v?") instead of
expanding ranges, so it shares neither code nor method with the parser under test. The DST rule
is applied minute by minute in UTC, as DESIGN.md words it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# name, lowest, highest, names, value of the first name
FIELDS: list[tuple[str, int, int, list[str], int]] = [
    ("minute", 0, 59, [], 0),
    ("hour", 0, 23, [], 0),
    ("day-of-month", 1, 31, [], 1),
    ("month", 1, 12, MONTHS, 1),
    ("day-of-week", 0, 7, DAYS, 0),
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


# --- generating expressions from the grammar ----------------------------------------------


@st.composite
def _value(
    draw: st.DrawFn, index: int, at_least: int | None = None, only: int | None = None
) -> tuple[int, str]:
    _, low, high, names, first = FIELDS[index]
    value = only if only is not None else draw(st.integers(at_least if at_least is not None else low, high))
    if names and 0 <= value - first < len(names) and draw(st.booleans()):
        name = names[value - first]
        cased = "".join(c.upper() if draw(st.booleans()) else c for c in name)  # any case
        return value, cased
    return value, str(value)


@st.composite
def _item(draw: st.DrawFn, index: int) -> str:
    high = FIELDS[index][2]
    kind = draw(st.sampled_from(["*", "*/s", "n", "n-n", "a-b", "a-b/s", "n/s"]))
    step = draw(st.integers(1, high))
    if kind == "*":
        return "*"
    if kind == "*/s":
        return f"*/{step}"
    start, start_text = draw(_value(index))
    if kind == "n":
        return start_text
    if kind == "n/s":
        return f"{start_text}/{step}"
    if kind == "n-n":
        return f"{start_text}-{draw(_value(index, only=start))[1]}"  # a single-value range, maybe 5-FRI
    _, end_text = draw(_value(index, at_least=start))
    return f"{start_text}-{end_text}" + (f"/{step}" if kind == "a-b/s" else "")


def field_text(index: int) -> st.SearchStrategy[str]:
    return st.lists(_item(index), min_size=1, max_size=3).map(",".join)


def _macro_any_case(name: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda ups: "".join(c.upper() if up else c for c, up in zip(name, ups, strict=True))
    )


five_fields: st.SearchStrategy[str] = st.tuples(*(field_text(i) for i in range(5))).map(" ".join)
macros: st.SearchStrategy[str] = st.sampled_from(sorted(MACROS)).flatmap(_macro_any_case)
expressions: st.SearchStrategy[str] = st.sampled_from([five_fields] * 4 + [macros]).flatmap(lambda s: s)


# --- the reference ------------------------------------------------------------------------


def value_of(token: str, index: int) -> int:
    _, _, _, names, first = FIELDS[index]
    if token.lower() in names:
        return names.index(token.lower()) + first
    return int(token)


def _admits(item: str, value: int, index: int) -> bool:
    """Does one list item admit `value`? (`a/s` runs from a to the end of the field.)"""
    _, low, high, _, _ = FIELDS[index]
    base, _, step_text = item.partition("/")
    step = int(step_text) if step_text else 1
    if base == "*":
        start, end = low, high
    elif "-" in base:
        first, last = base.split("-")
        start, end = value_of(first, index), value_of(last, index)
    else:
        start = value_of(base, index)
        end = high if step_text else start
    return start <= value <= end and (value - start) % step == 0


def reference_field(text: str, index: int) -> set[int]:
    """The values a field admits; day-of-week 7 is Sunday (0)."""
    _, low, high, _, _ = FIELDS[index]
    values = {v for v in range(low, high + 1) if any(_admits(item, v, index) for item in text.split(","))}
    return {v % 7 for v in values} if index == 4 else values


@dataclass(frozen=True)
class Reference:
    minutes: set[int]
    hours: set[int]
    doms: set[int]
    months: set[int]
    dows: set[int]
    either_day: bool  # both day fields restricted: Vixie's OR rule
    fixed_time: bool

    def matches(self, wall: datetime) -> bool:
        dom, dow = wall.day in self.doms, (wall.isoweekday() % 7) in self.dows
        day = (dom or dow) if self.either_day else (dom and dow)
        return wall.minute in self.minutes and wall.hour in self.hours and wall.month in self.months and day


def reference(expression: str) -> Reference:
    text = MACROS.get(expression.strip().lower(), expression)
    fields = text.split()
    minutes, hours, doms, months, dows = (reference_field(f, i) for i, f in enumerate(fields))
    return Reference(
        minutes,
        hours,
        doms,
        months,
        dows,
        either_day=not fields[2].startswith("*") and not fields[4].startswith("*"),
        fixed_time="*" not in fields[0] and "*" not in fields[1],
    )


def brute_force_fires(expression: str, tz_name: str, start: datetime, end: datetime) -> list[datetime]:
    """Fires in (start, end], minute by minute in UTC, by the DST rule as DESIGN.md words it."""
    ref, tz = reference(expression), ZoneInfo(tz_name)
    return _walk(ref.matches, ref.fixed_time, tz, start, end)


def _walk(
    matches: Callable[[datetime], bool], fixed: bool, tz: ZoneInfo, start: datetime, end: datetime
) -> list[datetime]:
    result = []
    moment = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while moment <= end:
        local = moment.astimezone(tz)
        wall = local.replace(tzinfo=None)
        fire = matches(wall) and (not fixed or local.fold == 0)
        previous = (moment - timedelta(minutes=1)).astimezone(tz)
        jump = local.utcoffset() - previous.utcoffset()  # type: ignore[operator]
        if fixed and jump > timedelta(0):  # wall times skipped by a spring-forward fire now
            skipped = wall - jump
            while skipped < wall:
                fire = fire or matches(skipped)
                skipped += timedelta(minutes=1)
        if fire and moment > start:
            result.append(moment)
        moment += timedelta(minutes=1)
    return result
