"""Routine revisions (every change recorded; list; restore) and the activity logs."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from aiohttp import web

from routines_api import routine_features, store
from routines_api.answers import dump, page_answer, respond
from routines_api.auth import path_uuid, principal_of
from routines_api.checks import check_assignee, check_reference, load_routine, require_company_exists
from routines_api.feature_models import ActivityOut, RevisionOut
from routines_api.inputs import query_cursor, query_limit
from routines_api.models import RoutineOut
from routines_api.routes import ROUTES, page_params
from routines_api.sql import QUERIES
from shared.errors import Conflict, Forbidden, NotFound, Unprocessable
from shared.http import DB_KEY
from shared.templates import check_placeholders, parse_variables, required_without_default

REVISIONS = ROUTES.tagged("revisions")

PAGE_QUERY = page_params(maximum=100)


@REVISIONS.list("/api/routines/{routineId}/revisions", RevisionOut, errors=(400, 404), query=PAGE_QUERY)
async def list_revisions(request: web.Request) -> web.Response:
    """The routine's revisions, newest first (who, when, what changed).

    Every change of the routine: who (actorKind, actorId), when, the snapshot after it and the changes (field
    → {from, to}). Newest first, `X-Next-Cursor` pages. Example: `GET
    /api/routines/{routineId}/revisions?limit=10`.
    """
    _routine_id, limit, rows = await _routine_page(request, "revisions_page")
    return page_answer(rows, limit, RevisionOut, "created_at")


async def _routine_page(request: web.Request, query: str) -> tuple[uuid.UUID, int, list[asyncpg.Record]]:
    """The routine of the path (the caller must see it), the page size, and one more row than a
    page of `query` after the request's cursor (newest first)."""
    principal = principal_of(request)
    routine_id = path_uuid(request, "routineId", "routine")
    limit = query_limit(request, maximum=100)
    after_at, after_id = query_cursor(request)
    async with request.app[DB_KEY].connection() as conn:
        await load_routine(conn, principal, routine_id)
        rows = await conn.fetch(QUERIES[query], routine_id, after_at, after_id, limit + 1)
    return routine_id, limit, list(rows)


@REVISIONS.post(
    "/api/routines/{routineId}/revisions/{revisionId}/restore",
    response=RoutineOut,
    errors=(403, 404, 409, 422),
)
async def restore_revision(request: web.Request) -> web.Response:
    """Restore a revision's fields (not the status); recorded as a new revision.

    Applies the revision's fields again (title, description, assignee, project, goal, parent, priority,
    policies, variables, health settings — not the status) and records a new revision with `restoredFrom`.
    Same rules as PATCH: agents cannot restore another assignee (403), references must still exist (422),
    archived → 409. Example: `POST /api/routines/{routineId}/revisions/{revisionId}/restore`.
    """
    principal = principal_of(request)
    routine_id = path_uuid(request, "routineId", "routine")
    revision_id = path_uuid(request, "revisionId", "revision")
    async with request.app[DB_KEY].transaction() as conn:
        before = await load_routine(conn, principal, routine_id, lock=True, manage=True)
        revision = await conn.fetchrow(QUERIES["revision_by_id"], revision_id, routine_id)
        if revision is None:
            raise NotFound("revision not found")
        if before["status"] == "archived":
            raise Conflict("archived routines cannot change")
        snap: dict[str, Any] = revision["snapshot"]
        company = before["company_id"]

        def ref(key: str) -> uuid.UUID | None:
            return uuid.UUID(snap[key]) if snap.get(key) else None

        assignee = ref("assigneeAgentId") or before["assignee_agent_id"]
        if assignee != before["assignee_agent_id"]:
            if principal.kind == "agent":
                raise Forbidden("agents cannot reassign routines (this revision has another assignee)")
            await check_assignee(conn, assignee, company)
        project = ref("projectId") or before["project_id"]
        await check_reference(conn, "project", project, company, "projectId")
        await check_reference(conn, "goal", ref("goalId"), company, "goalId")
        await check_reference(conn, "issue", ref("parentIssueId"), company, "parentIssueId")
        variables = parse_variables(snap.get("variables") or [])
        check_placeholders(snap["title"], snap.get("description"), variables)
        missing = required_without_default(variables)
        if missing and await conn.fetchval(QUERIES["has_schedule_triggers"], routine_id):
            raise Unprocessable(
                f"required variable {missing[0]!r} has no default; the routine has a schedule"
            )
        await store.write(
            conn,
            "update_routine",
            routine_id,
            {
                "title": snap["title"],
                "description": snap.get("description"),
                "assignee_agent_id": assignee,
                "project_id": project,
                "goal_id": ref("goalId"),
                "parent_issue_id": ref("parentIssueId"),
                "priority": snap.get("priority", before["priority"]),
                "status": before["status"],
                "concurrency_policy": snap.get("concurrencyPolicy", before["concurrency_policy"]),
                "catch_up_policy": snap.get("catchUpPolicy", before["catch_up_policy"]),
            },
        )
        features = {
            "failure_alert_after": snap.get("failureAlertAfter"),
            "auto_pause_after": snap.get("autoPauseAfter"),
            "stale_after_sec": snap.get("staleAfterSec"),
            "stale_action": snap.get("staleAction"),
        }
        stored = await store.set_routine_features(conn, routine_id, variables, features)
        await routine_features.record_revision(
            conn, principal, stored, routine_features.snapshot(before), restored_from=revision_id
        )
        await store.record_activity(
            conn,
            principal,
            stored,
            "restored",
            {"revisionId": str(revision_id), "number": revision["number"]},
        )
        answer = await routine_features.with_revision(conn, stored)
    return respond(dump(RoutineOut, answer))


@REVISIONS.list("/api/routines/{routineId}/activity", ActivityOut, errors=(400, 404), query=PAGE_QUERY)
async def routine_activity(request: web.Request) -> web.Response:
    """The routine's activity log, newest first: changes, triggers, manual runs, alerts, runs.

    Who did what (created, updated, paused, resumed, archived, restored, trigger_added/updated/deleted,
    secret_rotated, manual_run, replay, backfill) and what the system did (failure_alert, recovered,
    auto_paused, stale_cancelled), merged with every run recorded (`run_recorded`). Newest first,
    `X-Next-Cursor` pages. Example: `GET /api/routines/{routineId}/activity?limit=20`.
    """
    routine_id, limit, rows = await _routine_page(request, "activity_page")
    return page_answer(
        [{**dict(entry), "routine_id": routine_id} for entry in rows], limit, ActivityOut, "at"
    )


@REVISIONS.list("/api/companies/{companyId}/activity", ActivityOut, query=PAGE_QUERY)
async def company_activity(request: web.Request) -> web.Response:
    """The company's routine activity log, newest first (changes, triggers, manual runs, alerts).

    The routine activity of the whole company (changes, triggers, manual runs, alerts; runs are in each
    routine's log). Newest first, `X-Next-Cursor` pages. Example: `GET
    /api/companies/{companyId}/activity?limit=50`.
    """
    principal = principal_of(request)
    company_id = path_uuid(request, "companyId", "company")
    principal.require_company(company_id)
    limit = query_limit(request, maximum=100)
    after_at, after_id = query_cursor(request)
    async with request.app[DB_KEY].connection() as conn:
        await require_company_exists(conn, company_id)
        rows = await conn.fetch(QUERIES["company_activity_page"], company_id, after_at, after_id, limit + 1)
    return page_answer(list(rows), limit, ActivityOut, "at")
