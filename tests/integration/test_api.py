"""The API against real Postgres and NATS: every endpoint, validation rule and error status."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from shared.http import Handler
from tests.integration.api_client import Client, World, api_app, call, make_routine, make_tenant
from tests.support import Stack, wait_until


@pytest.fixture
def api_settings() -> dict[str, Any]:
    """Manual runs wait briefly for their decision here."""
    return {"manual_run_wait_sec": 0.2}


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
    await call(client, "POST", f"/api/companies/{world.a.company_id}/routines", world.a.board, body, 422)
    body = {"title": "t", "assigneeAgentId": world.a.agent_id, "projectId": world.b.project_id}
    await call(client, "POST", f"/api/companies/{world.a.company_id}/routines", world.a.board, body, 422)


@pytest.mark.parametrize("field", ["assigneeAgentId", "projectId", "goalId", "parentIssueId"])
async def test_reference_messages_do_not_reveal_whether_a_foreign_id_exists(
    client: Client, world: World, field: str
) -> None:
    """Another company's real id and an id that exists nowhere get the same answer (bar the id)."""
    foreign = {
        "assigneeAgentId": world.b.agent_id,
        "projectId": world.b.project_id,
        "goalId": (
            await call(
                client,
                "POST",
                f"/api/companies/{world.b.company_id}/goals",
                world.b.board,
                {"title": "g"},
                201,
            )
        )["id"],
        "parentIssueId": (
            await call(
                client,
                "POST",
                f"/api/companies/{world.b.company_id}/issues",
                world.b.board,
                {"title": "i"},
                201,
            )
        )["id"],
    }[field]
    missing = str(uuid.uuid4())
    answers = []
    for ref in (foreign, missing):
        body = {
            "title": "t",
            "assigneeAgentId": world.a.agent_id,
            "projectId": world.a.project_id,
            field: ref,
        }
        err = await call(
            client, "POST", f"/api/companies/{world.a.company_id}/routines", world.a.board, body, 422
        )
        answers.append(json.dumps(err).replace(ref, "<id>"))
    assert answers[0] == answers[1]


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
    assert got["fires"][0]["utc"] == "2027-03-28T01:00:00Z"
    assert got["fires"][0]["local"] == "2027-03-28T03:00:00+02:00"
    assert got["fires"][0]["dst"]["kind"] == "shifted_out_of_gap"
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
        ("GET", "/api/runs/{runId}"),
        ("GET", "/api/companies/{companyId}/board-tokens"),
        ("POST", "/api/board-tokens/{tokenId}/revoke"),
        ("GET", "/api/instance-tokens"),
        ("POST", "/api/instance-tokens/{tokenId}/revoke"),
        ("POST", "/api/agents/{agentId}/rotate-key"),
    ]:
        assert expected in ops
    page = await client.get("/api/docs")
    assert page.status == 200
    assert "openapi.json" in await page.text()


def _nested(depth: int) -> str:
    return '{"a":' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


@pytest.mark.parametrize("depth", [260, 3000])
async def test_deep_stored_payload_never_breaks_a_listing(
    client: Client, world: World, db: asyncpg.Connection, depth: int
) -> None:
    """A payload nested deeper than pydantic (256) or Python's decoder (~1000) can handle, written
    straight into Postgres (an older version, a migration, a bypassed edge): the company's issue
    list, the issue, and the routine's runs still answer 200, with the payload as stored."""
    from routines_dispatcher.decide import decide_runs

    r = await make_routine(client, world.a)
    run_id = await db.fetchval(
        "INSERT INTO routine_runs (routine_id, company_id, source, payload)"
        " VALUES ($1, $2, 'api', $3::text::jsonb) RETURNING id",
        uuid.UUID(r["id"]),
        uuid.UUID(world.a.company_id),
        _nested(depth),
    )
    async with db.transaction():
        await decide_runs(db, [run_id])
    stored = await db.fetchval("SELECT payload::text FROM routine_runs WHERE id = $1", run_id)
    issue_id = await db.fetchval("SELECT id FROM issues WHERE origin_run_id = $1", run_id)
    headers = {"Authorization": f"Bearer {world.a.board}"}
    for path in (
        f"/api/companies/{world.a.company_id}/issues",
        f"/api/issues/{issue_id}",
        f"/api/routines/{r['id']}/runs",
    ):
        resp = await client.get(path, headers=headers)
        text = await resp.text()
        assert resp.status == 200, (path, text[:300])
        assert stored in text, path


