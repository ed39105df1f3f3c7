"""Authorization matrix: six callers × every endpoint → the expected status, for every cell."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from shared.http import SETTINGS_KEY
from tests.integration import api_client
from tests.integration.api_client import Client, World, api_app, call, make_routine, make_tenant
from tests.support import Stack

ROLES = ["admin", "board_a", "board_b", "assignee", "other_agent_a", "agent_b"]
Request = tuple[str, str, Any]
Setup = Callable[[Client, World], Awaitable[Request]]


def token_of(world: World, role: str) -> str:
    return {
        "admin": world.admin,
        "board_a": world.a.board,
        "board_b": world.b.board,
        "assignee": world.a.agent_key,
        "other_agent_a": world.a.other_agent_key,
        "agent_b": world.b.agent_key,
    }[role]


async def _routine(client: Client, world: World) -> dict[str, Any]:
    return await make_routine(client, world.a)


async def _trigger(client: Client, world: World) -> dict[str, Any]:
    r = await _routine(client, world)
    return await api_client.make_trigger(client, world.a, r["id"], {"kind": "webhook"})


async def _issue(client: Client, world: World) -> dict[str, Any]:
    return await call(
        client,
        "POST",
        f"/api/companies/{world.a.company_id}/issues",
        world.a.board,
        {"title": "i", "assigneeAgentId": world.a.agent_id},
        201,
    )


def static(method: str, path: str, body: Any = None) -> Setup:
    async def setup(_client: Client, world: World) -> Request:
        return method, path.format(a=world.a.company_id, other=world.a.other_agent_id), body

    return setup


async def create_routine(client: Client, world: World) -> Request:
    return (
        "POST",
        f"/api/companies/{world.a.company_id}/routines",
        {"title": "t", "assigneeAgentId": world.a.agent_id, "projectId": world.a.project_id},
    )


async def get_routine(client: Client, world: World) -> Request:
    return "GET", f"/api/routines/{(await _routine(client, world))['id']}", None


async def patch_routine(client: Client, world: World) -> Request:
    return "PATCH", f"/api/routines/{(await _routine(client, world))['id']}", {"title": "new"}


async def reassign_routine(client: Client, world: World) -> Request:
    return (
        "PATCH",
        f"/api/routines/{(await _routine(client, world))['id']}",
        {"assigneeAgentId": world.a.other_agent_id},
    )


async def add_trigger(client: Client, world: World) -> Request:
    return "POST", f"/api/routines/{(await _routine(client, world))['id']}/triggers", {"kind": "api"}


async def patch_trigger(client: Client, world: World) -> Request:
    return "PATCH", f"/api/routine-triggers/{(await _trigger(client, world))['id']}", {"label": "x"}


async def delete_trigger(client: Client, world: World) -> Request:
    return "DELETE", f"/api/routine-triggers/{(await _trigger(client, world))['id']}", None


async def rotate(client: Client, world: World) -> Request:
    return "POST", f"/api/routine-triggers/{(await _trigger(client, world))['id']}/rotate-secret", {}


async def run(client: Client, world: World) -> Request:
    return "POST", f"/api/routines/{(await _routine(client, world))['id']}/run", {}


async def runs(client: Client, world: World) -> Request:
    return "GET", f"/api/routines/{(await _routine(client, world))['id']}/runs", None


async def get_issue(client: Client, world: World) -> Request:
    return "GET", f"/api/issues/{(await _issue(client, world))['id']}", None


async def patch_issue(client: Client, world: World) -> Request:
    return "PATCH", f"/api/issues/{(await _issue(client, world))['id']}", {"status": "in_progress"}


async def get_run(client: Client, world: World) -> Request:
    r = await _routine(client, world)
    created = await api_client.run_routine(client, world.a, r["id"], {})
    return "GET", f"/api/runs/{created['id']}", None


async def revoke_board_token(client: Client, world: World) -> Request:
    token = await call(
        client, "POST", f"/api/companies/{world.a.company_id}/board-tokens", world.admin, {"name": "x"}, 201
    )
    return "POST", f"/api/board-tokens/{token['id']}/revoke", None


async def revoke_instance_token(client: Client, world: World) -> Request:
    from shared.bootstrap import create_instance_admin_token

    assert client.app is not None
    await create_instance_admin_token(client.app[SETTINGS_KEY].database_url, "spare")
    tokens = await call(client, "GET", "/api/instance-tokens", world.admin, status=200)
    spare = next(t for t in tokens if t["name"] == "spare" and t["revokedAt"] is None)
    return "POST", f"/api/instance-tokens/{spare['id']}/revoke", None


async def rotate_agent_key(client: Client, world: World) -> Request:
    agent = await call(
        client, "POST", f"/api/companies/{world.a.company_id}/agents", world.a.board, {"name": "n"}, 201
    )
    return "POST", f"/api/agents/{agent['agent']['id']}/rotate-key", None


#             admin board_a board_b assignee other_a agent_b
MATRIX: list[tuple[str, Setup, tuple[int, ...]]] = [
    ("create company", static("POST", "/api/companies", {"name": "C"}), (201, 403, 403, 403, 403, 403)),
    ("list companies", static("GET", "/api/companies"), (200, 200, 200, 200, 200, 200)),
    (
        "create agent",
        static("POST", "/api/companies/{a}/agents", {"name": "n"}),
        (201, 201, 403, 403, 403, 403),
    ),
    ("list agents", static("GET", "/api/companies/{a}/agents"), (200, 200, 403, 200, 200, 403)),
    (
        "patch agent",
        static("PATCH", "/api/agents/{other}", {"status": "active"}),
        (200, 200, 404, 403, 403, 404),
    ),
    ("agents me", static("GET", "/api/agents/me"), (403, 403, 403, 200, 200, 200)),
    (
        "create project",
        static("POST", "/api/companies/{a}/projects", {"name": "p"}),
        (201, 201, 403, 403, 403, 403),
    ),
    ("list projects", static("GET", "/api/companies/{a}/projects"), (200, 200, 403, 200, 200, 403)),
    (
        "create goal",
        static("POST", "/api/companies/{a}/goals", {"title": "g"}),
        (201, 201, 403, 403, 403, 403),
    ),
    ("list goals", static("GET", "/api/companies/{a}/goals"), (200, 200, 403, 200, 200, 403)),
    (
        "board token",
        static("POST", "/api/companies/{a}/board-tokens", {"name": "b"}),
        (201, 201, 403, 403, 403, 403),
    ),
    (
        "create issue",
        static("POST", "/api/companies/{a}/issues", {"title": "i"}),
        (201, 201, 403, 403, 403, 403),
    ),
    ("list issues", static("GET", "/api/companies/{a}/issues"), (200, 200, 403, 200, 200, 403)),
    ("get issue", get_issue, (200, 200, 404, 200, 200, 404)),
    ("patch issue", patch_issue, (200, 200, 404, 200, 403, 404)),
    ("create routine", create_routine, (201, 201, 403, 201, 403, 403)),
    ("list routines", static("GET", "/api/companies/{a}/routines"), (200, 200, 403, 200, 200, 403)),
    ("get routine", get_routine, (200, 200, 404, 200, 200, 404)),
    ("patch routine", patch_routine, (200, 200, 404, 200, 403, 404)),
    ("reassign routine", reassign_routine, (200, 200, 404, 403, 403, 404)),
    ("add trigger", add_trigger, (201, 201, 404, 201, 403, 404)),
    ("patch trigger", patch_trigger, (200, 200, 404, 200, 403, 404)),
    ("delete trigger", delete_trigger, (204, 204, 404, 204, 403, 404)),
    ("rotate secret", rotate, (200, 200, 404, 200, 403, 404)),
    ("manual run", run, (202, 202, 404, 202, 403, 404)),
    ("list runs", runs, (200, 200, 404, 200, 200, 404)),
    ("get run", get_run, (200, 200, 404, 200, 200, 404)),
    ("list board tokens", static("GET", "/api/companies/{a}/board-tokens"), (200, 200, 403, 403, 403, 403)),
    ("revoke board token", revoke_board_token, (200, 200, 404, 403, 403, 404)),
    ("list instance tokens", static("GET", "/api/instance-tokens"), (200, 403, 403, 403, 403, 403)),
    ("revoke instance token", revoke_instance_token, (200, 403, 403, 403, 403, 403)),
    ("rotate agent key", rotate_agent_key, (200, 200, 404, 403, 403, 404)),
    (
        "cron preview",
        static("POST", "/api/cron/preview", {"cronExpression": "@daily"}),
        (200, 200, 200, 200, 200, 200),
    ),
]


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[Client]:
    async with TestClient(TestServer(api_app(stack, manual_run_wait_sec=0))) as client:
        yield client


async def _snapshot(db: asyncpg.Connection) -> dict[str, list[str]]:
    """Every row of every domain table, as text: what a denied request must leave untouched."""
    tables = [
        r["table_name"]
        for r in await db.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            " AND table_name <> 'schema_migrations' ORDER BY table_name"
        )
    ]
    return {
        t: [r["row"] for r in await db.fetch(f"SELECT t::text AS row FROM {t} t ORDER BY 1")] for t in tables
    }


async def _ids_outside(db: asyncpg.Connection, company_id: str) -> set[str]:
    """Ids of every row that belongs to a company other than `company_id`."""
    tables = [
        r["table_name"]
        for r in await db.fetch(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public'"
            " AND column_name = 'company_id'"
        )
    ]
    ids = {
        str(r["id"]) for r in await db.fetch("SELECT id FROM companies WHERE id <> $1", uuid.UUID(company_id))
    }
    for t in tables:
        rows = await db.fetch(f"SELECT id FROM {t} WHERE company_id <> $1", uuid.UUID(company_id))
        ids |= {str(r["id"]) for r in rows}
    tokens = await db.fetch(
        "SELECT t.id FROM api_tokens t LEFT JOIN agents a ON a.id = t.agent_id"
        " LEFT JOIN board_memberships b ON b.id = t.board_membership_id"
        " WHERE COALESCE(a.company_id, b.company_id) IS DISTINCT FROM $1",
        uuid.UUID(company_id),
    )
    return ids | {str(r["id"]) for r in tokens}


def _uuids_in(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set().union(*(_uuids_in(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_uuids_in(v) for v in value)) if value else set()
    if isinstance(value, str) and _UUID.match(value):
        return {value}
    return set()


_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def company_of(world: World, role: str) -> str | None:
    return {
        "admin": None,
        "board_a": world.a.company_id,
        "board_b": world.b.company_id,
        "assignee": world.a.company_id,
        "other_agent_a": world.a.company_id,
        "agent_b": world.b.company_id,
    }[role]


@pytest.mark.parametrize(("name", "setup", "expected"), MATRIX, ids=[m[0] for m in MATRIX])
async def test_authorization_matrix(
    client: Client,
    admin_token: str,
    db: asyncpg.Connection,
    name: str,
    setup: Setup,
    expected: tuple[int, ...],
) -> None:
    """Each cell's status; a denial changes no row anywhere; an allowed answer names no row of
    another company."""
    world = World(
        admin_token, await make_tenant(client, admin_token, "A"), await make_tenant(client, admin_token, "B")
    )
    got = []
    for role in ROLES:
        method, path, body = await setup(client, world)
        before = await _snapshot(db)
        resp = await client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {token_of(world, role)}"}
        )
        got.append(resp.status)
        answer = await resp.json() if resp.status != 204 else None
        if resp.status >= 400:
            assert answer is not None and set(answer) == {"error", "details"}
            assert await _snapshot(db) == before, (role, "a denied request changed stored rows")
        elif (company := company_of(world, role)) is not None:
            leaked = _uuids_in(answer) & await _ids_outside(db, company)
            assert not leaked, (role, "answer names another company's rows", leaked)
    assert tuple(got) == expected, dict(zip(ROLES, got, strict=True))
    # No token at all is always 401.
    method, path, body = await setup(client, world)
    assert (await client.request(method, path, json=body)).status == 401


# --- Routine features (issue 16): their own rows, kept apart from the matrix above. ---------------


async def _run(client: Client, world: World) -> dict[str, Any]:
    r = await _routine(client, world)
    return await api_client.run_routine(client, world.a, r["id"], {})


async def replay_run(client: Client, world: World) -> Request:
    return "POST", f"/api/runs/{(await _run(client, world))['id']}/replay", {}


async def routine_upcoming(client: Client, world: World) -> Request:
    return "GET", f"/api/routines/{(await _routine(client, world))['id']}/upcoming", None


async def backfill_dry_run(client: Client, world: World) -> Request:
    r = await _routine(client, world)
    t = await api_client.make_trigger(
        client, world.a, r["id"], {"kind": "schedule", "cronExpression": "0 * * * *"}
    )
    body = {"triggerId": t["id"], "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}
    return "POST", f"/api/routines/{r['id']}/backfill", body


async def routine_health(client: Client, world: World) -> Request:
    return "GET", f"/api/routines/{(await _routine(client, world))['id']}/health", None


async def list_revisions(client: Client, world: World) -> Request:
    return "GET", f"/api/routines/{(await _routine(client, world))['id']}/revisions", None


async def restore_revision(client: Client, world: World) -> Request:
    r = await _routine(client, world)
    return "POST", f"/api/routines/{r['id']}/revisions/{r['revisionId']}/restore", None


async def routine_activity(client: Client, world: World) -> Request:
    return "GET", f"/api/routines/{(await _routine(client, world))['id']}/activity", None


async def run_with_override(client: Client, world: World) -> Request:
    body = {"assigneeAgentId": world.a.other_agent_id}
    return "POST", f"/api/routines/{(await _routine(client, world))['id']}/run", body


#             admin board_a board_b assignee other_a agent_b
FEATURE_MATRIX: list[tuple[str, Setup, tuple[int, ...]]] = [
    ("replay run", replay_run, (202, 202, 404, 202, 403, 404)),
    ("routine upcoming", routine_upcoming, (200, 200, 404, 200, 200, 404)),
    ("company upcoming", static("GET", "/api/companies/{a}/upcoming"), (200, 200, 403, 200, 200, 403)),
    ("backfill", backfill_dry_run, (200, 200, 404, 200, 403, 404)),
    ("routine health", routine_health, (200, 200, 404, 200, 200, 404)),
    ("list revisions", list_revisions, (200, 200, 404, 200, 200, 404)),
    ("restore revision", restore_revision, (200, 200, 404, 200, 403, 404)),
    ("routine activity", routine_activity, (200, 200, 404, 200, 200, 404)),
    ("company activity", static("GET", "/api/companies/{a}/activity"), (200, 200, 403, 200, 200, 403)),
    ("manual run with override", run_with_override, (202, 202, 404, 403, 403, 404)),
]


@pytest.mark.parametrize(("name", "setup", "expected"), FEATURE_MATRIX, ids=[m[0] for m in FEATURE_MATRIX])
async def test_feature_authorization_matrix(
    client: Client,
    admin_token: str,
    db: asyncpg.Connection,
    name: str,
    setup: Setup,
    expected: tuple[int, ...],
) -> None:
    await test_authorization_matrix(client, admin_token, db, name, setup, expected)


# Routes the matrix cannot call like the others, and where their authorization is tested instead.
NOT_IN_MATRIX = {
    ("GET", "/api/agents/me/wakeups"): "an endless event stream; tests/integration/test_wakeups*.py",
}


async def test_every_api_route_is_in_a_matrix(client: Client, admin_token: str) -> None:
    """A new endpoint cannot be added without its row: every operation of the route table is
    requested by some matrix row (or named in NOT_IN_MATRIX with where it is tested)."""
    from routines_api.routes import ROUTES

    world = World(
        admin_token, await make_tenant(client, admin_token, "A"), await make_tenant(client, admin_token, "B")
    )
    requested = set()
    for _name, setup, _expected in [*MATRIX, *FEATURE_MATRIX]:
        method, path, _body = await setup(client, world)
        requested.add((method, path.partition("?")[0]))
    missing = []
    for op in ROUTES.operations:
        pattern = re.compile("^" + re.sub(r"\{[A-Za-z]+\}", "[^/]+", op.path) + "$")
        covered = any(m == op.method and pattern.match(p) for m, p in requested)
        if not covered and (op.method, op.path) not in NOT_IN_MATRIX:
            missing.append(f"{op.method} {op.path}")
    assert missing == []
