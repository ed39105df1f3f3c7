"""Issues: plain ones a board creates, execution issues the dispatcher creates, and the run
settlement that closing an execution issue brings."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from routines_api import store
from routines_api.answers import Row, dump, respond
from routines_api.auth import path_uuid, principal_of
from routines_api.checks import board_company, check_reference, company_path, fetch_visible, load_visible
from routines_api.inputs import parse_body, query_choice, query_limit, query_uuid
from routines_api.models import IssueCreate, IssueOut, IssueUpdate
from routines_api.routes import ROUTES, QueryParam
from routines_api.sql import QUERIES
from routines_api.state import API_SETTINGS_KEY
from shared.alerts import AlertEvent, evaluate_failure_alerts, publish_alerts
from shared.errors import Forbidden
from shared.http import BUS_KEY, DB_KEY
from shared.vocabulary import ISSUE_STATUSES

ISSUES = ROUTES.tagged("issues")


async def settle_origin_run(conn: asyncpg.Connection, issue: Row, status: str) -> list[AlertEvent]:
    """An execution issue moved to `status`: done completes its origin run, cancelled fails it
    (same transaction), and either may raise or clear the routine's failure alert."""
    run_id = issue["origin_run_id"]
    if run_id is None:
        return []
    if status != issue["status"]:
        if status == "done":
            await conn.execute(QUERIES["complete_origin_run"], run_id)
        elif status == "cancelled":
            await conn.execute(QUERIES["fail_origin_run"], run_id, "execution issue cancelled")
    if status in ("done", "cancelled"):
        return await evaluate_failure_alerts(conn, [issue["origin_id"]])
    return []


# --- issues --------------------------------------------------------------------------------


@ISSUES.create("/api/companies/{companyId}/issues", IssueCreate, IssueOut)
async def create_issue(request: web.Request) -> web.Response:
    """Create a plain issue (board).

    Creates a plain (non-routine) issue (board operators).
    """
    company_id = await board_company(request)
    body = await parse_body(request, IssueCreate)
    async with request.app[DB_KEY].transaction() as conn:
        await check_reference(conn, "project", body.project_id, company_id, "projectId")
        await check_reference(conn, "goal", body.goal_id, company_id, "goalId")
        await check_reference(conn, "issue", body.parent_issue_id, company_id, "parentIssueId")
        await check_reference(conn, "agent", body.assignee_agent_id, company_id, "assigneeAgentId")
        row = await store.write(conn, "insert_issue", company_id, body.model_dump())
    return respond(dump(IssueOut, row), 201)


ISSUE_QUERY = (
    QueryParam.uuid("assigneeAgentId"),
    QueryParam.choice("status", ISSUE_STATUSES),
    QueryParam.uuid("routineId"),
    QueryParam("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
)


@ISSUES.list("/api/companies/{companyId}/issues", IssueOut, query=ISSUE_QUERY)
async def list_issues(request: web.Request) -> web.Response:
    """Issues of a company.

    Issues of the company, newest first, filtered by assignee, status or routine.
    """
    principal = principal_of(request)
    company_id = await company_path(request, principal)
    assignee = query_uuid(request, "assigneeAgentId")
    status = query_choice(request, "status", ISSUE_STATUSES)
    routine = query_uuid(request, "routineId")
    limit = query_limit(request)
    payload_max = request.app[API_SETTINGS_KEY].list_payload_max_bytes
    async with request.app[DB_KEY].connection() as conn:
        rows = await conn.fetch(
            QUERIES["list_issues"], company_id, assignee, status, routine, limit, payload_max
        )
    return respond([dump(IssueOut, row) for row in rows])


@ISSUES.get("/api/issues/{issueId}", response=IssueOut, errors=(404,))
async def get_issue(request: web.Request) -> web.Response:
    """One issue.

    One issue; routine executions carry the routine, run and payload they came from.
    """
    return respond(dump(IssueOut, await fetch_visible(request, "issueId", "issue", "issue_by_id")))


@ISSUES.patch("/api/issues/{issueId}", body=IssueUpdate, response=IssueOut, errors=(403, 404))
async def update_issue(request: web.Request) -> web.Response:
    """Change an issue's status.

    Changes an issue's status. Closing an execution issue settles its origin run in the same transaction.
    """
    principal = principal_of(request)
    issue_id = path_uuid(request, "issueId", "issue")
    body = await parse_body(request, IssueUpdate)
    async with request.app[DB_KEY].transaction() as conn:
        issue = await load_visible(conn, principal, "issue", "issue_for_update", issue_id)
        if principal.kind == "agent" and issue["assignee_agent_id"] != principal.agent_id:
            raise Forbidden("agents can only update their own issues")
        await conn.execute(QUERIES["update_issue_status"], issue_id, body.status)
        row = await conn.fetchrow(QUERIES["issue_by_id"], issue_id)
        alerts = await settle_origin_run(conn, issue, body.status)
    assert row is not None
    await publish_alerts(request.app[BUS_KEY], alerts)
    return respond(dump(IssueOut, row))
