"""The fire simulator: a routine's next fires, or a company's calendar of fires in a window.

Predictions follow the scheduler exactly: a trigger's chain of fires starts at its stored
`nextRunAt` (what the scheduler claims next) and continues with `shared.cron.next_fire`, the
function the scheduler advances triggers with. The outcome is the dispatcher's own rule
(`decide_concurrency`) applied to the routine as it is now.
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from routines_api.answers import Row, dump, respond
from routines_api.auth import path_uuid, principal_of
from routines_api.checks import load_routine, require_company_exists
from routines_api.feature_models import UpcomingOut
from routines_api.inputs import query_instant, query_int, query_uuid
from routines_api.routes import ROUTES, QueryParam
from routines_api.sql import QUERIES
from routines_dispatcher.policy import ActiveIssue, decide_concurrency
from shared.cron import EARLIEST, LATEST, iso_utc, next_fire, zone
from shared.errors import BadRequest, InvalidCron, InvalidTimezone
from shared.http import DB_KEY

SIMULATOR = ROUTES.tagged("simulator")

MAX_COUNT = 100
MAX_WINDOW = timedelta(days=31)
MAX_CALENDAR_FIRES = 1000
MAX_CALENDAR_TRIGGERS = 5000
_TINY = timedelta(microseconds=1)


@dataclass(frozen=True)
class ScheduleSpec:
    """One schedule trigger as the simulator sees it."""

    trigger_id: uuid.UUID
    routine_id: uuid.UUID
    label: str | None
    cron_expression: str
    timezone: str
    next_run_at: datetime | None  # the scheduler's next claim; None while it cannot fire
    outcome: str


def predicted_outcome(
    routine_status: str, policy: str, trigger_enabled: bool, active: ActiveIssue | None
) -> str:
    """What a fire would lead to now: the dispatcher's decision, or why it would not fire."""
    if routine_status == "archived":
        return "archived"
    if not trigger_enabled:
        return "disabled"
    if routine_status == "paused":
        return "paused"
    return decide_concurrency(policy, routine_status, active).value


def _first_fire(spec: ScheduleSpec, start: datetime, keep_overdue: bool) -> datetime:
    """The first fire of the chain at or after `start` (or an overdue `nextRunAt`: the scheduler
    is behind and records it next)."""
    if spec.next_run_at is not None and (keep_overdue or spec.next_run_at >= start):
        return spec.next_run_at
    return next_fire(spec.cron_expression, spec.timezone, start - _TINY)


def merge_fires(
    specs: Iterable[ScheduleSpec],
    start: datetime,
    *,
    count: int,
    until: datetime | None = None,
    keep_overdue: bool = False,
) -> tuple[list[tuple[datetime, ScheduleSpec]], bool]:
    """Fires of all `specs` from `start` (and up to `until`), merged in time order; at most
    `count` of them, and whether more were left out."""
    heap: list[tuple[datetime, int, ScheduleSpec]] = []
    for index, spec in enumerate(specs):
        try:
            heap.append((_first_fire(spec, start, keep_overdue), index, spec))
        except (InvalidCron, InvalidTimezone):
            continue  # validated on write; a zone removed from tzdata later is left out
    heapq.heapify(heap)
    fires: list[tuple[datetime, ScheduleSpec]] = []
    while heap:
        instant, index, spec = heap[0]
        if until is not None and instant > until:
            break
        if len(fires) == count:
            return fires, True
        fires.append((instant, spec))
        heapq.heapreplace(heap, (next_fire(spec.cron_expression, spec.timezone, instant), index, spec))
    return fires, False


def fire_json(instant: datetime, spec: ScheduleSpec) -> dict[str, Any]:
    local = instant.astimezone(zone(spec.timezone))
    return {
        "routine_id": spec.routine_id,
        "trigger_id": spec.trigger_id,
        "label": spec.label,
        "cron_expression": spec.cron_expression,
        "timezone": spec.timezone,
        "utc": iso_utc(instant),
        "local": local.isoformat(),
        "dst": summer_time(local),
        "predicted_outcome": spec.outcome,
    }


def summer_time(local: datetime) -> bool:
    """Whether the clocks are ahead of the zone's winter time at `local`: its offset is above the
    lower of its January and July offsets. Not `dst()`: tzdata gives Ireland a negative DST in
    winter (Irish Standard Time is the summer one), which made Dublin's winter `true`."""
    assert local.tzinfo is not None
    offsets = [datetime(local.year, month, 1, tzinfo=local.tzinfo).utcoffset() for month in (1, 7)]
    current = local.utcoffset()
    assert current is not None and None not in offsets
    return current > min(o for o in offsets if o is not None)


def _active_issues(rows: Sequence[Row]) -> dict[uuid.UUID, ActiveIssue]:
    return {issue["routine_id"]: ActiveIssue(issue["id"], issue["origin_run_id"]) for issue in rows}


def _query_include_disabled(request: web.Request) -> bool:
    raw = request.query.get("includeDisabled", "false")
    if raw not in ("true", "false"):
        raise BadRequest("query parameter includeDisabled must be true or false")
    return raw == "true"