async def test_coalesced_fires_with_large_payloads_keep_the_issue_list_small(
    client: Client, world: World, db: asyncpg.Connection
) -> None:
    """110 coalesced fires of 60 KB each: the active issue keeps references (run, source, time,
    payload size), not copies, so the company's issue list stays small; every payload is still
    readable from its run."""
    from routines_dispatcher.decide import decide_runs

    r = await make_routine(client, world.a)
    first = await call(client, "POST", f"/api/routines/{r['id']}/run", world.a.board, {}, 202)
    async with db.transaction():
        await decide_runs(db, [uuid.UUID(first["id"])])
    big = {"blob": "x" * 60_000}
    fires = [
        await db.fetchval(
            "INSERT INTO routine_runs (routine_id, company_id, source, payload) VALUES ($1, $2, 'webhook', $3)"
            " RETURNING id",
            uuid.UUID(r["id"]),
            uuid.UUID(world.a.company_id),
            {**big, "n": n},
        )
        for n in range(110)
    ]
    for chunk in (fires[:50], fires[50:]):
        async with db.transaction():
            await decide_runs(db, chunk)
    resp = await client.get(
        f"/api/companies/{world.a.company_id}/issues", headers={"Authorization": f"Bearer {world.a.board}"}
    )
    body = await resp.read()
    assert resp.status == 200
    # 100 references of a few hundred bytes each, not 100 payloads of 60 KB (6 MB).
    assert len(body) < 100 * 300 + 4096, len(body)
    (issue,) = await resp.json()
    assert issue["coalescedFireCount"] == 110
    refs = issue["coalescedFires"]
    assert [f["runId"] for f in refs] == [str(f) for f in fires[10:]]
    assert all(f["source"] == "webhook" and f["payloadBytes"] > 60_000 for f in refs)
    run = await call(client, "GET", f"/api/runs/{refs[-1]['runId']}", world.a.agent_key, status=200)
    assert run["payload"] == {**big, "n": 109}
    assert run["payloadBytes"] == refs[-1]["payloadBytes"]
    # Lists leave out payloads over the list limit (the size is still there); runs keep them whole.
    runs = await call(client, "GET", f"/api/routines/{r['id']}/runs?limit=5", world.a.board, status=200)
    assert all(x["payload"] is None and x["payloadBytes"] > 60_000 for x in runs)


async def test_migration_turns_stored_payload_copies_into_references(
    client: Client, world: World, db: asyncpg.Connection
) -> None:
    """Issues written before 0004 hold payload copies in coalescedFires; the migration keeps the
    references and sizes and drops the copies."""
    from shared.migrate import migration_files

    issue = await call(
        client, "POST", f"/api/companies/{world.a.company_id}/issues", world.a.board, {"title": "old"}, 201
    )
    old = [
        {"runId": str(uuid.uuid4()), "source": "webhook", "triggeredAt": "2026-01-01T00:00:00Z", "payload": p}
        for p in ({"k": "v"}, {"blob": "x" * 1000})
    ]
    await db.execute("UPDATE issues SET coalesced_fires = $2 WHERE id = $1", uuid.UUID(issue["id"]), old)
    (sql,) = [text for version, text in migration_files() if version == "0004_coalesced_fire_refs"]
    await db.execute(sql)
    got = await call(client, "GET", f"/api/issues/{issue['id']}", world.a.board, status=200)
    assert got["coalescedFires"] == [
        {k: v for k, v in fire.items() if k != "payload"} | {"payloadBytes": len(json.dumps(fire["payload"]))}
        for fire in old
    ]


