"""The API against real Postgres and NATS: every endpoint, validation rule and error status."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from shared.http import Handler
from tests.integration import api_client
from tests.integration.api_client import Client, World, api_app, call, make_routine, make_tenant
from tests.support import Stack, served, wait_until


@pytest.fixture
def api_settings() -> dict[str, Any]:
    """Manual runs wait briefly for their decision here."""
    return {"manual_run_wait_sec": 0.2}


async def test_a_new_routine_has_a_trimmed_title_and_the_default_policies(
    client: Client, world: World
) -> None:
    r = await make_routine(client, world.a, title="  Weekly CEO briefing  ", description="status")
    assert r["title"] == "Weekly CEO briefing"
    assert (r["priority"], r["status"], r["concurrencyPolicy"], r["catchUpPolicy"]) == (
        "medium",
        "active",
        "coalesce_if_active",
        "skip_missed",
    )


async def test_a_new_routine_has_no_triggers(client: Client, world: World) -> None:
    r = await make_routine(client, world.a)
    assert (await api_client.routine_detail(client, world.a, r["id"]))["triggers"] == []


@pytest.mark.parametrize(
    ("query", "listed"),
    [("status=active", True), ("status=paused", False), ("assigneeAgentId={other_agent_id}", False)],
    ids=["active", "paused", "other-assignee"],
)
async def test_the_routine_list_filters_by_status_and_assignee(
    client: Client, world: World, query: str, listed: bool
) -> None:
    r = await make_routine(client, world.a)
    found = await call(
        client,
        "GET",
        f"/api/companies/{world.a.company_id}/routines?{query.format(other_agent_id=world.a.other_agent_id)}",
        world.a.board,
        status=200,
    )
    assert [x["id"] for x in found] == ([r["id"]] if listed else [])


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
    await api_client.patch_routine(client, world.a, r["id"], {"status": "paused"})
    await api_client.patch_routine(client, world.a, r["id"], {"status": "archived"})
    for status in ("active", "paused", "archived"):
        await api_client.patch_routine(client, world.a, r["id"], {"status": status}, 409)
    await api_client.run_routine(client, world.a, r["id"], {}, 409)


async def test_cron_preview_shows_local_time_and_a_dst_shift(client: Client, world: World) -> None:
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


async def test_cron_preview_shows_five_fires_by_default(client: Client, world: World) -> None:
    default = await call(
        client, "POST", "/api/cron/preview", world.a.agent_key, {"cronExpression": "@hourly"}, 200
    )
    assert len(default["fires"]) == 5


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"cronExpression": "* * *"}, 422),
        ({"cronExpression": "* * * * *", "timezone": "Nope/Nope"}, 422),
        ({"cronExpression": "* * * * *", "count": 101}, 400),
    ],
    ids=["short-expression", "unknown-timezone", "too-many-fires"],
)
async def test_invalid_cron_previews_are_refused(
    client: Client, world: World, body: dict[str, Any], status: int
) -> None:
    await call(client, "POST", "/api/cron/preview", world.a.agent_key, body, status)


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


@pytest.mark.parametrize("first_decision", [50, 110])
async def test_coalesced_fires_with_large_payloads_keep_the_issue_list_small(
    client: Client, world: World, db: asyncpg.Connection, first_decision: int
) -> None:
    """110 coalesced fires of 60 KB each, decided `first_decision` then the rest: the active issue
    keeps references (run, source, time, payload size) to the latest 100, not copies, so the
    company's issue list stays small; every payload is still readable from its run."""
    from routines_dispatcher.decide import decide_runs

    r = await make_routine(client, world.a)
    first = await api_client.run_routine(client, world.a, r["id"], {})
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
    for chunk in (fires[:first_decision], fires[first_decision:]):
        if not chunk:
            continue
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


async def test_fire_references_say_what_the_runs_say(
    client: Client, world: World, db: asyncpg.Connection
) -> None:
    """Two routines' fires coalesced in one transaction: each issue references its own fires, in
    the order they were decided, and each reference's time and payload size are the run's own as
    the API shows it — with microseconds and without (a time on the second)."""
    from routines_dispatcher.decide import decide_runs

    routines = [await make_routine(client, world.a) for _ in range(2)]
    firsts = [await api_client.run_routine(client, world.a, r["id"], {}) for r in routines]
    async with db.transaction():
        await decide_runs(db, [uuid.UUID(f["id"]) for f in firsts])
    firsts = [
        await call(client, "GET", f"/api/runs/{f['id']}", world.a.agent_key, status=200) for f in firsts
    ]
    times = ["2026-03-29 00:59:59.000001+00", "2026-03-29 01:00:00+00", "2026-03-29 01:00:00.5+00"]
    fires: dict[str, list[uuid.UUID]] = {r["id"]: [] for r in routines}
    for n, at in enumerate(times * 2):
        routine = routines[n % 2]["id"]
        fires[routine].append(
            await db.fetchval(
                "INSERT INTO routine_runs (routine_id, company_id, source, payload, triggered_at)"
                " VALUES ($1, $2, 'webhook', $3, $4::text::timestamptz) RETURNING id",
                uuid.UUID(routine),
                uuid.UUID(world.a.company_id),
                {"n": n, "text": "é" * n},
                at,
            )
        )
    async with db.transaction():
        await decide_runs(db, [run_id for ids in fires.values() for run_id in ids])
    for routine, first in zip(routines, firsts, strict=True):
        runs = [
            await call(client, "GET", f"/api/runs/{i}", world.a.agent_key, status=200)
            for i in fires[routine["id"]]
        ]
        assert all(
            (x["status"], x["linkedIssueId"], x["coalescedIntoRunId"])
            == ("coalesced", first["linkedIssueId"], first["id"])
            for x in runs
        ), runs
        issue = await call(
            client, "GET", f"/api/issues/{first['linkedIssueId']}", world.a.agent_key, status=200
        )
        expected = sorted(runs, key=lambda x: (datetime.fromisoformat(x["triggeredAt"]), x["id"]))
        assert issue["coalescedFires"] == [
            {
                "runId": x["id"],
                "source": "webhook",
                "triggeredAt": x["triggeredAt"],
                "payloadBytes": x["payloadBytes"],
            }
            for x in expected
        ]
        assert issue["coalescedFireCount"] == 3
        assert {x["triggeredAt"][11:] for x in runs} == {"00:59:59.000001Z", "01:00:00Z", "01:00:00.500000Z"}


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
    async with TestClient(served(app)) as client:
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
    await api_client.patch_trigger(client, world.a, t["id"], {"enabled": "false"}, 400)
    await api_client.patch_trigger(client, world.a, t["id"], {"enabled": 1}, 400)
    await call(
        client, "POST", "/api/cron/preview", world.a.board, {"cronExpression": "@daily", "count": "5"}, 400
    )
    await api_client.patch_routine(client, world.a, r["id"], {"title": ["x"]}, 400)
    # Strings that *are* the type's JSON form still work: UUIDs and timestamps.
    await api_client.run_routine(client, world.a, r["id"], {"triggerId": t["id"]})
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
    t = await api_client.make_trigger(client, world.a, r["id"], {"kind": "webhook"})
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
