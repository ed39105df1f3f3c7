"""Authorization matrix: six callers × every endpoint → the expected status, for every cell."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

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
    return await call(
        client, "POST", f"/api/routines/{r['id']}/triggers", world.a.board, {"kind": "webhook"}, 201
    )


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


@pytest.mark.parametrize(("name", "setup", "expected"), MATRIX, ids=[m[0] for m in MATRIX])
async def test_authorization_matrix(
    client: Client, admin_token: str, name: str, setup: Setup, expected: tuple[int, ...]
) -> None:
    world = World(
        admin_token, await make_tenant(client, admin_token, "A"), await make_tenant(client, admin_token, "B")
    )
    got = []
    for role in ROLES:
        method, path, body = await setup(client, world)
        resp = await client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {token_of(world, role)}"}
        )
        got.append(resp.status)
        if resp.status >= 400:
            assert set(await resp.json()) == {"error", "details"}
    assert tuple(got) == expected, dict(zip(ROLES, got, strict=True))
    # No token at all is always 401.
    method, path, body = await setup(client, world)
    assert (await client.request(method, path, json=body)).status == 401


# --- Routine features (issue 16): their own rows, kept apart from the matrix above. ---------------


async def _run(client: Client, world: World) -> dict[str, Any]:
    r = await _routine(client, world)
    return await call(client, "POST", f"/api/routines/{r['id']}/run", world.a.board, {}, 202)


async def get_run(client: Client, world: World) -> Request:
    return "GET", f"/api/runs/{(await _run(client, world))['id']}", None


async def replay_run(client: Client, world: World) -> Request:
    return "POST", f"/api/runs/{(await _run(client, world))['id']}/replay", {}


async def routine_upcoming(client: Client, world: World) -> Request:
    return "GET", f"/api/routines/{(await _routine(client, world))['id']}/upcoming", None


async def backfill_dry_run(client: Client, world: World) -> Request:
    r = await _routine(client, world)
    t = await call(
        client,
        "POST",
        f"/api/routines/{r['id']}/triggers",
        world.a.board,
        {"kind": "schedule", "cronExpression": "0 * * * *"},
        201,
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
    ("get run", get_run, (200, 200, 404, 200, 200, 404)),
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
    client: Client, admin_token: str, name: str, setup: Setup, expected: tuple[int, ...]
) -> None:
    await test_authorization_matrix(client, admin_token, name, setup, expected)
