"""An in-process API (real Postgres and NATS) and a seeded world of two companies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from routines_api.app import create_app
from shared.settings import ApiSettings
from tests.support import Stack

Client = TestClient[web.Request, web.Application]


def api_app(stack: Stack, **overrides: Any) -> web.Application:
    settings = ApiSettings(
        database_url=stack.database_url,
        nats_url=stack.nats_url,
        secret_key=stack.secret_key,
        public_gateway_url="https://hooks.example.test",
        **overrides,
    )
    return create_app(settings)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Tenant:
    company_id: str
    board: str
    agent_id: str
    agent_key: str
    other_agent_id: str
    other_agent_key: str
    project_id: str


@dataclass
class World:
    admin: str
    a: Tenant
    b: Tenant


async def call(
    client: Client, method: str, path: str, token: str | None, body: Any = None, status: int | None = None
) -> Any:
    headers = auth(token) if token else {}
    resp = await client.request(method, path, json=body, headers=headers)
    data = await resp.json() if resp.status != 204 else None
    if status is not None:
        assert resp.status == status, (method, path, resp.status, data)
    return data


async def make_tenant(client: Client, admin: str, name: str) -> Tenant:
    company = await call(client, "POST", "/api/companies", admin, {"name": name}, 201)
    cid = company["id"]
    board = (await call(client, "POST", f"/api/companies/{cid}/board-tokens", admin, {"name": "ops"}, 201))[
        "token"
    ]
    agent = await call(client, "POST", f"/api/companies/{cid}/agents", board, {"name": "worker"}, 201)
    other = await call(client, "POST", f"/api/companies/{cid}/agents", board, {"name": "other"}, 201)
    project = await call(client, "POST", f"/api/companies/{cid}/projects", board, {"name": "ops"}, 201)
    return Tenant(
        cid,
        board,
        agent["agent"]["id"],
        agent["apiKey"],
        other["agent"]["id"],
        other["apiKey"],
        project["id"],
    )


async def make_routine(
    client: Client, tenant: Tenant, token: str | None = None, **fields: Any
) -> dict[str, Any]:
    body = {
        "title": "Daily report",
        "assigneeAgentId": tenant.agent_id,
        "projectId": tenant.project_id,
        **fields,
    }
    return await call(
        client, "POST", f"/api/companies/{tenant.company_id}/routines", token or tenant.board, body, 201
    )


async def make_trigger(
    client: Client, tenant: Tenant, routine_id: str, body: dict[str, Any], status: int = 201
) -> Any:
    return await call(client, "POST", f"/api/routines/{routine_id}/triggers", tenant.board, body, status)


async def patch_trigger(
    client: Client, tenant: Tenant, trigger_id: str, body: dict[str, Any], status: int = 200
) -> Any:
    return await call(client, "PATCH", f"/api/routine-triggers/{trigger_id}", tenant.board, body, status)


async def patch_routine(
    client: Client, tenant: Tenant, routine_id: str, body: dict[str, Any], status: int = 200
) -> Any:
    return await call(client, "PATCH", f"/api/routines/{routine_id}", tenant.board, body, status)


async def run_routine(
    client: Client, tenant: Tenant, routine_id: str, body: dict[str, Any] | None = None, status: int = 202
) -> Any:
    return await call(client, "POST", f"/api/routines/{routine_id}/run", tenant.board, body or {}, status)


async def routine_detail(client: Client, tenant: Tenant, routine_id: str) -> Any:
    return await call(client, "GET", f"/api/routines/{routine_id}", tenant.board, status=200)


async def routine_runs(client: Client, tenant: Tenant, routine_id: str, query: str = "") -> Any:
    return await call(client, "GET", f"/api/routines/{routine_id}/runs{query}", tenant.board, status=200)


async def make_routine_under_goal_and_parent(
    client: Client, tenant: Tenant, goal_title: str, parent_title: str, **fields: Any
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A routine under a new goal and a new parent issue of its company: (routine, goal, parent)."""
    companies = f"/api/companies/{tenant.company_id}"
    goal = await call(client, "POST", f"{companies}/goals", tenant.board, {"title": goal_title}, 201)
    parent = await call(client, "POST", f"{companies}/issues", tenant.board, {"title": parent_title}, 201)
    routine = await make_routine(client, tenant, goalId=goal["id"], parentIssueId=parent["id"], **fields)
    return routine, goal, parent