async def test_terminated_agent_does_not_regain_its_key_when_reactivated(
    client: Client, world: World
) -> None:
    """Termination revokes the agent's keys permanently; re-activation needs a new key."""
    agent = f"/api/agents/{world.a.other_agent_id}"
    await call(client, "PATCH", agent, world.a.board, {"status": "terminated"}, 200)
    await call(client, "GET", "/api/agents/me", world.a.other_agent_key, status=401)
    await call(client, "PATCH", agent, world.a.board, {"status": "active"}, 200)
    await call(client, "GET", "/api/agents/me", world.a.other_agent_key, status=401)
    await call(client, "PATCH", agent, world.a.board, {"status": "terminated"}, 200)
    await call(client, "POST", f"{agent}/rotate-key", world.a.board, None, 409)
    await call(client, "PATCH", agent, world.a.board, {"status": "active"}, 200)
    fresh = await call(client, "POST", f"{agent}/rotate-key", world.a.board, None, 200)
    assert fresh["agent"]["id"] == world.a.other_agent_id
    me = await call(client, "GET", "/api/agents/me", fresh["apiKey"], status=200)
    assert me["id"] == world.a.other_agent_id


async def test_agent_key_rotation_invalidates_the_old_key_at_once(client: Client, world: World) -> None:
    rotated = await call(
        client, "POST", f"/api/agents/{world.a.agent_id}/rotate-key", world.a.board, None, 200
    )
    assert rotated["apiKey"].startswith("rtk_") and rotated["apiKey"] != world.a.agent_key
    await call(client, "GET", "/api/agents/me", world.a.agent_key, status=401)
    # An agent may rotate its own key (a leaked key); the key it used stops working.
    own = await call(
        client, "POST", f"/api/agents/{world.a.agent_id}/rotate-key", rotated["apiKey"], None, 200
    )
    await call(client, "GET", "/api/agents/me", rotated["apiKey"], status=401)
    await call(client, "GET", "/api/agents/me", own["apiKey"], status=200)
    # ... but not another agent's.
    await call(client, "POST", f"/api/agents/{world.a.other_agent_id}/rotate-key", own["apiKey"], None, 403)


async def test_board_and_instance_tokens_are_listed_without_secrets_and_revoked_at_once(
    client: Client, world: World, database_url: str
) -> None:
    from shared.bootstrap import create_instance_admin_token

    second = await call(
        client,
        "POST",
        f"/api/companies/{world.a.company_id}/board-tokens",
        world.a.board,
        {"name": "ci"},
        201,
    )
    await call(client, "GET", f"/api/companies/{world.a.company_id}/agents", second["token"], status=200)
    resp = await client.get(
        f"/api/companies/{world.a.company_id}/board-tokens",
        headers={"Authorization": f"Bearer {world.a.board}"},
    )
    text = await resp.text()
    assert resp.status == 200
    assert second["token"] not in text and world.a.board not in text
    listed = json.loads(text)
    assert {t["name"] for t in listed} == {"ops", "ci"}
    assert all(set(t) == {"id", "kind", "name", "companyId", "createdAt", "revokedAt"} for t in listed)
    revoked = await call(client, "POST", f"/api/board-tokens/{second['id']}/revoke", world.a.board, None, 200)
    assert revoked["revokedAt"] is not None
    await call(client, "GET", f"/api/companies/{world.a.company_id}/agents", second["token"], status=401)
    again = await call(client, "POST", f"/api/board-tokens/{second['id']}/revoke", world.a.board, None, 200)
    assert again["revokedAt"] == revoked["revokedAt"]
    # Instance tokens: only the instance admin lists and revokes them.
    spare = await create_instance_admin_token(database_url, "spare")
    await call(client, "GET", "/api/companies", spare, status=200)
    tokens = await call(client, "GET", "/api/instance-tokens", world.admin, status=200)
    assert spare not in json.dumps(tokens)
    (spare_id,) = [t["id"] for t in tokens if t["name"] == "spare"]
    await call(client, "POST", f"/api/instance-tokens/{spare_id}/revoke", world.a.board, None, 403)
    await call(client, "POST", f"/api/instance-tokens/{spare_id}/revoke", world.admin, None, 200)
    await call(client, "GET", "/api/companies", spare, status=401)
    # The last working instance token is kept: revoking it would lock everyone out.
    (own_id,) = [t["id"] for t in tokens if t["revokedAt"] is None and t["name"] != "spare"]
    await call(client, "POST", f"/api/instance-tokens/{own_id}/revoke", world.admin, None, 409)
    await call(client, "GET", "/api/companies", world.admin, status=200)
    await call(client, "POST", f"/api/instance-tokens/{uuid.uuid4()}/revoke", world.admin, None, 404)
    # A board token id is not an instance token id, and vice versa.
    await call(client, "POST", f"/api/instance-tokens/{second['id']}/revoke", world.admin, None, 404)
    await call(client, "POST", f"/api/board-tokens/{spare_id}/revoke", world.admin, None, 404)


