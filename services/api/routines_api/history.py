"""Run history you can reach: one run, keyset-paginated and filtered lists, and replays."""

from __future__ import annotations

from aiohttp import web

from routines_api import store
from routines_api.answers import dump, page_answer, respond
from routines_api.auth import path_uuid, principal_of
from routines_api.checks import fetch_visible, load_routine, load_run
from routines_api.events import publish_and_wait
from routines_api.feature_models import ReplayRequest
from routines_api.inputs import parse_body, query_choice, query_cursor, query_instant, query_limit, query_uuid
from routines_api.models import RunOut
from routines_api.routes import ROUTES, QueryParam, page_params
from routines_api.sql import QUERIES
from routines_api.state import API_SETTINGS_KEY
from shared.errors import Conflict
from shared.http import DB_KEY
from shared.vocabulary import RUN_SOURCES, RUN_STATUSES

RUNS = ROUTES.tagged("runs")

RUN_QUERY = (
    *page_params(maximum=500),
    QueryParam.choice("status", RUN_STATUSES, "Only runs in this status."),
    QueryParam.choice("source", RUN_SOURCES, "Only runs from this source."),
    QueryParam.uuid("triggerId", "Only runs of this trigger."),
    QueryParam.instant("from", "Only runs triggered at or after this instant."),
    QueryParam.instant("to", "Only runs triggered before this instant."),
)


@RUNS.list("/api/routines/{routineId}/runs", RunOut, errors=(400, 404), query=RUN_QUERY)
async def list_runs(request: web.Request) -> web.Response:
    """Run history, newest first; `X-Next-Cursor` names the next page while there is one.

    Newest first by triggeredAt, then id. While older runs exist the answer carries an opaque `X-Next-Cursor`
    header; pass it back as `cursor` for the next page. Filters combine. Example: `GET
    /api/routines/{routineId}/runs?limit=2&status=failed&from=2026-03-01T00:00:00Z`.
    """
    principal = principal_of(request)
    routine_id = path_uuid(request, "routineId", "routine")
    limit = query_limit(request)
    status = query_choice(request, "status", RUN_STATUSES)
    source = query_choice(request, "source", RUN_SOURCES)
    trigger_id = query_uuid(request, "triggerId")
    start, end = query_instant(request, "from"), query_instant(request, "to")
    after_at, after_id = query_cursor(request)
    async with request.app[DB_KEY].connection() as conn:
        await load_routine(conn, principal, routine_id)
        rows = await conn.fetch(
            QUERIES["runs_page"],
            routine_id,
            status,
            source,
            trigger_id,
            start,
            end,
            after_at,
            after_id,
            limit + 1,
            request.app[API_SETTINGS_KEY].list_payload_max_bytes,
        )
    return page_answer(rows, limit, RunOut, "triggered_at")


@RUNS.get("/api/runs/{runId}", response=RunOut, errors=(404,))
async def get_run(request: web.Request) -> web.Response:
    """One run.

    One run of a routine the caller can see (another company's run → 404). Example: `GET /api/runs/9b2c…` →
    `{"id": "9b2c…", "status": "failed", "source": "webhook", "failureReason": "execution issue cancelled",
    …}`.
    """
    return respond(dump(RunOut, await fetch_visible(request, "runId", "run", "run_answer")))


@RUNS.post(
    "/api/runs/{runId}/replay", body=ReplayRequest, response=RunOut, status=202, errors=(403, 404, 409)
)
async def replay_run(request: web.Request) -> web.Response:
    """Replay a run: a new run (source `replay`, `replayOf` the original) through the policy.

    Records a new run with `source: "replay"` and `replayOf` = the original, attributed to the same trigger,
    with the original payload and variable values unless the body gives new ones, and dispatches it through
    the concurrency policy like any fire. The answer waits briefly for the decision. Archived routine → 409.
    Example: `POST /api/runs/9b2c…/replay {"payload": {"context": "retry"}}` → 202 `{"source": "replay",
    "replayOf": "9b2c…", "status": "issue_created", …}`.
    """
    principal = principal_of(request)
    run_id = path_uuid(request, "runId", "run")
    body = await parse_body(request, ReplayRequest)
    async with request.app[DB_KEY].transaction() as conn:
        original = await load_run(conn, principal, run_id)
        routine = await load_routine(conn, principal, original["routine_id"], manage=True)
        if routine["status"] == "archived":
            raise Conflict("routine is archived")
        payload = body.payload if body.payload is not None else original["payload"]
        variables = body.variables if body.variables is not None else original["input_variables"]
        row = await store.insert_replay_run(conn, routine, original, payload, variables)
        details = {"runId": str(row["id"]), "replayOf": str(original["id"])}
        await store.record_activity(conn, principal, routine, "replay", details)
    run = await publish_and_wait(request, dict(row))
    return respond(dump(RunOut, run), 202)
