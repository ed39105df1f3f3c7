"""Schedule health of a routine: expected slots against runs recorded, fire lag, run outcomes,
the current failure streak and the open execution issue's age."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from routines_api.answers import dump, respond
from routines_api.auth import path_uuid, principal_of
from routines_api.checks import load_routine
from routines_api.feature_models import HealthOut
from routines_api.inputs import query_int
from routines_api.routes import ROUTES, QueryParam
from routines_api.sql import QUERIES
from shared.alerts import failure_streak
from shared.cron import fires_between, iso_utc
from shared.errors import InvalidCron, InvalidTimezone
from shared.http import DB_KEY

HEALTH = ROUTES.tagged("health")

MAX_DAYS = 90
# The scheduler's default misfire grace (DESIGN "Catch-up"): runs recorded within it are on time.
ON_TIME_WITHIN = timedelta(seconds=60)
# Slots counted per request, across all its triggers (bounds the CPU of one health call).
MAX_SLOTS_COUNTED = 10_000
STREAK_LOOKBACK = 1000


def expected_slots(
    cron: str, tz: str, start: datetime, end: datetime, budget: int = MAX_SLOTS_COUNTED
) -> tuple[int, bool]:
    """How many slots fall in (start, end], and whether counting stopped at the budget."""
    try:
        count = sum(1 for _ in fires_between(cron, tz, start, end, limit=budget + 1))
    except (InvalidCron, InvalidTimezone):
        return 0, False
    return min(count, budget), count > budget


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


@HEALTH.get(
    "/api/routines/{routineId}/health",
    response=HealthOut,
    errors=(400, 404),
    query=(QueryParam.integer("days", MAX_DAYS, 7, "Window length."),),
)
async def routine_health(request: web.Request) -> web.Response:
    """Schedule health: slots vs runs per schedule trigger, fire lag, outcomes, failure streak.

    For each schedule trigger: slots expected in the window vs runs recorded (on time within 60 s,
    late/catch-up, backfilled, missed-and-skipped, unaccounted) and fire-lag percentiles; for the routine:
    runs by status, the current streak of consecutive failed runs, alerting state, and the open execution
    issue's age and staleness. Example: `GET /api/routines/{routineId}/health?days=7`.
    """
    principal = principal_of(request)
    routine_id = path_uuid(request, "routineId", "routine")
    days = query_int(request, "days", 7, MAX_DAYS)
    async with request.app[DB_KEY].connection() as conn:
        routine = await load_routine(conn, principal, routine_id)
        now: datetime = await conn.fetchval(QUERIES["transaction_now"])
        start = now - timedelta(days=days)
        triggers = await conn.fetch(QUERIES["health_schedule_triggers"], routine_id)
        slot_runs = {
            row["trigger_id"]: row
            for row in await conn.fetch(QUERIES["health_slot_runs"], routine_id, start, now, ON_TIME_WITHIN)
        }
        audits: dict[Any, list[Any]] = {}
        for row in await conn.fetch(QUERIES["health_missed_slots"], routine_id, start):
            audits.setdefault(row["trigger_id"], []).append(row)
        by_status = {
            row["status"]: int(row["n"])
            for row in await conn.fetch(QUERIES["health_status_counts"], routine_id, start)
        }
        settled = await conn.fetch(QUERIES["health_settled"], routine_id, STREAK_LOOKBACK)
        issues = await conn.fetch(QUERIES["open_execution_issues"], [routine_id])
    trigger_reports = []
    budget = MAX_SLOTS_COUNTED
    for trigger in triggers:
        counted_from = max(start, trigger["created_at"])
        expected, at_least = expected_slots(
            trigger["cron_expression"], trigger["timezone"], counted_from, now, budget
        )
        budget = max(0, budget - expected)
        runs = slot_runs.get(trigger["id"])
        lag = list(runs["lag"]) if runs is not None and runs["lag"] is not None else [None, None, None]
        on_time = int(runs["on_time"]) if runs else 0
        late = int(runs["late"]) if runs else 0
        backfilled = int(runs["backfilled"]) if runs else 0
        dropped = 0
        for audit in audits.get(trigger["id"], []):
            count = int(audit["dropped"] or 0)
            if audit["first_slot"] is not None and audit["first_slot"] <= counted_from:
                # Written in the window, but covering slots from before it: count only its
                # slots that are in the window (never more than the window holds).
                within, _ = expected_slots(
                    trigger["cron_expression"],
                    trigger["timezone"],
                    counted_from,
                    audit["last_slot"] or now,
                    budget,
                )
                count = min(count, within)
            dropped += count
        trigger_reports.append(
            {
                "trigger_id": trigger["id"],
                "label": trigger["label"],
                "enabled": trigger["enabled"],
                "cron_expression": trigger["cron_expression"],
                "timezone": trigger["timezone"],
                "expected_slots": expected,
                "expected_slots_at_least": at_least,
                "on_time": on_time,
                "late": late,
                "backfilled": backfilled,
                "missed_skipped": dropped,
                "unaccounted": max(0, expected - on_time - late - backfilled - dropped),
                "lag_seconds": {
                    "p50": _round(lag[0]),
                    "p90": _round(lag[1]),
                    "p99": _round(lag[2]),
                    "max": _round(runs["lag_max"]) if runs else None,
                },
            }
        )
    open_issue = None
    if issues:
        issue = issues[0]
        age = (now - issue["created_at"]).total_seconds()
        stale_after = routine["stale_after_sec"]
        open_issue = {
            "issue_id": issue["id"],
            "status": issue["status"],
            "opened_at": issue["created_at"],
            "age_sec": round(age, 3),
            "stale": stale_after is not None and age > stale_after,
        }
    report = {
        "routine_id": routine_id,
        "days": days,
        "from": iso_utc(start),
        "to": iso_utc(now),
        "on_time_within_sec": int(ON_TIME_WITHIN.total_seconds()),
        "triggers": trigger_reports,
        "runs_by_status": by_status,
        "failure_streak": failure_streak([row["status"] for row in settled]),
        "failure_alert_after": routine["failure_alert_after"],
        "auto_pause_after": routine["auto_pause_after"],
        "alerting": routine["failure_alerted_at"] is not None,
        "stale_after_sec": routine["stale_after_sec"],
        "stale_action": routine["stale_action"],
        "paused_reason": routine["paused_reason"],
        "open_issue": open_issue,
    }
    return respond(dump(HealthOut, report))
