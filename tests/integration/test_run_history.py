"""Run history you can reach: one run by id, keyset pages with filters, replays through the policy."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from routines_dispatcher.worker import Dispatcher
from shared.vocabulary import RUN_SOURCES, RUN_STATUSES
from tests.integration import api_client
from tests.integration.api_client import Client, World, call, make_routine
from tests.integration.features_support import api_settings, decided, dispatcher, get_json

__all__ = ["api_settings", "dispatcher"]


async def _insert_runs(db: asyncpg.Connection, routine_id: str, company_id: str, n: int) -> list[uuid.UUID]:
    """n runs one second apart (newest last), alternating status and source."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    ids = []
    for i in range(n):
        ids.append(
            await db.fetchval(
                "INSERT INTO routine_runs (routine_id, company_id, source, status, triggered_at)"
                " VALUES ($1::uuid, $2::uuid, $3, $4, $5) RETURNING id",
                routine_id,
                company_id,
                "webhook" if i % 2 else "api",
                "failed" if i % 3 == 0 else "skipped",
                base + timedelta(seconds=i),
            )
        )
    return ids


async def test_cursor_pages_reach_every_run_newest_first(
    client: Client, world: World, db: asyncpg.Connection
) -> None:
    r = await make_routine(client, world.a)
    ids = await _insert_runs(db, r["id"], world.a.company_id, 23)
    # Two runs at the same instant: the cursor must not lose or repeat either.
    same = datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC)
    await db.execute("UPDATE routine_runs SET triggered_at = $2 WHERE id = $1", ids[11], same)
    seen: list[str] = []
    path = f"/api/routines/{r['id']}/runs?limit=5"
    pages = 0
    while True:
        body, headers = await get_json(client, path, world.a.board)
        seen += [run["id"] for run in body]
        pages += 1
        if "X-Next-Cursor" not in headers:
            break
        path = f"/api/routines/{r['id']}/runs?limit=5&cursor={headers['X-Next-Cursor']}"
    assert pages == 5
    assert sorted(seen) == sorted(str(i) for i in ids)
    assert len(seen) == len(set(seen))
    rows = {
        str(row["id"]): row["triggered_at"]
        for row in await db.fetch("SELECT id, triggered_at FROM routine_runs")
    }
    assert [rows[s] for s in seen] == sorted((rows[s] for s in seen), reverse=True)


async def test_run_filters(client: Client, world: World, db: asyncpg.Connection) -> None:
    r = await make_routine(client, world.a)
    await _insert_runs(db, r["id"], world.a.company_id, 12)
    base = f"/api/routines/{r['id']}/runs?limit=500"
    failed, _ = await get_json(client, base + "&status=failed", world.a.board)
    assert len(failed) == 4 and {x["status"] for x in failed} == {"failed"}
    hooks, _ = await get_json(client, base + "&source=webhook", world.a.board)
    assert len(hooks) == 6 and {x["source"] for x in hooks} == {"webhook"}
    window, _ = await get_json(
        client, base + "&from=2026-01-01T00:00:03Z&to=2026-01-01T00:00:07%2B00:00", world.a.board
    )
    assert sorted(x["triggeredAt"] for x in window) == [f"2026-01-01T00:00:0{i}Z" for i in range(3, 7)]
    both, _ = await get_json(client, base + "&status=failed&source=webhook", world.a.board)
    assert {(x["status"], x["source"]) for x in both} == {("failed", "webhook")}
    t = await api_client.make_trigger(client, world.a, r["id"], {"kind": "api"})
    run = await api_client.run_routine(client, world.a, r["id"], {"triggerId": t["id"]})
    by_trigger, _ = await get_json(client, base + f"&triggerId={t['id']}", world.a.board)
    assert [x["id"] for x in by_trigger] == [run["id"]]


async def test_bad_history_queries_are_400(client: Client, world: World) -> None:
    r = await make_routine(client, world.a)
    for query in (
        "cursor=nonsense",
        "cursor=" + "A" * 40,
        "status=done",
        "source=cron",
        "triggerId=12",
        "from=yesterday",
        "to=2026-13-01",
        "limit=501",
    ):
        body, _ = await get_json(client, f"/api/routines/{r['id']}/runs?{query}", world.a.board, 400)
        assert set(body) == {"error", "details"}