async def test_slow_request_bodies_do_not_exhaust_the_database_pool(
    stack: Stack, admin_token: str, db: asyncpg.Connection
) -> None:
    """Twelve PATCH bodies dribbled a byte at a time (pool of 3): no handler holds a pooled
    connection while it waits for a body, so another tenant's requests keep succeeding, and the
    slow requests succeed too once their bodies arrive."""
    import asyncio

    entered = 0

    @web.middleware
    async def count_patches(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal entered
        if request.method == "PATCH":
            entered += 1
        return await handler(request)

    app = api_app(stack, db_pool_max=3, db_acquire_timeout_sec=1.0)
    app.middlewares.append(count_patches)
    async with TestClient(TestServer(app)) as client:
        world = World(
            admin_token,
            await make_tenant(client, admin_token, "A"),
            await make_tenant(client, admin_token, "B"),
        )
        assert client.server.port is not None
        body = b'{"status": "active"}'
        done = asyncio.Event()

        async def slow_patch() -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
            writer.write(
                f"PATCH /api/agents/{world.a.other_agent_id} HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {world.a.board}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body[:1]
            )
            await writer.drain()
            sent = 1
            while not done.is_set() and sent < len(body) - 1:
                await asyncio.sleep(0.2)
                writer.write(body[sent : sent + 1])
                await writer.drain()
                sent += 1
            await done.wait()
            writer.write(body[sent:])
            await writer.drain()
            answer = await reader.read(65536)
            writer.close()
            return answer

        slow = [asyncio.create_task(slow_patch()) for _ in range(12)]
        await wait_until(lambda: asyncio.sleep(0, entered == 12))
        try:
            for _ in range(10):
                await call(
                    client, "GET", f"/api/companies/{world.b.company_id}/agents", world.b.board, status=200
                )
                await call(
                    client,
                    "PATCH",
                    f"/api/agents/{world.b.agent_id}",
                    world.b.board,
                    {"status": "active"},
                    200,
                )
            assert not any(task.done() for task in slow)  # the bodies were still arriving
        finally:
            done.set()
        answers = await asyncio.gather(*slow)
        assert all(a.startswith(b"HTTP/1.1 200") for a in answers), [a[:40] for a in answers]


async def test_a_busy_pool_is_database_busy_not_database_down(stack: Stack) -> None:
    """Every pooled connection in use is load, not an outage: the 503 says "busy"."""
    from shared.db import Database
    from shared.errors import ServiceUnavailable
    from shared.settings import ApiSettings

    settings = ApiSettings(
        database_url=stack.database_url,
        secret_key=stack.secret_key,
        db_pool_max=1,
        db_acquire_timeout_sec=0.2,
    )
    database = Database(settings, "test")
    await database.open()
    try:
        async with database.connection():
            with pytest.raises(ServiceUnavailable) as busy:
                async with database.connection():
                    pass
        assert busy.value.message == "database busy, retry later"
    finally:
        await database.close()


async def test_request_bodies_are_validated_strictly(client: Client, world: World) -> None:
    """No lax coercion: "300" is not 300, "false" and 0 are not false, 300.0 is not 300."""
    r = await make_routine(client, world.a)
    triggers = f"/api/routines/{r['id']}/triggers"
    for body in (
        {"kind": "webhook", "replayWindowSec": "300"},
        {"kind": "webhook", "replayWindowSec": 300.0},
        {"kind": "api", "enabled": "false"},
        {"kind": "api", "enabled": 0},
        {"kind": "api", "label": 5},
    ):
        err = await call(client, "POST", triggers, world.a.board, body, 400)
        assert err["details"], body
    t = await call(client, "POST", triggers, world.a.board, {"kind": "api"}, 201)
    await call(client, "PATCH", f"/api/routine-triggers/{t['id']}", world.a.board, {"enabled": "false"}, 400)
    await call(client, "PATCH", f"/api/routine-triggers/{t['id']}", world.a.board, {"enabled": 1}, 400)
    await call(
        client, "POST", "/api/cron/preview", world.a.board, {"cronExpression": "@daily", "count": "5"}, 400
    )
    await call(client, "PATCH", f"/api/routines/{r['id']}", world.a.board, {"title": ["x"]}, 400)
    # Strings that *are* the type's JSON form still work: UUIDs and timestamps.
    await call(client, "POST", f"/api/routines/{r['id']}/run", world.a.board, {"triggerId": t["id"]}, 202)
    await call(
        client,
        "POST",
        "/api/cron/preview",
        world.a.board,
        {"cronExpression": "@daily", "after": "2027-01-01T00:00:00Z"},
        200,
    )
    detail = await call(client, "GET", f"/api/routines/{r['id']}", world.a.board, status=200)
    assert [x["enabled"] for x in detail["triggers"]] == [True]


async def test_manual_run_with_a_non_finite_number_is_400(client: Client, world: World) -> None:
    r = await make_routine(client, world.a)
    for raw in (b'{"payload": {"x": 1e400}}', b'{"payload": {"x": -1e400}}', b'{"payload": {"x": NaN}}'):
        resp = await client.post(
            f"/api/routines/{r['id']}/run",
            data=raw,
            headers={"Authorization": f"Bearer {world.a.board}", "Content-Type": "application/json"},
        )
        assert resp.status == 400, raw
        assert set(await resp.json()) == {"error", "details"}
    assert await call(client, "GET", f"/api/routines/{r['id']}/runs", world.a.board, status=200) == []


async def _raw_http(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, body


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /api/companies HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer rtb_TOPSECRET\x01\r\n\r\n",
        b"GET /api/companies HTTP/1.1\r\nHost: x\r\nX-Bad Header: rtb_TOPSECRET\r\n\r\n",
        b"GET /api/companies rtb_TOPSECRET\r\n\r\n",
        b"\x16\x03\x01rtb_TOPSECRET\r\n\r\n",
    ],
    ids=["control-char-in-header", "space-in-header-name", "bad-request-line", "tls-on-http-port"],
)
async def test_http_parser_errors_answer_json_without_echoing_the_request(
    client: Client, request_bytes: bytes
) -> None:
    """Requests aiohttp's own parser rejects get the JSON error shape, never the offending bytes
    (credentials included) echoed back, and no Python/aiohttp banner."""
    assert client.server.port is not None
    status, headers, body = await _raw_http(client.server.port, request_bytes)
    assert status.split()[1] == "400", status
    assert headers["content-type"].startswith("application/json")
    assert set(json.loads(body)) == {"error", "details"}
    assert b"TOPSECRET" not in body
    assert "python" not in headers.get("server", "").lower()


