"""Companies, agents, projects, goals and board tokens."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from routines_api import store
from routines_api.answers import dump, respond
from routines_api.auth import path_uuid, principal_of
from routines_api.checks import board_company, company_path, load_visible
from routines_api.inputs import parse_body
from routines_api.models import (
    AgentCreate,
    AgentCreated,
    AgentOut,
    AgentUpdate,
    BoardTokenCreate,
    BoardTokenOut,
    CompanyCreate,
    CompanyOut,
    GoalCreate,
    GoalOut,
    ProjectCreate,
    ProjectOut,
    TokenOut,
)
from routines_api.quotas import within_company_quota
from routines_api.routes import ROUTES
from routines_api.sql import QUERIES
from shared.crypto import new_token
from shared.errors import Conflict, Forbidden, NotFound
from shared.http import DB_KEY

DIRECTORY = ROUTES.tagged("directory")


async def _list_in_company(request: web.Request, query: str, model: type[BaseModel]) -> web.Response:
    """GET of a company's agents/projects/goals: any member of the company may read."""
    principal = principal_of(request)
    company_id = await company_path(request, principal)
    async with request.app[DB_KEY].connection() as conn:
        rows = await conn.fetch(QUERIES[query], company_id)
    return respond([dump(model, row) for row in rows])


async def _create_named_in_company(
    request: web.Request, body_model: type[BaseModel], field: str, query: str, model: type[BaseModel]
) -> web.Response:
    """POST of a project/goal: board operators only; `field` of the body names it."""
    company_id = await board_company(request)
    body = await parse_body(request, body_model)
    quota = f"{query.removeprefix('insert_')}s_per_company"
    async with within_company_quota(request, quota, company_id) as conn:
        row = await conn.fetchrow(QUERIES[query], company_id, getattr(body, field))
    assert row is not None
    return respond(dump(model, row), 201)


# --- companies -----------------------------------------------------------------------------


@DIRECTORY.post("/api/companies", body=CompanyCreate, response=CompanyOut, status=201, errors=(403,))
async def create_company(request: web.Request) -> web.Response:
    """Create a company (instance admin).

    Creates a company. Only the instance admin (`routines bootstrap` prints its token).
    """
    principal = principal_of(request)
    if not principal.is_admin:
        raise Forbidden("only the instance admin can create companies")
    body = await parse_body(request, CompanyCreate)
    async with request.app[DB_KEY].connection() as conn:
        row = await conn.fetchrow(QUERIES["insert_company"], body.name)
    assert row is not None
    return respond(dump(CompanyOut, row), 201)


@DIRECTORY.list("/api/companies", CompanyOut, errors=())
async def list_companies(request: web.Request) -> web.Response:
    """Companies the caller may see.

    The instance admin sees every company; board operators and agents see their own.
    """
    principal = principal_of(request)
    async with request.app[DB_KEY].connection() as conn:
        rows = await conn.fetch(
            QUERIES["list_companies"], None if principal.is_admin else principal.company_id
        )
    return respond([dump(CompanyOut, row) for row in rows])


# --- agents --------------------------------------------------------------------------------


@DIRECTORY.create("/api/companies/{companyId}/agents", AgentCreate, AgentCreated)
async def create_agent(request: web.Request) -> web.Response:
    """Create an agent; its API key is shown once.

    Creates an agent in the company (board operators). Its API key is in this answer only.
    """
    company_id = await board_company(request)
    body = await parse_body(request, AgentCreate)
    api_key = new_token("agent")
    async with within_company_quota(request, "agents_per_company", company_id) as conn:
        agent = await conn.fetchrow(QUERIES["insert_agent"], company_id, body.name)
        assert agent is not None
        await store.insert_agent_key(conn, agent["id"], body.name, api_key)
    return respond({"agent": dump(AgentOut, agent), "apiKey": api_key}, 201)


