"""The API against real Postgres and NATS: every endpoint, validation rule and error status."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.integration.api_client import Client, World, api_app, call, make_routine, make_tenant
from tests.support import Stack


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[Client]:
    async with TestClient(TestServer(api_app(stack, manual_run_wait_sec=0.2))) as client:
        yield client


@pytest.fixture
async def world(client: Client, admin_token: str) -> World:
    return World(
        admin_token, await make_tenant(client, admin_token, "A"), await make_tenant(client, admin_token, "B")
    )


async def test_routine_defaults_and_detail(client: Client, world: World) -> None:
    r = await make_routine(client, world.a, title="  Weekly CEO briefing  ", description="status")
    assert r["title"] == "Weekly CEO briefing"
    assert (r["priority"], r["status"], r["concurrencyPolicy"], r["catchUpPolicy"]) == (
        "medium",
        "active",
        "coalesce_if_active",
        "skip_missed",
    )
    detail = await call(client, "GET", f"/api/routines/{r['id']}", world.a.board, status=200)
    assert detail["triggers"] == []
    listed = await call(
        client,
        "GET",
        f"/api/companies/{world.a.company_id}/routines?status=active",
        world.a.board,
        status=200,
    )
    assert [x["id"] for x in listed] == [r["id"]]
    assert (
        await call(
            client,
            "GET",
            f"/api/companies/{world.a.company_id}/routines?status=paused",
            world.a.board,
            status=200,
        )
        == []
    )
    by_agent = await call(
        client,
        "GET",
        f"/api/companies/{world.a.company_id}/routines?assigneeAgentId={world.a.other_agent_id}",
        world.a.board,
        status=200,
    )
    assert by_agent == []


@pytest.mark.parametrize(
    ("patch", "status"),
    [
        ({"title": ""}, 400),
        ({"title": "x" * 201}, 400),
        ({"priority": "urgent"}, 400),
        ({"status": "deleted"}, 400),
        ({"concurrencyPolicy": "sometimes"}, 400),
        ({"catchUpPolicy": "all"}, 400),
        ({"bogus": 1}, 400),
        ({"assigneeAgentId": str(uuid.uuid4())}, 422),
        ({"projectId": str(uuid.uuid4())}, 422),
        ({"goalId": str(uuid.uuid4())}, 422),
        ({"parentIssueId": str(uuid.uuid4())}, 422),
    ],
)
async def test_routine_create_validation(
    client: Client, world: World, patch: dict[str, object], status: int
) -> None:
    body = {"title": "t", "assigneeAgentId": world.a.agent_id, "projectId": world.a.project_id, **patch}
    resp = await call(
        client, "POST", f"/api/companies/{world.a.company_id}/routines", world.a.board, body, status
    )
    assert set(resp) == {"error", "details"}


async def test_cross_company_references_are_422(client: Client, world: World) -> None:
    body = {"title": "t", "assigneeAgentId": world.b.agent_id, "projectId": world.a.project_id}
    err = await call(
        client, "POST", f"/api/companies/{world.a.company_id}/routines", world.a.board, body, 422
    )
    assert "another company" in err["error"]
    body = {"title": "t", "assigneeAgentId": world.a.agent_id, "projectId": world.b.project_id}
    await call(client, "POST", f"/api/companies/{world.a.company_id}/routines", world.a.board, body, 422)


async def test_only_active_agents_can_be_assigned(client: Client, world: World) -> None:
    await call(
        client, "PATCH", f"/api/agents/{world.a.other_agent_id}", world.a.board, {"status": "paused"}, 200
    )
    body = {"title": "t", "assigneeAgentId": world.a.other_agent_id, "projectId": world.a.project_id}
    err = await call(
        client, "POST", f"/api/companies/{world.a.company_id}/routines", world.a.board, body, 422
    )
    assert "active agents" in err["error"]


async def test_archived_is_terminal(client: Client, world: World) -> None:
    r = await make_routine(client, world.a)
    await call(client, "PATCH", f"/api/routines/{r['id']}", world.a.board, {"status": "paused"}, 200)
    await call(client, "PATCH", f"/api/routines/{r['id']}", world.a.board, {"status": "archived"}, 200)
    for status in ("active", "paused", "archived"):
        await call(client, "PATCH", f"/api/routines/{r['id']}", world.a.board, {"status": status}, 409)
    await call(client, "POST", f"/api/routines/{r['id']}/run", world.a.board, {}, 409)


async def test_schedule_trigger_lifecycle(client: Client, world: World, db: asyncpg.Connection) -> None:
    r = await make_routine(client, world.a)
    t = await call(
        client,
        "POST",
        f"/api/routines/{r['id']}/triggers",
        world.a.board,
        {
            "kind": "schedule",
            "cronExpression": "0 9 * * 1",
            "timezone": "Europe/Amsterdam",
            "label": "weekly",
        },
        201,
    )
    assert t["nextRunAt"] is not None
    assert t["timezone"] == "Europe/Amsterdam"
    utc_default = await call(
        client,
        "POST",
        f"/api/routines/{r['id']}/triggers",
        world.a.board,
        {"kind": "schedule", "cronExpression": "*/5 * * * *"},
        201,
    )
    assert utc_default["timezone"] == "UTC"
    bad = await call(
        client,
        "POST",
        f"/api/routines/{r['id']}/triggers",
        world.a.board,
        {"kind": "schedule", "cronExpression": "61 * * * *"},
        422,
    )
    assert "minute" in bad["error"] or "invalid" in bad["error"]
    await call(
        client,
        "POST",
        f"/api/routines/{r['id']}/triggers",
        world.a.board,
        {"kind": "schedule", "cronExpression": "0 9 * * *", "timezone": "Mars/Olympus"},
        422,
    )
    await call(
        client,
        "POST",
        f"/api/routines/{r['id']}/triggers",
        world.a.board,
        {"kind": "schedule", "cronExpression": "0 9 * * *", "label": "x" * 121},
        400,
    )
    # Disable parks it; enable recomputes from now; changing the kind is refused.
    off = await call(
        client, "PATCH", f"/api/routine-triggers/{t['id']}", world.a.board, {"enabled": False}, 200
    )
    assert off["nextRunAt"] is None
    on = await call(
        client, "PATCH", f"/api/routine-triggers/{t['id']}", world.a.board, {"enabled": True}, 200
    )
    assert on["nextRunAt"] is not None
    await call(client, "PATCH", f"/api/routine-triggers/{t['id']}", world.a.board, {"kind": "webhook"}, 400)
    edited = await call(
        client,
        "PATCH",
        f"/api/routine-triggers/{t['id']}",
        world.a.board,
        {"cronExpression": "0 10 * * 1"},
        200,
    )
    assert edited["nextRunAt"] != on["nextRunAt"]
    # Pause parks every schedule trigger; resume recomputes from now (no burst of missed slots).
    await call(client, "PATCH", f"/api/routines/{r['id']}", world.a.board, {"status": "paused"}, 200)
    detail = await call(client, "GET", f"/api/routines/{r['id']}", world.a.board, status=200)
    assert all(x["nextRunAt"] is None for x in detail["triggers"])
    await db.execute("UPDATE routine_triggers SET next_run_at = NULL")
    await call(client, "PATCH", f"/api/routines/{r['id']}", world.a.board, {"status": "active"}, 200)
    detail = await call(client, "GET", f"/api/routines/{r['id']}", world.a.board, status=200)
    now = await db.fetchval("SELECT now()")
    for x in detail["triggers"]:
        assert x["nextRunAt"] is not None
    assert await db.fetchval("SELECT count(*) FROM routine_triggers WHERE next_run_at < $1", now) == 0


async def test_webhook_trigger_secret_shown_once_and_encrypted(
    client: Client, world: World, db: asyncpg.Connection
) -> None:
    r = await make_routine(client, world.a)
    t = await call(
        client, "POST", f"/api/routines/{r['id']}/triggers", world.a.board, {"kind": "webhook"}, 201
    )
    assert t["signingMode"] == "bearer"
    assert t["replayWindowSec"] == 300
    assert len(t["publicId"]) == 24
    assert t["webhookUrl"] == f"https://hooks.example.test/api/routine-triggers/public/{t['publicId']}/fire"
    secret = t["secret"]
    assert len(secret) > 40
    detail = await call(client, "GET", f"/api/routines/{r['id']}", world.a.board, status=200)
    assert "secret" not in detail["triggers"][0]
    dumped = await db.fetchval("SELECT string_agg(encode(ciphertext, 'escape'), '') FROM webhook_secrets")
    assert secret not in dumped
    assert secret.encode() not in b"".join(
        r["ciphertext"] for r in await db.fetch("SELECT ciphertext FROM webhook_secrets")
    )
    for window in (29, 86401):
        await call(
            client,
            "POST",
            f"/api/routines/{r['id']}/triggers",
            world.a.board,
            {"kind": "webhook", "replayWindowSec": window},
            400,
        )
    await call(
        client,
        "POST",
        f"/api/routines/{r['id']}/triggers",
        world.a.board,
        {"kind": "webhook", "signingMode": "md5"},
        400,
    )
    rotated = await call(
        client, "POST", f"/api/routine-triggers/{t['id']}/rotate-secret", world.a.board, {}, 200
    )
    assert rotated["secret"] != secret
    assert rotated["previousSecretValidUntil"] is None
    assert (
        await db.fetchval("SELECT count(*) FROM webhook_secrets WHERE trigger_id = $1", uuid.UUID(t["id"]))
        == 1
    )
    graced = await call(
        client, "POST", f"/api/routine-triggers/{t['id']}/rotate-secret", world.a.board, {"graceSec": 60}, 200
    )
    assert graced["previousSecretValidUntil"] is not None
    assert (
        await db.fetchval("SELECT count(*) FROM webhook_secrets WHERE trigger_id = $1", uuid.UUID(t["id"]))
        == 2
    )
    await call(
        client,
        "POST",
        f"/api/routine-triggers/{t['id']}/rotate-secret",
        world.a.board,
        {"graceSec": 86401},
        400,
    )
    api_trigger = await call(
        client, "POST", f"/api/routines/{r['id']}/triggers", world.a.board, {"kind": "api"}, 201
    )
    await call(
        client, "POST", f"/api/routine-triggers/{api_trigger['id']}/rotate-secret", world.a.board, {}, 422
    )


async def test_deleting_a_trigger_keeps_its_runs(
    client: Client, world: World, db: asyncpg.Connection
) -> None:
    r = await make_routine(client, world.a)
    t = await call(client, "POST", f"/api/routines/{r['id']}/triggers", world.a.board, {"kind": "api"}, 201)
    run = await call(
        client, "POST", f"/api/routines/{r['id']}/run", world.a.board, {"triggerId": t["id"]}, 202
    )
    assert run["triggerId"] == t["id"]
    await call(client, "DELETE", f"/api/routine-triggers/{t['id']}", world.a.board, status=204)
    runs = await call(client, "GET", f"/api/routines/{r['id']}/runs", world.a.board, status=200)
    assert [(x["id"], x["triggerId"]) for x in runs] == [(run["id"], None)]
    await call(client, "DELETE", f"/api/routine-triggers/{t['id']}", world.a.board, status=404)


async def test_manual_run_rules(client: Client, world: World) -> None:
    r = await make_routine(client, world.a)
    other = await make_routine(client, world.a)
    t_other = await call(
        client, "POST", f"/api/routines/{other['id']}/triggers", world.a.board, {"kind": "api"}, 201
    )
    await call(
        client, "POST", f"/api/routines/{r['id']}/run", world.a.board, {"triggerId": t_other["id"]}, 403
    )
    t = await call(
        client,
        "POST",
        f"/api/routines/{r['id']}/triggers",
        world.a.board,
        {"kind": "api", "enabled": False},
        201,
    )
    await call(client, "POST", f"/api/routines/{r['id']}/run", world.a.board, {"triggerId": t["id"]}, 409)
    first = await call(
        client,
        "POST",
        f"/api/routines/{r['id']}/run",
        world.a.board,
        {"source": "api", "payload": {"x": 1}, "idempotencyKey": "k1"},
        202,
    )
    # The same key with the same payload is the retry (a different payload is 422: DESIGN).
    again = await call(
        client,
        "POST",
        f"/api/routines/{r['id']}/run",
        world.a.board,
        {"payload": {"x": 1}, "idempotencyKey": "k1"},
        200,
    )
    assert again["id"] == first["id"]
    assert first["source"] == "api"
    assert first["payload"] == {"x": 1}
    await call(
        client, "POST", f"/api/routines/{r['id']}/run", world.a.board, {"idempotencyKey": "k" * 256}, 400
    )
    await call(client, "POST", f"/api/routines/{r['id']}/run", world.a.board, {"payload": [1, 2]}, 400)
    await call(client, "POST", f"/api/routines/{r['id']}/run", world.a.board, {"source": "schedule"}, 400)
    await call(client, "PATCH", f"/api/routines/{r['id']}", world.a.board, {"status": "paused"}, 200)
    await call(client, "POST", f"/api/routines/{r['id']}/run", world.a.board, {}, 202)
    runs = await call(client, "GET", f"/api/routines/{r['id']}/runs?limit=1", world.a.board, status=200)
    assert len(runs) == 1
    for bad in ("0", "501", "x"):
        await call(client, "GET", f"/api/routines/{r['id']}/runs?limit={bad}", world.a.board, status=400)


async def test_cron_preview(client: Client, world: World) -> None:
    got = await call(
        client,
        "POST",
        "/api/cron/preview",
        world.a.agent_key,
        {
            "cronExpression": "30 2 * * *",
            "timezone": "Europe/Amsterdam",
            "after": "2027-03-27T12:00:00Z",
            "count": 2,
        },
        200,
    )
    assert got["fires"][0] == {"utc": "2027-03-28T01:00:00Z", "local": "2027-03-28T03:00:00+02:00"}
    assert len(got["fires"]) == 2
    default = await call(
        client, "POST", "/api/cron/preview", world.a.agent_key, {"cronExpression": "@hourly"}, 200
    )
    assert len(default["fires"]) == 5
    await call(client, "POST", "/api/cron/preview", world.a.agent_key, {"cronExpression": "* * *"}, 422)
    await call(
        client,
        "POST",
        "/api/cron/preview",
        world.a.agent_key,
        {"cronExpression": "* * * * *", "timezone": "Nope/Nope"},
        422,
    )
    await call(
        client,
        "POST",
        "/api/cron/preview",
        world.a.agent_key,
        {"cronExpression": "* * * * *", "count": 101},
        400,
    )


async def test_issues_and_run_completion(client: Client, world: World, db: asyncpg.Connection) -> None:
    parent = await call(
        client, "POST", f"/api/companies/{world.a.company_id}/issues", world.a.board, {"title": "Parent"}, 201
    )
    r = await make_routine(client, world.a, parentIssueId=parent["id"])
    run = await call(
        client, "POST", f"/api/routines/{r['id']}/run", world.a.board, {"payload": {"ctx": "hi"}}, 202
    )
    # No dispatcher here: decide it the way the dispatcher does.
    from routines_dispatcher.decide import decide_runs

    async with db.transaction():
        await decide_runs(db, [uuid.UUID(run["id"])])
    run = (await call(client, "GET", f"/api/routines/{r['id']}/runs", world.a.board, status=200))[0]
    issue = await call(client, "GET", f"/api/issues/{run['linkedIssueId']}", world.a.agent_key, status=200)
    assert (issue["parentIssueId"], issue["payload"], issue["originKind"], issue["originRunId"]) == (
        parent["id"],
        {"ctx": "hi"},
        "routine_execution",
        run["id"],
    )
    mine = await call(
        client,
        "GET",
        f"/api/companies/{world.a.company_id}/issues?assigneeAgentId={world.a.agent_id}&status=todo&routineId={r['id']}",
        world.a.agent_key,
        status=200,
    )
    assert [i["id"] for i in mine] == [issue["id"]]
    await call(
        client, "PATCH", f"/api/issues/{issue['id']}", world.a.other_agent_key, {"status": "done"}, 403
    )
    await call(client, "PATCH", f"/api/issues/{issue['id']}", world.a.agent_key, {"status": "done"}, 200)
    run = (await call(client, "GET", f"/api/routines/{r['id']}/runs", world.a.board, status=200))[0]
    assert run["status"] == "completed"
    assert run["completedAt"] is not None
    run2 = await call(client, "POST", f"/api/routines/{r['id']}/run", world.a.board, {}, 202)
    async with db.transaction():
        await decide_runs(db, [uuid.UUID(run2["id"])])
    issue2 = (await call(client, "GET", f"/api/routines/{r['id']}/runs", world.a.board, status=200))[0][
        "linkedIssueId"
    ]
    await call(client, "PATCH", f"/api/issues/{issue2}", world.a.board, {"status": "cancelled"}, 200)
    failed = (await call(client, "GET", f"/api/routines/{r['id']}/runs", world.a.board, status=200))[0]
    assert (failed["status"], failed["failureReason"]) == ("failed", "execution issue cancelled")
    await call(
        client, "GET", f"/api/companies/{world.a.company_id}/issues?status=open", world.a.board, status=400
    )


async def test_directory(client: Client, world: World) -> None:
    me = await call(client, "GET", "/api/agents/me", world.a.agent_key, status=200)
    assert me["id"] == world.a.agent_id
    await call(client, "GET", "/api/agents/me", world.a.board, status=403)
    companies = await call(client, "GET", "/api/companies", world.a.board, status=200)
    assert [c["id"] for c in companies] == [world.a.company_id]
    assert len(await call(client, "GET", "/api/companies", world.admin, status=200)) == 2
    goal = await call(
        client, "POST", f"/api/companies/{world.a.company_id}/goals", world.a.board, {"title": "Grow"}, 201
    )
    assert [
        g["id"]
        for g in await call(
            client, "GET", f"/api/companies/{world.a.company_id}/goals", world.a.agent_key, status=200
        )
    ] == [goal["id"]]
    assert (
        len(
            await call(
                client, "GET", f"/api/companies/{world.a.company_id}/projects", world.a.agent_key, status=200
            )
        )
        == 1
    )
    assert (
        len(
            await call(
                client, "GET", f"/api/companies/{world.a.company_id}/agents", world.a.agent_key, status=200
            )
        )
        == 2
    )
    # A board member mints another board token; it works.
    token = (
        await call(
            client,
            "POST",
            f"/api/companies/{world.a.company_id}/board-tokens",
            world.a.board,
            {"name": "2"},
            201,
        )
    )["token"]
    await call(client, "GET", f"/api/companies/{world.a.company_id}/agents", token, status=200)
    terminated = await call(
        client, "PATCH", f"/api/agents/{world.a.other_agent_id}", world.a.board, {"status": "terminated"}, 200
    )
    assert terminated["status"] == "terminated"
    await call(client, "GET", "/api/agents/me", world.a.other_agent_key, status=401)
    await call(client, "PATCH", f"/api/agents/{world.a.agent_id}", world.a.board, {"status": "sleeping"}, 400)


async def test_authentication_errors(client: Client, world: World) -> None:
    for headers in (
        {},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer nope"},
    ):
        resp = await client.get("/api/companies", headers=headers)
        assert resp.status == 401
        assert set(await resp.json()) == {"error", "details"}


async def test_openapi_document_is_valid_and_complete(client: Client) -> None:
    from openapi_spec_validator import validate

    resp = await client.get("/api/openapi.json")
    doc = await resp.json()
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    for expected in [
        ("GET", "/api/companies/{companyId}/routines"),
        ("GET", "/api/routines/{routineId}"),
        ("POST", "/api/companies/{companyId}/routines"),
        ("PATCH", "/api/routines/{routineId}"),
        ("POST", "/api/routines/{routineId}/triggers"),
        ("PATCH", "/api/routine-triggers/{triggerId}"),
        ("DELETE", "/api/routine-triggers/{triggerId}"),
        ("POST", "/api/routine-triggers/{triggerId}/rotate-secret"),
        ("POST", "/api/routines/{routineId}/run"),
        ("POST", "/api/routine-triggers/public/{publicId}/fire"),
        ("GET", "/api/routines/{routineId}/runs"),
        ("POST", "/api/cron/preview"),
    ]:
        assert expected in ops
    page = await client.get("/api/docs")
    assert page.status == 200
    assert "openapi.json" in await page.text()