async def test_no_server_banner(client: Client, world: World) -> None:
    for path in ("/api/companies", "/livez", "/healthz", "/nope"):
        resp = await client.get(path, headers={"Authorization": f"Bearer {world.a.board}"})
        server = resp.headers.get("Server", "")
        assert "aiohttp" not in server and "Python" not in server, (path, server)


async def test_per_company_quotas(stack: Stack, admin_token: str) -> None:
    """Configurable quotas bound what one company can create (422 naming the quota); archived
    routines and revoked tokens do not count; another company is unaffected."""
    app = api_app(
        stack,
        quota_routines_per_company=2,
        quota_triggers_per_routine=2,
        quota_webhook_triggers_per_company=3,
        quota_agents_per_company=3,
        quota_board_tokens_per_company=2,
        quota_projects_per_company=2,
        quota_goals_per_company=1,
    )
    async with TestClient(TestServer(app)) as client:
        a = await make_tenant(client, admin_token, "A")
        b = await make_tenant(client, admin_token, "B")
        cid = a.company_id
        r1 = await make_routine(client, a)
        r2 = await make_routine(client, a)
        body = {"title": "t", "assigneeAgentId": a.agent_id, "projectId": a.project_id}
        err = await call(client, "POST", f"/api/companies/{cid}/routines", a.board, body, 422)
        assert "quota" in err["error"] and err["details"] == {"quota": "routinesPerCompany", "limit": 2}
        await make_routine(client, b)  # per company
        await call(client, "PATCH", f"/api/routines/{r1['id']}", a.board, {"status": "archived"}, 200)
        r3 = await make_routine(client, a)
        triggers = f"/api/routines/{r3['id']}/triggers"
        await call(client, "POST", triggers, a.board, {"kind": "webhook"}, 201)
        await call(client, "POST", triggers, a.board, {"kind": "webhook"}, 201)
        err = await call(client, "POST", triggers, a.board, {"kind": "api"}, 422)
        assert err["details"] == {"quota": "triggersPerRoutine", "limit": 2}
        other = f"/api/routines/{r2['id']}/triggers"
        await call(client, "POST", other, a.board, {"kind": "webhook"}, 201)
        err = await call(client, "POST", other, a.board, {"kind": "webhook"}, 422)
        assert err["details"] == {"quota": "webhookTriggersPerCompany", "limit": 3}
        await call(client, "POST", other, a.board, {"kind": "api"}, 201)
        # Agents (two made by make_tenant), board tokens, projects, goals.
        await call(client, "POST", f"/api/companies/{cid}/agents", a.board, {"name": "3"}, 201)
        err = await call(client, "POST", f"/api/companies/{cid}/agents", a.board, {"name": "4"}, 422)
        assert err["details"] == {"quota": "agentsPerCompany", "limit": 3}
        extra = await call(client, "POST", f"/api/companies/{cid}/board-tokens", a.board, {"name": "2"}, 201)
        err = await call(client, "POST", f"/api/companies/{cid}/board-tokens", a.board, {"name": "3"}, 422)
        assert err["details"] == {"quota": "boardTokensPerCompany", "limit": 2}
        await call(client, "POST", f"/api/board-tokens/{extra['id']}/revoke", a.board, None, 200)
        await call(client, "POST", f"/api/companies/{cid}/board-tokens", a.board, {"name": "3"}, 201)
        await call(client, "POST", f"/api/companies/{cid}/projects", a.board, {"name": "p2"}, 201)
        await call(client, "POST", f"/api/companies/{cid}/projects", a.board, {"name": "p3"}, 422)
        await call(client, "POST", f"/api/companies/{cid}/goals", a.board, {"title": "g1"}, 201)
        await call(client, "POST", f"/api/companies/{cid}/goals", a.board, {"title": "g2"}, 422)
        await call(client, "POST", f"/api/companies/{b.company_id}/goals", b.board, {"title": "g1"}, 201)


