"""Exact answers of the contract (seed and DESIGN), each field compared with its source:
the execution issue against its routine and run, the run history's default, order and bounds,
and `nextRunAt` recomputed from *now* on resume and on re-enabling a trigger."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import asyncpg

from routines_dispatcher.worker import Dispatcher
from tests.integration import api_client
from tests.integration.api_client import Client, World, call, make_routine
from tests.integration.features_support import api_settings, dispatcher
from tests.support import wait_until

__all__ = ["api_settings", "dispatcher"]


async def test_execution_issue_takes_every_field_from_its_routine_and_run(
    client: Client, world: World, dispatcher: Dispatcher, db: asyncpg.Connection
) -> None:
    a = world.a
    # Every field differs from its default, so a field taken from anywhere else shows.
    routine, goal, parent = await api_client.make_routine_under_goal_and_parent(
        client,
        a,
        "Grow",
        "Epic",
        title="Weekly CEO briefing",
        description="Summarise the week:\n- sales\n- hiring",
        priority="critical",
        concurrencyPolicy="always_enqueue",
    )
    payload = {"context": "quarter close", "n": [1, 2.5, None, True], "nested": {"ü": "✓"}}
    run = await api_client.run_routine(client, a, routine["id"], {"payload": payload})

    async def decided() -> dict[str, object] | None:
        runs = await call(client, "GET", f"/api/routines/{routine['id']}/runs", a.board, status=200)
        found = next(r for r in runs if r["id"] == run["id"])
        return found if found["linkedIssueId"] else None

    decided_run = await wait_until(decided)
    assert decided_run["status"] == "issue_created"
    issue = await call(client, "GET", f"/api/issues/{decided_run['linkedIssueId']}", a.board, status=200)
    assert {k: issue[k] for k in issue if k not in ("id", "createdAt", "updatedAt")} == {
        "companyId": a.company_id,
        "title": "Weekly CEO briefing",
        "description": "Summarise the week:\n- sales\n- hiring",
        "status": "todo",
        "priority": "critical",
        "projectId": a.project_id,
        "goalId": goal["id"],
        "parentIssueId": parent["id"],
        "assigneeAgentId": a.agent_id,
        "originKind": "routine_execution",
        "originId": routine["id"],
        "originRunId": run["id"],
        "payload": payload,
        "payloadBytes": await db.fetchval(
            "SELECT octet_length(payload::text) FROM issues WHERE id = $1::uuid", issue["id"]
        ),
        "coalescedFireCount": 0,
        "coalescedFires": [],
    }
    # The agent finds it among its open issues.
    mine = await call(
        client, "GET", f"/api/companies/{a.company_id}/issues?status=todo", a.agent_key, status=200
    )
    assert [i["id"] for i in mine if i["originId"] == routine["id"]] == [issue["id"]]


async def test_run_history_default_fifty_newest_first_and_bounded(
    client: Client, world: World, db: asyncpg.Connection
) -> None:
    routine = await make_routine(client, world.a)
    other = await make_routine(client, world.a)  # its runs never show in the first's history
    base = await db.fetchval("SELECT date_trunc('second', now()) - interval '1 hour'")
    # 70 runs; groups of five share an instant, so the tie-break (id) is exercised too.
    rows = await db.fetch(
        "INSERT INTO routine_runs (routine_id, company_id, source, triggered_at)"
        " SELECT $1, $2, 'api', $3::timestamptz + (g / 5) * interval '1 second' FROM generate_series(0, 69) g"
        " RETURNING id, triggered_at",
        uuid.UUID(routine["id"]),
        uuid.UUID(world.a.company_id),
        base,
    )
    await db.execute(
        "INSERT INTO routine_runs (routine_id, company_id, source, triggered_at)"
        " SELECT $1, $2, 'api', $3 FROM generate_series(1, 5)",
        uuid.UUID(other["id"]),
        uuid.UUID(world.a.company_id),
        base + timedelta(hours=2),
    )
    instant = {str(r["id"]): r["triggered_at"] for r in rows}
    newest = sorted(instant.values(), reverse=True)
    path = f"/api/routines/{routine['id']}/runs"

    async def page(query: str = "") -> tuple[list[str], str | None]:
        resp = await client.get(path + query, headers={"Authorization": f"Bearer {world.a.board}"})
        assert resp.status == 200, await resp.text()
        return [r["id"] for r in await resp.json()], resp.headers.get("X-Next-Cursor")

    everything, cursor = await page("?limit=500")
    assert cursor is None
    assert sorted(everything) == sorted(instant)  # all 70, only this routine's
    assert [instant[i] for i in everything] == newest  # newest first
    default, _ = await page()
    assert default == everything[:50]  # 50 by default (a group boundary: the set is exact)
    assert (await page("?limit=1"))[0] == everything[:1]
    # Pages of 7 (boundaries inside groups of equal instants) walk the same order, none twice.
    walked: list[str] = []
    query = "?limit=7"
    while True:
        ids, cursor = await page(query)
        assert 0 < len(ids) <= 7
        walked += ids
        if cursor is None:
            break
        query = f"?limit=7&cursor={cursor}"
    assert walked == everything
    for bad in ("0", "-1", "501", "ten", "1.5"):
        error = await call(client, "GET", f"{path}?limit={bad}", world.a.board, status=400)
        assert "limit" in error["error"]


def _next_hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


async def test_resume_and_reenable_recompute_next_run_from_now(
    client: Client, world: World, db: asyncpg.Connection
) -> None:
    routine = await make_routine(client, world.a)
    trigger = await api_client.make_trigger(
        client, world.a, routine["id"], {"kind": "schedule", "cronExpression": "0 * * * *", "timezone": "UTC"}
    )
    stale = datetime.fromisoformat("2020-01-06T09:00:00+00:00")

    async def next_run() -> tuple[str | None, datetime | None]:
        detail = await call(client, "GET", f"/api/routines/{routine['id']}", world.a.board, status=200)
        (t,) = detail["triggers"]
        stored = await db.fetchval("SELECT next_run_at FROM routine_triggers WHERE id = $1", trigger["id"])
        return t["nextRunAt"], stored

    async def around(action: object) -> tuple[datetime, datetime]:
        before = await db.fetchval("SELECT now()")
        await action  # type: ignore[misc]
        return before, await db.fetchval("SELECT now()")

    def assert_from_now(
        answer: tuple[str | None, datetime | None], window: tuple[datetime, datetime]
    ) -> None:
        shown, stored = answer
        assert stored is not None and shown is not None
        assert datetime.fromisoformat(shown.replace("Z", "+00:00")) == stored
        assert stored in {_next_hour(window[0]), _next_hour(window[1])}

    # Pause for real: the trigger is parked.
    await api_client.patch_routine(client, world.a, routine["id"], {"status": "paused"})
    assert await next_run() == (None, None)
    # A stale instant left behind (as a trigger paused long ago would have): resume must not use it.
    await db.execute("UPDATE routine_triggers SET next_run_at = $2 WHERE id = $1", trigger["id"], stale)
    window = await around(api_client.patch_routine(client, world.a, routine["id"], {"status": "active"}))
    assert_from_now(await next_run(), window)

    # Disable, backdate, re-enable: recomputed from now again.
    path = f"/api/routine-triggers/{trigger['id']}"
    await call(client, "PATCH", path, world.a.board, {"enabled": False}, 200)
    assert await next_run() == (None, None)
    await db.execute("UPDATE routine_triggers SET next_run_at = $2 WHERE id = $1", trigger["id"], stale)
    window = await around(call(client, "PATCH", path, world.a.board, {"enabled": True}, 200))
    assert_from_now(await next_run(), window)
