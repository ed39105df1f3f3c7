"""Authorization matrix: six callers × every endpoint → the expected status, for every cell."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from shared.http import SETTINGS_KEY
from tests.integration import api_client
from tests.integration.api_client import Client, World, call, make_routine

ROLES = ["admin", "board_a", "board_b", "assignee", "other_agent_a", "agent_b"]
Request = tuple[str, str, Any]
Setup = Callable[[Client, World], Awaitable[Request]]
MakeRow = Callable[[Client, World], Awaitable[dict[str, Any]]]


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


async def _run(client: Client, world: World) -> dict[str, Any]:
    r = await _routine(client, world)
    return await api_client.run_routine(client, world.a, r["id"], {})


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


def on_new(make: MakeRow, method: str, path: str, body: Any = None) -> Setup:
    """A request about a row of tenant A that `make` creates afresh: "{id}" in `path` is its id."""

    async def setup(client: Client, world: World) -> Request:
        return method, path.format(id=(await make(client, world))["id"]), body

    return setup


async def create_routine(client: Client, world: World) -> Request:
    return (
        "POST",
        f"/api/companies/{world.a.company_id}/routines",
        {"title": "t", "assigneeAgentId": world.a.agent_id, "projectId": world.a.project_id},
    )


async def reassign_routine(client: Client, world: World) -> Request:
    return (
        "PATCH",
        f"/api/routines/{(await _routine(client, world))['id']}",
        {"assigneeAgentId": world.a.other_agent_id},
    )


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


# The rules most endpoints follow, one status per role of ROLES:
#                admin board_a board_b assignee other_a agent_b
EVERYONE = (200, 200, 200, 200, 200, 200)
ADMIN_ONLY = (200, 403, 403, 403, 403, 403)
BOARD_ADDS = (201, 201, 403, 403, 403, 403)  # to a company's collection
MEMBERS_LIST = (200, 200, 403, 200, 200, 403)  # a company's collection
MEMBERS_READ = (200, 200, 404, 200, 200, 404)  # one row: to another company it does not exist
ASSIGNEE_EDITS = (200, 200, 404, 200, 403, 404)  # the board, or the agent the row is assigned to
BOARD_EDITS = (200, 200, 404, 403, 403, 404)  # the board only

#             admin board_a board_b assignee other_a agent_b
MATRIX: list[tuple[str, Setup, tuple[int, ...]]] = [
    ("create company", static("POST", "/api/companies", {"name": "C"}), (201, 403, 403, 403, 403, 403)),
    ("list companies", static("GET", "/api/companies"), EVERYONE),
    ("create agent", static("POST", "/api/companies/{a}/agents", {"name": "n"}), BOARD_ADDS),
    ("list agents", static("GET", "/api/companies/{a}/agents"), MEMBERS_LIST),
    ("patch agent", static("PATCH", "/api/agents/{other}", {"status": "active"}), BOARD_EDITS),
    ("agents me", static("GET", "/api/agents/me"), (403, 403, 403, 200, 200, 200)),
    ("create project", static("POST", "/api/companies/{a}/projects", {"name": "p"}), BOARD_ADDS),
    ("list projects", static("GET", "/api/companies/{a}/projects"), MEMBERS_LIST),
    ("create goal", static("POST", "/api/companies/{a}/goals", {"title": "g"}), BOARD_ADDS),
    ("list goals", static("GET", "/api/companies/{a}/goals"), MEMBERS_LIST),
    ("board token", static("POST", "/api/companies/{a}/board-tokens", {"name": "b"}), BOARD_ADDS),
    ("create issue", static("POST", "/api/companies/{a}/issues", {"title": "i"}), BOARD_ADDS),
    ("list issues", static("GET", "/api/companies/{a}/issues"), MEMBERS_LIST),
    ("get issue", on_new(_issue, "GET", "/api/issues/{id}"), MEMBERS_READ),
    ("patch issue", on_new(_issue, "PATCH", "/api/issues/{id}", {"status": "in_progress"}), ASSIGNEE_EDITS),
    ("create routine", create_routine, (201, 201, 403, 201, 403, 403)),
    ("list routines", static("GET", "/api/companies/{a}/routines"), MEMBERS_LIST),
    ("get routine", on_new(_routine, "GET", "/api/routines/{id}"), MEMBERS_READ),
    ("patch routine", on_new(_routine, "PATCH", "/api/routines/{id}", {"title": "new"}), ASSIGNEE_EDITS),
    ("reassign routine", reassign_routine, BOARD_EDITS),
    (
        "add trigger",
        on_new(_routine, "POST", "/api/routines/{id}/triggers", {"kind": "api"}),
        (201, 201, 404, 201, 403, 404),
    ),
    (
        "patch trigger",
        on_new(_trigger, "PATCH", "/api/routine-triggers/{id}", {"label": "x"}),
        ASSIGNEE_EDITS,
    ),
    (
        "delete trigger",
        on_new(_trigger, "DELETE", "/api/routine-triggers/{id}"),
        (204, 204, 404, 204, 403, 404),
    ),
    (
        "rotate secret",
        on_new(_trigger, "POST", "/api/routine-triggers/{id}/rotate-secret", {}),
        ASSIGNEE_EDITS,
    ),
    ("manual run", on_new(_routine, "POST", "/api/routines/{id}/run", {}), (202, 202, 404, 202, 403, 404)),
    ("list runs", on_new(_routine, "GET", "/api/routines/{id}/runs"), MEMBERS_READ),
    ("get run", on_new(_run, "GET", "/api/runs/{id}"), MEMBERS_READ),
    ("list board tokens", static("GET", "/api/companies/{a}/board-tokens"), (200, 200, 403, 403, 403, 403)),
    ("revoke board token", revoke_board_token, BOARD_EDITS),
    ("list instance tokens", static("GET", "/api/instance-tokens"), ADMIN_ONLY),
    ("revoke instance token", revoke_instance_token, ADMIN_ONLY),
    ("rotate agent key", rotate_agent_key, BOARD_EDITS),
    ("cron preview", static("POST", "/api/cron/preview", {"cronExpression": "@daily"}), EVERYONE),
]


# --- Routine features (issue 16): their own rows, kept apart from the matrix above. ---------------


async def backfill_dry_run(client: Client, world: World) -> Request:
    r = await _routine(client, world)
    t = await api_client.make_trigger(
        client, world.a, r["id"], {"kind": "schedule", "cronExpression": "0 * * * *"}
    )
    body = {"triggerId": t["id"], "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}
    return "POST", f"/api/routines/{r['id']}/backfill", body


async def restore_revision(client: Client, world: World) -> Request:
    r = await _routine(client, world)
    return "POST", f"/api/routines/{r['id']}/revisions/{r['revisionId']}/restore", None


async def run_with_override(client: Client, world: World) -> Request:
    body = {"assigneeAgentId": world.a.other_agent_id}
    return "POST", f"/api/routines/{(await _routine(client, world))['id']}/run", body


#             admin board_a board_b assignee other_a agent_b
FEATURE_MATRIX: list[tuple[str, Setup, tuple[int, ...]]] = [
    ("replay run", on_new(_run, "POST", "/api/runs/{id}/replay", {}), (202, 202, 404, 202, 403, 404)),
    ("routine upcoming", on_new(_routine, "GET", "/api/routines/{id}/upcoming"), MEMBERS_READ),
    ("company upcoming", static("GET", "/api/companies/{a}/upcoming"), MEMBERS_LIST),
    ("backfill", backfill_dry_run, ASSIGNEE_EDITS),
    ("routine health", on_new(_routine, "GET", "/api/routines/{id}/health"), MEMBERS_READ),
    ("list revisions", on_new(_routine, "GET", "/api/routines/{id}/revisions"), MEMBERS_READ),
    ("restore revision", restore_revision, ASSIGNEE_EDITS),
    ("routine activity", on_new(_routine, "GET", "/api/routines/{id}/activity"), MEMBERS_READ),
    ("company activity", static("GET", "/api/companies/{a}/activity"), MEMBERS_LIST),
    ("manual run with override", run_with_override, (202, 202, 404, 403, 403, 404)),
]
EVERY_ROW = [*MATRIX, *FEATURE_MATRIX]


@pytest.fixture
def api_settings() -> dict[str, Any]:
    """Manual runs are answered at once (no wait for their decision)."""
    return {"manual_run_wait_sec": 0}


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


@pytest.mark.parametrize(("name", "setup", "expected"), EVERY_ROW, ids=[m[0] for m in EVERY_ROW])
async def test_authorization_matrix(
    client: Client,
    world: World,
    db: asyncpg.Connection,
    name: str,
    setup: Setup,
    expected: tuple[int, ...],
) -> None:
    """Each cell's status; a denial changes no row anywhere; an allowed answer names no row of
    another company."""
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


# Routes the matrix cannot call like the others, and where their authorization is tested instead.
NOT_IN_MATRIX = {
    ("GET", "/api/agents/me/wakeups"): "an endless event stream; tests/integration/test_wakeups*.py",
}


async def test_every_api_route_is_in_a_matrix(client: Client, world: World) -> None:
    """A new endpoint cannot be added without its row: every operation of the route table is
    requested by some matrix row (or named in NOT_IN_MATRIX with where it is tested)."""
    from routines_api.routes import ROUTES

    requested = set()
    for _name, setup, _expected in EVERY_ROW:
        method, path, _body = await setup(client, world)
        requested.add((method, path.partition("?")[0]))
    missing = []
    for op in ROUTES.operations:
        pattern = re.compile("^" + re.sub(r"\{[A-Za-z]+\}", "[^/]+", op.path) + "$")
        covered = any(m == op.method and pattern.match(p) for m, p in requested)
        if not covered and (op.method, op.path) not in NOT_IN_MATRIX:
            missing.append(f"{op.method} {op.path}")
    assert missing == []