@DIRECTORY.list("/api/companies/{companyId}/agents", AgentOut, errors=(403, 404))
async def list_agents(request: web.Request) -> web.Response:
    """Agents of a company.

    Every agent of the company, oldest first. Any member of the company may read.
    """
    return await _list_in_company(request, "list_agents", AgentOut)


@DIRECTORY.patch("/api/agents/{agentId}", body=AgentUpdate, response=AgentOut, errors=(403, 404))
async def update_agent(request: web.Request) -> web.Response:
    """Change an agent's status.

    Pauses, re-activates or terminates an agent (board operators). Terminating an agent revokes its API
    keys for good: re-activating it does not restore them (rotate-key gives it a new one).
    """
    principal = principal_of(request)
    agent_id = path_uuid(request, "agentId", "agent")
    body = await parse_body(request, AgentUpdate)  # read before taking a pooled connection
    async with request.app[DB_KEY].transaction() as conn:
        agent = await load_visible(conn, principal, "agent", "agent_by_id", agent_id)
        principal.require_board(agent["company_id"])
        row = await conn.fetchrow(QUERIES["update_agent_status"], agent_id, body.status)
        if body.status == "terminated":
            await conn.execute(QUERIES["revoke_agent_tokens"], agent_id)
    assert row is not None
    return respond(dump(AgentOut, row))


@DIRECTORY.post("/api/agents/{agentId}/rotate-key", response=AgentCreated, errors=(403, 404, 409))
async def rotate_agent_key(request: web.Request) -> web.Response:
    """Replace an agent's API key: the old key stops working at once, the new one is shown once.

    Issues a new API key for the agent: board operators rotate any agent's key in their company, an agent
    may rotate its own. The old key stops working at once; the new key is in this answer only.
    """
    principal = principal_of(request)
    agent_id = path_uuid(request, "agentId", "agent")
    api_key = new_token("agent")
    async with request.app[DB_KEY].transaction() as conn:
        agent = await load_visible(conn, principal, "agent", "agent_by_id", agent_id)
        if principal.agent_id != agent_id:
            principal.require_board(agent["company_id"])
        if agent["status"] == "terminated":
            raise Conflict("agent is terminated; set it active before giving it a new key")
        await conn.execute(QUERIES["revoke_agent_tokens"], agent_id)
        await store.insert_agent_key(conn, agent_id, agent["name"], api_key)
    return respond({"agent": dump(AgentOut, agent), "apiKey": api_key})


@DIRECTORY.get("/api/agents/me", response=AgentOut, errors=(403,))
async def agent_me(request: web.Request) -> web.Response:
    """The calling agent.

    The agent the calling API key belongs to (agent keys only).
    """
    principal = principal_of(request)
    if principal.agent_id is None:
        raise Forbidden("not an agent token")
    async with request.app[DB_KEY].connection() as conn:
        row = await conn.fetchrow(QUERIES["agent_by_id"], principal.agent_id)
    assert row is not None
    return respond(dump(AgentOut, row))


# --- projects, goals, board tokens ------------------------------------------------------


def _company_collection(
    plural: str, singular: str, create: type[BaseModel], out: type[BaseModel], name_field: str
) -> None:
    """Projects and goals alike: a board operator creates one by its name, members list them."""
    path = f"/api/companies/{{companyId}}/{plural}"

    async def create_one(request: web.Request) -> web.Response:
        return await _create_named_in_company(request, create, name_field, f"insert_{singular}", out)

    async def list_all(request: web.Request) -> web.Response:
        return await _list_in_company(request, f"list_{plural}", out)

    # The handler's name is the operation's id (createProject, listGoals, …), its docstring the docs.
    create_one.__name__ = create_one.__qualname__ = f"create_{singular}"
    create_one.__doc__ = f"Create a {singular}.\n\nCreates a {singular} in the company (board operators)."
    list_all.__name__ = list_all.__qualname__ = f"list_{plural}"
    list_all.__doc__ = (
        f"{plural.capitalize()} of a company.\n\nEvery {singular} of the company. Any member of the "
        "company may read."
    )
    DIRECTORY.create(path, create, out)(create_one)
    DIRECTORY.list(path, out, errors=(403, 404))(list_all)