async def test_quota_holds_under_concurrent_creates(stack: Stack, admin_token: str) -> None:
    """Twenty simultaneous creates against a quota of 5: exactly 5 succeed (the count and the
    insert are serialised per company)."""
    import asyncio

    async with TestClient(TestServer(api_app(stack, quota_goals_per_company=5))) as client:
        a = await make_tenant(client, admin_token, "A")
        answers = await asyncio.gather(
            *(
                client.post(
                    f"/api/companies/{a.company_id}/goals",
                    json={"title": f"g{n}"},
                    headers={"Authorization": f"Bearer {a.board}"},
                )
                for n in range(20)
            )
        )
        assert sorted(r.status for r in answers) == [201] * 5 + [422] * 15


def _hostile_bodies() -> list[tuple[str, bytes]]:
    """JSON (and not-quite-JSON) that has broken parsers and encoders elsewhere."""

    def deep(n: int) -> bytes:
        return b'{"payload": {"a": ' + b"[" * n + b"]" * n + b"}}"

    return [
        ("depth 63", deep(61)),
        ("depth 65", deep(63)),
        ("depth 5000", deep(5000)),
        ("1e400", b'{"payload": {"x": 1e400}, "title": "t"}'),
        ("-1e400", b'{"payload": {"x": -1e400}}'),
        ("NaN", b'{"payload": {"x": NaN}}'),
        ("Infinity", b'{"count": Infinity}'),
        ("5000-digit int", b'{"count": ' + b"9" * 5000 + b"}"),
        ("big int", b'{"count": 99999999999999999999999999}'),
        ("duplicate keys", b'{"title": "a", "title": "b"}'),
        ("lone surrogate", b'{"title": "\\ud800"}'),
        ("NUL", b'{"title": "a\\u0000b"}'),
        ("invalid utf-8", b'{"title": "\xff\xfe"}'),
        ("utf-16", '{"title": "t"}'.encode("utf-16")),
        ("BOM", b'\xef\xbb\xbf{"title": "t"}'),
        ("null", b"null"),
        ("array", b"[]"),
        ("string", b'"x"'),
        ("truncated", b'{"title": "t"'),
        ("string for int", b'{"count": "5", "replayWindowSec": "300", "graceSec": "1"}'),
        ("string for bool", b'{"enabled": "false", "kind": "api"}'),
        ("overlong string", b'{"title": "' + b"x" * 100_000 + b'"}'),
        ("unicode", '{"title": "\u202e\U0001f600\u0301", "name": "\u00e9"}'.encode()),
    ]


