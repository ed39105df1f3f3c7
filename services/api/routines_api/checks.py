"""The checks a request needs the database for: that what it names exists, is visible to the
caller and may be referenced or managed by them (404, 403 or 422 otherwise)."""

from __future__ import annotations

import uuid

import asyncpg
from aiohttp import web

from routines_api.answers import Row
from routines_api.auth import Principal, path_uuid, principal_of
from routines_api.sql import QUERIES
from shared.errors import Forbidden, NotFound, Unprocessable
from shared.http import DB_KEY


async def require_company_exists(conn: asyncpg.Connection, company_id: uuid.UUID) -> None:
    """404 for a company that does not exist (the instance admin may name any company)."""
    if not await conn.fetchval(QUERIES["company_exists"], company_id):
        raise NotFound("company not found")


async def check_reference(
    conn: asyncpg.Connection, kind: str, ref_id: uuid.UUID | None, company_id: uuid.UUID, field: str
) -> None:
    """A referenced agent/project/goal/issue must exist in the same company (else 422). One
    message for "elsewhere" and "nowhere": whether another company's id exists is not revealed."""
    if ref_id is None:
        return
    owner = await conn.fetchval(QUERIES["owner_company"], ref_id, kind)
    if owner != company_id:
        raise Unprocessable(f"{field}: no {kind} {ref_id} in this company")


async def check_assignee(conn: asyncpg.Connection, agent_id: uuid.UUID | None, company_id: uuid.UUID) -> None:
    await check_reference(conn, "agent", agent_id, company_id, "assigneeAgentId")
    status = await conn.fetchval(QUERIES["agent_status"], agent_id)
    if status != "active":
        raise Unprocessable(
            f"assigneeAgentId: agent is {status}; routines can only be assigned to active agents"
        )


async def check_run_overrides(
    conn: asyncpg.Connection,
    principal: Principal,
    routine: Row,
    assignee_agent_id: uuid.UUID | None,
    project_id: uuid.UUID | None,
) -> None:
    """One-run overrides: board operators only (403 for agents); they must be assignable (422)."""
    if assignee_agent_id is None and project_id is None:
        return
    if principal.kind == "agent":
        raise Forbidden("agents cannot override the assignee or project of a run")
    if assignee_agent_id is not None:
        await check_reference(conn, "agent", assignee_agent_id, routine["company_id"], "assigneeAgentId")
        agent = await conn.fetchrow(QUERIES["agent_by_id"], assignee_agent_id)
        if agent is None or agent["status"] != "active":
            raise Unprocessable("assigneeAgentId: runs can only be assigned to active agents")
    if project_id is not None:
        await check_reference(conn, "project", project_id, routine["company_id"], "projectId")


async def load_visible(
    conn: asyncpg.Connection, principal: Principal, what: str, query: str, object_id: uuid.UUID
) -> asyncpg.Record:
    """The row `query` answers for `object_id`, if the caller may see it: 404 "<what> not found"
    when there is none or it is another company's (whose existence is not revealed)."""
    row = await conn.fetchrow(QUERIES[query], object_id)
    if row is None:
        raise NotFound(f"{what} not found")
    principal.require_visible(row["company_id"], what)
    return row


async def load_routine(
    conn: asyncpg.Connection,
    principal: Principal,
    routine_id: uuid.UUID,
    *,
    lock: bool = False,
    manage: bool = False,
) -> asyncpg.Record:
    """A routine the caller may see (404 otherwise), locked and/or checked for management rights."""
    query = "routine_for_update" if lock else "routine_by_id"
    routine = await load_visible(conn, principal, "routine", query, routine_id)
    if manage:
        principal.require_manage_routine(routine["assignee_agent_id"])
    return routine


async def load_run(conn: asyncpg.Connection, principal: Principal, run_id: uuid.UUID) -> asyncpg.Record:
    """A run the caller may see (another company's run → 404)."""
    return await load_visible(conn, principal, "run", "run_by_id", run_id)


async def load_trigger_for_manage(
    conn: asyncpg.Connection, principal: Principal, trigger_id: uuid.UUID
) -> asyncpg.Record:
    """A trigger the caller may manage (404/403 otherwise), its routine and itself locked, as it
    is once the locks are held: a status change committed while we waited (a resume setting the
    next fire, a pause clearing it) or a slot the scheduler fired meanwhile (advancing the next
    fire) is what the caller's change builds on, not what was read before."""
    trigger = await load_visible(conn, principal, "trigger", "trigger_by_id", trigger_id)
    principal.require_manage_routine(trigger["assignee_agent_id"])
    # Serialise with routine status changes and with a scheduler holding the trigger for a slot
    # it prepares (routine first, as everywhere), then read again (READ COMMITTED: the latest).
    await conn.fetchrow(QUERIES["routine_for_update"], trigger["routine_id"])
    await conn.execute(QUERIES["lock_trigger"], trigger_id)
    trigger = await load_visible(conn, principal, "trigger", "trigger_by_id", trigger_id)
    principal.require_manage_routine(trigger["assignee_agent_id"])  # reassigned meanwhile?
    return trigger


async def company_path(request: web.Request, principal: Principal) -> uuid.UUID:
    """The company of the path: one the caller belongs to (403) and that exists (404)."""
    company_id = path_uuid(request, "companyId", "company")
    principal.require_company(company_id)
    async with request.app[DB_KEY].connection() as conn:
        await require_company_exists(conn, company_id)
    return company_id


async def board_company(request: web.Request) -> uuid.UUID:
    """The company of the path, for its board operators and the instance admin (403 for anyone
    else, 404 when it does not exist)."""
    principal = principal_of(request)
    company_id = await company_path(request, principal)
    principal.require_board(company_id)
    return company_id


async def fetch_visible(request: web.Request, param: str, what: str, query: str) -> asyncpg.Record:
    """One object by the id in path parameter `param`, if the caller may see it (404 otherwise)."""
    object_id = path_uuid(request, param, what)
    async with request.app[DB_KEY].connection() as conn:
        return await load_visible(conn, principal_of(request), what, query, object_id)