@SIMULATOR.get(
    "/api/routines/{routineId}/upcoming",
    response=UpcomingOut,
    errors=(400, 404),
    query=(
        QueryParam.integer("count", MAX_COUNT, 10, "Fires to list."),
        QueryParam(
            "includeDisabled",
            {"type": "string", "enum": ["true", "false"], "default": "false"},
            "Also list the fires of disabled triggers (outcome `disabled`).",
        ),
    ),
)
async def routine_upcoming(request: web.Request) -> web.Response:
    """The routine's next fires across its schedule triggers, with the predicted outcome.

    The next `count` fires across the routine's enabled schedule triggers, merged in time order, each with its
    trigger, the instant in UTC and in the trigger's zone, the DST flag, and the predicted outcome if it fired
    now (`issue_created`, `coalesced`, `skipped`, or `paused`/`disabled`/`archived` when it would not fire).
    Predictions follow the scheduler: each chain starts at the trigger's `nextRunAt`. Example: `GET
    /api/routines/{routineId}/upcoming?count=3`.
    """
    principal = principal_of(request)
    routine_id = path_uuid(request, "routineId", "routine")
    count = query_int(request, "count", 10, MAX_COUNT)
    include_disabled = _query_include_disabled(request)
    async with request.app[DB_KEY].connection() as conn:
        routine = await load_routine(conn, principal, routine_id)
        triggers = await conn.fetch(QUERIES["schedule_triggers_of_routine"], routine_id)
        active = _active_issues(await conn.fetch(QUERIES["open_execution_issues"], [routine_id]))
        now: datetime = await conn.fetchval(QUERIES["transaction_now"])
    specs = []
    for trigger in triggers:
        if not trigger["enabled"] and not include_disabled:
            continue
        outcome = predicted_outcome(
            routine["status"], routine["concurrency_policy"], trigger["enabled"], active.get(routine_id)
        )
        specs.append(
            ScheduleSpec(
                trigger["id"],
                routine_id,
                trigger["label"],
                trigger["cron_expression"],
                trigger["timezone"],
                trigger["next_run_at"],
                outcome,
            )
        )
    fires, truncated = merge_fires(specs, now, count=count, keep_overdue=True)
    return respond(dump(UpcomingOut, {"fires": [fire_json(i, s) for i, s in fires], "truncated": truncated}))


@SIMULATOR.get(
    "/api/companies/{companyId}/upcoming",
    response=UpcomingOut,
    errors=(400, 403, 404),
    query=(
        QueryParam.instant("from", "Window start (default now)."),
        QueryParam.instant("to", "Window end (default from + 7 days)."),
        QueryParam.uuid("assigneeAgentId", "Only this agent's routines."),
    ),
)
async def company_upcoming(request: web.Request) -> web.Response:
    """The company's calendar: every fire of its active routines in a window (at most 31 days).

    Every fire of the company's active routines' enabled schedule triggers with from ≤ utc ≤ to (default now …
    now + 7 days, at most 31 days, at most 1,000 fires then `truncated`). Example: `GET
    /api/companies/{companyId}/upcoming?from=2026-03-30T00:00:00Z&to=2026-04-06T00:00:00Z&assigneeAgentId=…`.
    """
    principal = principal_of(request)
    company_id = path_uuid(request, "companyId", "company")
    principal.require_company(company_id)
    assignee = query_uuid(request, "assigneeAgentId")
    start, end = query_instant(request, "from"), query_instant(request, "to")
    async with request.app[DB_KEY].connection() as conn:
        await require_company_exists(conn, company_id)
        now: datetime = await conn.fetchval(QUERIES["transaction_now"])
        start = start or now
        end = end or start + timedelta(days=7)
        if end <= start:
            raise BadRequest("to must be after from")
        if end - start > MAX_WINDOW:
            raise BadRequest(f"the window may span at most {MAX_WINDOW.days} days")
        if not (start >= EARLIEST and end <= LATEST):
            # Fires are computed within the preview's range; past it the calendar fell silent.
            raise BadRequest("the window must lie between 1970-01-01T00:00:00Z and 2200-01-01T00:00:00Z")
        triggers = await conn.fetch(
            QUERIES["company_schedule_triggers"], company_id, assignee, MAX_CALENDAR_TRIGGERS + 1
        )
        if len(triggers) > MAX_CALENDAR_TRIGGERS:
            raise BadRequest(
                f"more than {MAX_CALENDAR_TRIGGERS} schedule triggers; narrow with assigneeAgentId"
            )
        routine_ids = list({trigger["routine_id"] for trigger in triggers})
        active = _active_issues(await conn.fetch(QUERIES["open_execution_issues"], routine_ids))
    specs = [
        ScheduleSpec(
            trigger["id"],
            trigger["routine_id"],
            trigger["label"],
            trigger["cron_expression"],
            trigger["timezone"],
            trigger["next_run_at"],
            predicted_outcome(
                trigger["routine_status"],
                trigger["concurrency_policy"],
                True,
                active.get(trigger["routine_id"]),
            ),
        )
        for trigger in triggers
    ]
    fires, truncated = merge_fires(specs, start, count=MAX_CALENDAR_FIRES, until=end)
    return respond(dump(UpcomingOut, {"fires": [fire_json(i, s) for i, s in fires], "truncated": truncated}))