async def test_hostile_json_bodies_never_get_a_5xx(
    client: Client, world: World, db: asyncpg.Connection
) -> None:
    """Every body-taking endpoint, every hostile body: a 4xx in the JSON error shape or a success,
    never a 5xx; and nothing stored holds a non-finite number or nesting past the cap."""
    r = await make_routine(client, world.a)
    t = await call(
        client, "POST", f"/api/routines/{r['id']}/triggers", world.a.board, {"kind": "webhook"}, 201
    )
    endpoints = [
        ("POST", f"/api/companies/{world.a.company_id}/routines"),
        ("PATCH", f"/api/routines/{r['id']}"),
        ("POST", f"/api/routines/{r['id']}/triggers"),
        ("PATCH", f"/api/routine-triggers/{t['id']}"),
        ("POST", f"/api/routine-triggers/{t['id']}/rotate-secret"),
        ("POST", f"/api/routines/{r['id']}/run"),
        ("POST", f"/api/companies/{world.a.company_id}/issues"),
        ("PATCH", f"/api/agents/{world.a.other_agent_id}"),
        ("POST", f"/api/companies/{world.a.company_id}/goals"),
        ("POST", "/api/cron/preview"),
    ]
    failures: list[tuple[str, str, str, int | str]] = []
    for method, path in endpoints:
        for name, raw in _hostile_bodies():
            resp = await client.request(
                method,
                path,
                data=raw,
                headers={"Authorization": f"Bearer {world.a.board}", "Content-Type": "application/json"},
            )
            if resp.status >= 500:
                failures.append((method, path, name, resp.status))
            elif resp.status >= 400 and set(await resp.json()) != {"error", "details"}:
                failures.append((method, path, name, "not the error shape"))
    assert not failures, failures
    assert not await db.fetchval(
        "SELECT count(*) FROM routine_runs WHERE payload::text ~* 'infinity|nan' OR jsonb_typeof(payload) <> 'object'"
    )