_company_collection("projects", "project", ProjectCreate, ProjectOut, "name")
_company_collection("goals", "goal", GoalCreate, GoalOut, "title")


@DIRECTORY.create("/api/companies/{companyId}/board-tokens", BoardTokenCreate, BoardTokenOut)
async def create_board_token(request: web.Request) -> web.Response:
    """Mint a board operator token for a company (shown once).

    Mints a board operator token for the company. The token is in this answer only.
    """
    company_id = await board_company(request)
    body = await parse_body(request, BoardTokenCreate)
    token = new_token("board")
    async with within_company_quota(request, "board_tokens_per_company", company_id) as conn:
        token_id = await store.insert_board_token(conn, company_id, body.name, token)
    return respond(
        {"id": str(token_id), "companyId": str(company_id), "name": body.name, "token": token}, 201
    )


@DIRECTORY.list("/api/companies/{companyId}/board-tokens", TokenOut, errors=(403, 404))
async def list_board_tokens(request: web.Request) -> web.Response:
    """A company's board tokens (never the tokens themselves).

    The company's board tokens (never the tokens themselves), revoked ones included.
    """
    company_id = await board_company(request)
    async with request.app[DB_KEY].connection() as conn:
        rows = await conn.fetch(QUERIES["list_board_tokens"], company_id)
    return respond([dump(TokenOut, row) for row in rows])


@DIRECTORY.post("/api/board-tokens/{tokenId}/revoke", response=TokenOut, errors=(403, 404))
async def revoke_board_token(request: web.Request) -> web.Response:
    """Revoke a board token: it stops working at once, for good.

    Revokes a board token for good; requests with it answer 401 from now on.
    """
    principal = principal_of(request)
    token_id = path_uuid(request, "tokenId", "token")
    async with request.app[DB_KEY].transaction() as conn:
        token = await load_visible(conn, principal, "token", "board_token_by_id", token_id)
        principal.require_board(token["company_id"])
        row = await conn.fetchrow(QUERIES["revoke_token"], token_id, "board")
    assert row is not None
    return respond(dump(TokenOut, row, company_id=token["company_id"]))


@DIRECTORY.list("/api/instance-tokens", TokenOut, errors=(403,))
async def list_instance_tokens(request: web.Request) -> web.Response:
    """Instance admin tokens (instance admin; never the tokens themselves).

    Every instance admin token (never the tokens themselves). Instance admin only.
    """
    principal = principal_of(request)
    if not principal.is_admin:
        raise Forbidden("only the instance admin can see instance tokens")
    async with request.app[DB_KEY].connection() as conn:
        rows = await conn.fetch(QUERIES["list_instance_tokens"])
    return respond([dump(TokenOut, row) for row in rows])


@DIRECTORY.post("/api/instance-tokens/{tokenId}/revoke", response=TokenOut, errors=(403, 404, 409))
async def revoke_instance_token(request: web.Request) -> web.Response:
    """Revoke an instance admin token (instance admin).

    Revokes an instance admin token for good (the last unrevoked one cannot be).
    """
    principal = principal_of(request)
    if not principal.is_admin:
        raise Forbidden("only the instance admin can revoke instance tokens")
    token_id = path_uuid(request, "tokenId", "token")
    async with request.app[DB_KEY].transaction() as conn:
        row = await conn.fetchrow(QUERIES["revoke_token"], token_id, "instance_admin")
        if row is None:
            raise NotFound("token not found")
        # Serialised by the advisory lock, so two admins cannot each revoke "the other last one".
        await conn.execute(QUERIES["lock_instance_tokens"])
        if not await conn.fetchval(QUERIES["live_instance_tokens"]):
            raise Conflict("the last live instance token cannot be revoked; make another first")
    return respond(dump(TokenOut, row, company_id=None))