async def test_get_one_run_and_tenancy(client: Client, world: World) -> None:
    r = await make_routine(client, world.a)
    run = await call(
        client, "POST", f"/api/routines/{r['id']}/run", world.a.board, {"payload": {"k": 1}}, 202
    )
    got = await call(client, "GET", f"/api/runs/{run['id']}", world.a.other_agent_key, status=200)
    assert (got["id"], got["payload"], got["replayOf"]) == (run["id"], {"k": 1}, None)
    await call(client, "GET", f"/api/runs/{run['id']}", world.b.board, status=404)
    await call(client, "GET", f"/api/runs/{uuid.uuid4()}", world.a.board, status=404)
    await call(client, "GET", "/api/runs/not-a-uuid", world.a.board, status=404)


async def test_replay_goes_through_the_policy(
    client: Client, world: World, db: asyncpg.Connection, dispatcher: Dispatcher
) -> None:
    r = await make_routine(client, world.a, concurrencyPolicy="skip_if_active")
    first = await call(
        client, "POST", f"/api/routines/{r['id']}/run", world.a.board, {"payload": {"a": 1}}, 202
    )
    first = await decided(db, first["id"])
    assert first["status"] == "issue_created"
    # While the first issue is open, a replay is skipped like any other fire.
    skipped = await call(client, "POST", f"/api/runs/{first['id']}/replay", world.a.agent_key, {}, 202)
    row = await decided(db, skipped["id"])
    assert (row["status"], row["source"], row["replay_of"], row["payload"]) == (
        "skipped",
        "replay",
        first["id"],
        {"a": 1},
    )
    await call(
        client,
        "PATCH",
        f"/api/issues/{first['linked_issue_id']}",
        world.a.board,
        {"status": "cancelled"},
        200,
    )
    assert (await call(client, "GET", f"/api/runs/{first['id']}", world.a.board, status=200))[
        "status"
    ] == "failed"
    # After the failure, a replay of the skipped one with a new payload creates an issue carrying it.
    again = await call(
        client, "POST", f"/api/runs/{skipped['id']}/replay", world.a.board, {"payload": {"a": 2}}, 202
    )
    row = await decided(db, again["id"])
    assert (row["status"], row["replay_of"]) == ("issue_created", uuid.UUID(skipped["id"]))
    issue = await call(client, "GET", f"/api/issues/{row['linked_issue_id']}", world.a.board, status=200)
    assert issue["payload"] == {"a": 2}
    got = await call(client, "GET", f"/api/runs/{again['id']}", world.a.board, status=200)
    assert (got["source"], got["replayOf"]) == ("replay", skipped["id"])


async def test_replay_rules(client: Client, world: World) -> None:
    r = await make_routine(client, world.a)
    run = await api_client.run_routine(client, world.a, r["id"], {})
    await call(client, "POST", f"/api/runs/{run['id']}/replay", world.a.other_agent_key, {}, 403)
    await call(client, "POST", f"/api/runs/{run['id']}/replay", world.b.board, {}, 404)
    await call(client, "POST", f"/api/runs/{run['id']}/replay", world.a.board, {"payload": [1]}, 400)
    await call(client, "POST", f"/api/runs/{run['id']}/replay", world.a.board, {"bogus": 1}, 400)
    await api_client.patch_routine(client, world.a, r["id"], {"status": "archived"})
    await call(client, "POST", f"/api/runs/{run['id']}/replay", world.a.board, {}, 409)


async def test_run_sources_and_statuses_match_the_schema(db: asyncpg.Connection) -> None:
    """The API's vocabulary (replay and backfill included) is what the CHECK constraints allow."""
    checks = {
        r["conname"]: r["def"]
        for r in await db.fetch(
            "SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint"
            " WHERE conrelid = 'routine_runs'::regclass AND contype = 'c'"
        )
    }
    for name, values in (
        ("routine_runs_source_check", RUN_SOURCES),
        ("routine_runs_status_check", RUN_STATUSES),
    ):
        allowed = set(re.findall(r"'([a-z_]+)'::text", checks[name]))
        assert allowed == set(values), name
