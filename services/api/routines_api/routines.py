"""Routines, their runs, manual runs and the cron preview."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from routines_api import routine_features, store
from routines_api.answers import dump, respond, trigger_json
from routines_api.auth import path_uuid, principal_of
from routines_api.checks import (
    check_assignee,
    check_reference,
    check_run_overrides,
    load_routine,
    require_company_exists,
)
from routines_api.events import announce_trigger_change, publish_and_wait
from routines_api.inputs import parse_body, query_choice, query_uuid
from routines_api.models import (
    CronPreviewOut,
    CronPreviewRequest,
    ManualRun,
    RoutineCreate,
    RoutineDetail,
    RoutineOut,
    RoutineUpdate,
    RunOut,
)
from routines_api.patches import refuse_nulls
from routines_api.quotas import enforce_quota, lock_company
from routines_api.routes import ROUTES, QueryParam
from routines_api.sql import QUERIES
from routines_api.state import API_SETTINGS_KEY
from shared.cron import describe, parse_cron, preview, zone
from shared.errors import Conflict, Forbidden, NotFound
from shared.http import BUS_KEY, DB_KEY
from shared.rules import next_run_at
from shared.runs import record_run

ROUTINES = ROUTES.tagged("routines")
RUNS = ROUTES.tagged("runs")

ROUTINE_STATUSES = ("active", "paused", "archived")


@ROUTINES.create("/api/companies/{companyId}/routines", RoutineCreate, RoutineOut)
async def create_routine(request: web.Request) -> web.Response:
    """Create a routine.

    Creates a routine assigned to an active agent of the company. Agents may only create routines assigned to
    themselves.
    """
    principal = principal_of(request)
    company_id = path_uuid(request, "companyId", "company")
    principal.require_company(company_id)
    body = await parse_body(request, RoutineCreate)
    if principal.kind == "agent" and body.assignee_agent_id != principal.agent_id:
        raise Forbidden("agents can only create routines assigned to themselves")
    variables = routine_features.validate_create(body)
    async with request.app[DB_KEY].transaction() as conn:
        await require_company_exists(conn, company_id)
        await lock_company(conn, company_id)
        if body.status != "archived":
            await enforce_quota(request.app[API_SETTINGS_KEY], conn, "routines_per_company", company_id)
        await check_assignee(conn, body.assignee_agent_id, company_id)
        await check_reference(conn, "project", body.project_id, company_id, "projectId")
        await check_reference(conn, "goal", body.goal_id, company_id, "goalId")
        await check_reference(conn, "issue", body.parent_issue_id, company_id, "parentIssueId")
        row = await store.write(conn, "insert_routine", company_id, body.model_dump())
        created = await routine_features.after_create(conn, principal, row, body, variables)
    return respond(dump(RoutineOut, created), 201)


ROUTINE_QUERY = (QueryParam.choice("status", ROUTINE_STATUSES), QueryParam.uuid("assigneeAgentId"))


@ROUTINES.list("/api/companies/{companyId}/routines", RoutineOut, query=ROUTINE_QUERY)
async def list_routines(request: web.Request) -> web.Response:
    """List routines.

    Routines of the company, filtered by status or assignee. 404 if the company does not exist.
    """
    principal = principal_of(request)
    company_id = path_uuid(request, "companyId", "company")
    principal.require_company(company_id)
    status = query_choice(request, "status", ROUTINE_STATUSES)
    assignee = query_uuid(request, "assigneeAgentId")
    async with request.app[DB_KEY].connection() as conn:
        await require_company_exists(conn, company_id)
        rows = await conn.fetch(QUERIES["list_routines"], company_id, status, assignee)
    return respond([dump(RoutineOut, routine) for routine in rows])


@ROUTINES.get("/api/routines/{routineId}", response=RoutineDetail, errors=(404,))
async def get_routine(request: web.Request) -> web.Response:
    """A routine with its triggers (never their secrets).

    A routine with its triggers (never their secrets).
    """
    principal = principal_of(request)
    routine_id = path_uuid(request, "routineId", "routine")
    async with request.app[DB_KEY].connection() as conn:
        routine = await load_routine(conn, principal, routine_id)
        triggers = await conn.fetch(QUERIES["triggers_of_routine"], routine_id)
        detail = await routine_features.with_revision(conn, routine)
        extras, trigger_rows = await routine_features.detail_extras(conn, routine_id, triggers)
    triggers_json = [trigger_json(request, trigger) for trigger in trigger_rows]
    return respond(dump(RoutineDetail, {**detail, **extras}, triggers=triggers_json))


@ROUTINES.patch(
    "/api/routines/{routineId}", body=RoutineUpdate, response=RoutineOut, errors=(403, 404, 409, 422)
)
async def update_routine(request: web.Request) -> web.Response:
    """Update a routine.

    Changes a routine. active <-> paused; archived is terminal. Agents manage only routines assigned to
    themselves.
    """
    principal = principal_of(request)
    routine_id = path_uuid(request, "routineId", "routine")
    body = await parse_body(request, RoutineUpdate)
    given = body.model_fields_set
    async with request.app[DB_KEY].transaction() as conn:
        routine = await load_routine(conn, principal, routine_id, lock=True, manage=True)
        await routine_features.check_base_revision(conn, routine_id, body)
        nullable = {"description", "goal_id", "parent_issue_id", *routine_features.NULLABLE_FEATURE_FIELDS}
        refuse_nulls(body, given - nullable)
        if "assignee_agent_id" in given and body.assignee_agent_id != routine["assignee_agent_id"]:
            if principal.kind == "agent":
                raise Forbidden("agents cannot reassign routines")
            await check_assignee(conn, body.assignee_agent_id, routine["company_id"])
        status = body.status or routine["status"]
        if routine["status"] == "archived" and status != "archived":
            raise Conflict("archived routines cannot change status")
        if routine["status"] == "archived" and "status" in given:
            raise Conflict("archived is terminal")
        merged = {
            name: (getattr(body, name) if name in given else routine[name])
            for name in RoutineUpdate.model_fields
            if name not in routine_features.NOT_CORE_FIELDS
        }
        await check_reference(conn, "project", merged["project_id"], routine["company_id"], "projectId")
        await check_reference(conn, "goal", merged["goal_id"], routine["company_id"], "goalId")
        await check_reference(
            conn, "issue", merged["parent_issue_id"], routine["company_id"], "parentIssueId"
        )
        row = await store.write(conn, "update_routine", routine_id, {**merged, "status": status})
        if status != routine["status"]:
            # Paused/archived triggers are parked; on resume they restart from now (no burst).
            now = await conn.fetchval(QUERIES["transaction_now"])
            for trigger in await conn.fetch(QUERIES["triggers_of_routine"], routine_id):
                if trigger["kind"] == "schedule":
                    await conn.execute(
                        QUERIES["set_next_run_at"],
                        trigger["id"],
                        next_run_at(
                            "schedule",
                            trigger["enabled"],
                            status,
                            trigger["cron_expression"],
                            trigger["timezone"],
                            now,
                        ),
                    )
        updated = await routine_features.after_update(conn, principal, routine, row, body)
    if status != routine["status"]:
        await announce_trigger_change(request.app[BUS_KEY], routineId=str(routine_id))
    return respond(dump(RoutineOut, updated))


@RUNS.post(
    "/api/routines/{routineId}/run",
    body=ManualRun,
    response=RunOut,
    status=202,
    extra_statuses={200: RunOut},
    errors=(403, 404, 409, 422),
)
async def manual_run(request: web.Request) -> web.Response:
    """Run now (202 new run; 200 repeated idempotency key).

    Records a run now and waits up to `MANUAL_RUN_WAIT_SEC` for the dispatcher's decision: `status` is then
    `issue_created`, `coalesced` or `skipped` (else still `received`). A repeated `idempotencyKey` answers 200
    with the first run.
    """
    principal = principal_of(request)
    routine_id = path_uuid(request, "routineId", "routine")
    body = await parse_body(request, ManualRun)
    async with request.app[DB_KEY].transaction() as conn:
        routine = await load_routine(conn, principal, routine_id, manage=True)
        if routine["status"] == "archived":
            raise Conflict("routine is archived")
        given_variables = routine_features.check_given_variables(routine, body.variables)
        await check_run_overrides(conn, principal, routine, body.assignee_agent_id, body.project_id)
        if body.trigger_id is not None:
            trigger = await conn.fetchrow(QUERIES["trigger_by_id"], body.trigger_id)
            if trigger is None or not principal.can_see(trigger["company_id"]):
                raise NotFound("trigger not found")
            if trigger["routine_id"] != routine_id:
                raise Forbidden("trigger belongs to another routine")
            if not trigger["enabled"]:
                raise Conflict("trigger is disabled")
        recorded = await record_run(
            conn,
            routine_id=routine_id,
            company_id=routine["company_id"],
            trigger_id=body.trigger_id,
            source=body.source,
            payload=body.payload,
            idempotency_key=body.idempotency_key,
        )
        if recorded.created:
            await store.store_given_variables(conn, recorded.row["id"], given_variables)
            await store.store_run_overrides(conn, recorded.row["id"], body.assignee_agent_id, body.project_id)
            details = {"runId": str(recorded.row["id"]), "source": body.source}
            await store.record_activity(conn, principal, routine, "manual_run", details)
    run = recorded.row
    if recorded.created:
        overrides = {"assignee_override": body.assignee_agent_id, "project_override": body.project_id}
        run = {**run, "input_variables": given_variables, **overrides}
    if not recorded.created:
        return respond(dump(RunOut, run), 200)
    return respond(dump(RunOut, await publish_and_wait(request, dict(run))), 202)


@ROUTINES.post("/api/cron/preview", body=CronPreviewRequest, response=CronPreviewOut, errors=(422,))
async def cron_preview(request: web.Request) -> web.Response:
    """The next fire instants of a cron expression.

    The next fire times of a cron expression in a time zone, with the DST rules the scheduler uses. Nothing is
    stored.
    """
    body = await parse_body(request, CronPreviewRequest)
    schedule = parse_cron(body.cron_expression)
    zone(body.timezone)
    after = body.after or datetime.now(UTC)
    if after.tzinfo is None:
        after = after.replace(tzinfo=UTC)
    fires = preview(schedule.expression, body.timezone, after, body.count)
    return respond(
        {
            "cronExpression": schedule.expression,
            "timezone": body.timezone,
            "description": describe(schedule.expression, body.timezone),
            "fires": fires,
        }
    )