@pytest.mark.parametrize("how", ["pause and resume the routine", "disable and enable the trigger"])
async def test_resuming_recomputes_next_run_from_now_not_from_the_past(
    client: Client, world: World, db: asyncpg.Connection, how: str
) -> None:
    """A trigger that last ran (and was due) a day ago is paused for real and resumed: its next
    run is the next minute after *now*, not a slot from the past (which would burst catch-up)."""
    r = await make_routine(client, world.a)
    t = await call(
        client,
        "POST",
        f"/api/routines/{r['id']}/triggers",
        world.a.board,
        {"kind": "schedule", "cronExpression": "* * * * *", "timezone": "UTC"},
        201,
    )
    await db.execute(
        "UPDATE routine_triggers SET next_run_at = now() - interval '1 day',"
        " last_fired_at = now() - interval '1 day' - interval '1 minute' WHERE id = $1",
        uuid.UUID(t["id"]),
    )
    off: tuple[str, dict[str, object]]
    on: tuple[str, dict[str, object]]
    if how.startswith("pause"):
        off, on = (
            (f"/api/routines/{r['id']}", {"status": "paused"}),
            (f"/api/routines/{r['id']}", {"status": "active"}),
        )
    else:
        path = f"/api/routine-triggers/{t['id']}"
        off, on = (path, {"enabled": False}), (path, {"enabled": True})
    await call(client, "PATCH", off[0], world.a.board, off[1], 200)
    assert (
        await db.fetchval("SELECT next_run_at FROM routine_triggers WHERE id = $1", uuid.UUID(t["id"]))
        is None
    )
    before = await db.fetchval("SELECT now()")
    await call(client, "PATCH", on[0], world.a.board, on[1], 200)
    after = await db.fetchval("SELECT now()")
    next_at = await db.fetchval("SELECT next_run_at FROM routine_triggers WHERE id = $1", uuid.UUID(t["id"]))
    assert before < next_at <= after + timedelta(minutes=1)
    assert next_at.second == 0 and next_at.microsecond == 0


async def test_execution_issue_carries_every_field_of_its_routine(
    client: Client, world: World, db: asyncpg.Connection
) -> None:
    """Title, description, priority, project, goal, parent issue and assignee come from the routine;
    status todo; origin routine_execution with the routine and run ids; the run's payload."""
    from routines_dispatcher.decide import decide_runs

    a = world.a
    goal = await call(client, "POST", f"/api/companies/{a.company_id}/goals", a.board, {"title": "G"}, 201)
    parent = await call(client, "POST", f"/api/companies/{a.company_id}/issues", a.board, {"title": "P"}, 201)
    r = await make_routine(
        client,
        a,
        title="Weekly review",
        description="look at everything",
        priority="high",
        goalId=goal["id"],
        parentIssueId=parent["id"],
    )
    run = await call(client, "POST", f"/api/routines/{r['id']}/run", a.board, {"payload": {"week": 48}}, 202)
    async with db.transaction():
        await decide_runs(db, [uuid.UUID(run["id"])])
    run = await call(client, "GET", f"/api/runs/{run['id']}", a.board, status=200)
    issue = await call(client, "GET", f"/api/issues/{run['linkedIssueId']}", a.agent_key, status=200)
    expected = {
        "title": "Weekly review",
        "description": "look at everything",
        "priority": "high",
        "status": "todo",
        "projectId": a.project_id,
        "goalId": goal["id"],
        "parentIssueId": parent["id"],
        "assigneeAgentId": a.agent_id,
        "companyId": a.company_id,
        "originKind": "routine_execution",
        "originId": r["id"],
        "originRunId": run["id"],
        "payload": {"week": 48},
        "coalescedFireCount": 0,
        "coalescedFires": [],
    }
    assert {k: issue[k] for k in expected} == expected
