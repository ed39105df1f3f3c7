"""Backfill with dry run: the slots of a schedule trigger in a past window, and runs for the
missing ones — exactly once per slot, by the slot uniqueness of `routine_runs`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from aiohttp import web

from routines_api import store
from routines_api.answers import dump, respond
from routines_api.auth import path_uuid, principal_of
from routines_api.checks import load_routine
from routines_api.feature_models import BackfillOut, BackfillRequest
from routines_api.inputs import parse_body
from routines_api.routes import ROUTES
from routines_api.sql import QUERIES
from routines_api.state import API_SETTINGS_KEY
from shared.cron import fires_between, iso_utc, zone
from shared.errors import Conflict, Unprocessable
from shared.http import BUS_KEY, DB_KEY
from shared.runs import publish_runs_requested

RUNS = ROUTES.tagged("runs")

MAX_SLOTS = 1000
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_TINY = timedelta(microseconds=1)


def window_slots(cron: str, tz: str, start: datetime, end: datetime) -> list[datetime]:
    """Fire instants with start ≤ t ≤ end (DST rule applied), or 422 beyond MAX_SLOTS."""
    slots = list(fires_between(cron, tz, start - _TINY, end, limit=MAX_SLOTS + 1))
    if len(slots) > MAX_SLOTS:
        raise Unprocessable(f"the window holds more than {MAX_SLOTS} slots; narrow from/to")
    return slots


@RUNS.post(
    "/api/routines/{routineId}/backfill",
    body=BackfillRequest,
    response=BackfillOut,
    errors=(403, 404, 409, 422),
)
async def backfill(request: web.Request) -> web.Response:
    """Slots of a schedule trigger in a past window; with dryRun false, runs for the missing ones.

    Lists every slot of one schedule trigger with from ≤ slot ≤ to (DST rule applied; `to` not in the future;
    ≤ 1,000 slots) and the run already recorded for each. `dryRun` (default true) records nothing; with
    `dryRun: false` the missing slots, oldest first and at most `maxRuns` (default 25, hard limit
    configurable), get runs with `source: "backfill"` that go through the normal pipeline. A slot never gets
    two runs, even under concurrent backfills. Example: `POST /api/routines/{routineId}/backfill {"triggerId":
    "…", "from": "2026-03-27T00:00:00Z", "to": "2026-03-30T12:00:00Z", "dryRun": false}`.
    """
    principal = principal_of(request)
    routine_id = path_uuid(request, "routineId", "routine")
    body = await parse_body(request, BackfillRequest)
    hard_limit = request.app[API_SETTINGS_KEY].backfill_max_runs
    if body.max_runs > hard_limit:
        raise Unprocessable(f"maxRuns may be at most {hard_limit}")
    start, end = body.from_, body.to
    if start.tzinfo is None or end.tzinfo is None:
        raise Unprocessable("from and to need a UTC offset (e.g. 2026-03-29T00:00:00Z)")
    if end <= start:
        raise Unprocessable("to must be after from")
    if start < EARLIEST:
        raise Unprocessable("from must be after 1970-01-01T00:00:00Z")
    recorded: dict[datetime, uuid.UUID] = {}
    async with request.app[DB_KEY].transaction() as conn:
        routine = await load_routine(conn, principal, routine_id, manage=True)
        trigger = await conn.fetchrow(QUERIES["trigger_by_id"], body.trigger_id)
        if trigger is None or trigger["routine_id"] != routine_id or trigger["kind"] != "schedule":
            raise Unprocessable("triggerId: not a schedule trigger of this routine")
        now: datetime = await conn.fetchval(QUERIES["transaction_now"])
        if end > now:
            raise Unprocessable("to is in the future; future slots are the scheduler's")
        zone(trigger["timezone"])
        slots = window_slots(trigger["cron_expression"], trigger["timezone"], start, end)
        existing = {
            run["scheduled_for"]: run["id"]
            for run in await conn.fetch(QUERIES["runs_for_slots"], trigger["id"], slots)
        }
        missing = [s for s in slots if s not in existing]
        # Oldest first: a capped backfill called again continues where it stopped.
        chosen = missing[: body.max_runs]
        if not body.dry_run and chosen:
            if routine["status"] == "archived":
                raise Conflict("routine is archived")
            rows = await conn.fetch(
                QUERIES["insert_backfill_runs"],
                routine_id,
                routine["company_id"],
                trigger["id"],
                chosen,
            )
            recorded = {run["scheduled_for"]: run["id"] for run in rows}
            details = {"triggerId": str(trigger["id"]), "recorded": len(recorded), "from": iso_utc(start)}
            details["to"] = iso_utc(end)
            await store.record_activity(conn, principal, routine, "backfill", details)
    if recorded:
        await publish_runs_requested(
            request.app[BUS_KEY], [(run_id, routine_id) for run_id in recorded.values()]
        )
    tz = zone(trigger["timezone"])
    answer = {
        "trigger_id": trigger["id"],
        "dry_run": body.dry_run,
        "slots": [
            {
                "scheduled_for": iso_utc(s),
                "local": s.astimezone(tz).isoformat(),
                "existing_run_id": existing.get(s),
                "recorded_run_id": recorded.get(s),
            }
            for s in slots
        ],
        "missing": len(missing),
        "recorded": len(recorded),
        "capped": len(missing) - len(chosen),
    }
    return respond(dump(BackfillOut, answer))
