"""Queries on the hot paths read what they answer with, not a routine's whole history.

"The newest open issue of each routine" and "each trigger's latest run" were DISTINCT ON queries:
correct, but they read every open issue of the routine (every run of the trigger) to keep one.
An `always_enqueue` routine whose agent lags accumulates open issues, a webhook trigger runs, so
each decision and each trigger listing grew slower with the history (the soak's p99 climbed with
every minute of it). Here each query runs under EXPLAIN ANALYZE over a history of 2,000 rows and
must read a handful of them; the answers are checked too.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg

from routines_api.sql import QUERIES as API_QUERIES
from routines_dispatcher.sql import QUERIES as DISPATCHER_QUERIES
from tests.factories import World, make_routine, make_schedule_trigger, make_world

HISTORY = 2_000
FEW = 10


async def rows_read(db: asyncpg.Connection, query: str, *args: Any) -> int:
    """Rows the plan's scans read (each node's actual rows and the rows its filter removed, ×
    loops), from EXPLAIN ANALYZE."""
    explained = await db.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {query}", *args)
    plan = (json.loads(explained) if isinstance(explained, str) else explained)[0]["Plan"]
    total, nodes = 0, [plan]
    while nodes:
        node = nodes.pop()
        if "Scan" in node["Node Type"]:
            read = node["Actual Rows"] + node.get("Rows Removed by Filter", 0)
            total += int(read * node["Actual Loops"])
        nodes.extend(node.get("Plans", []))
    return total


async def _open_issues(db: asyncpg.Connection, world: World, routine: uuid.UUID) -> uuid.UUID:
    """HISTORY open execution issues of `routine`, one a second; the newest one's id."""
    await db.execute(
        "INSERT INTO issues (company_id, title, status, assignee_agent_id, origin_kind, origin_id, created_at)"
        " SELECT $1, 'old', 'todo', $2, 'routine_execution', $3, now() - g * interval '1 second'"
        " FROM generate_series(1, $4) g",
        world.company_id,
        world.agent_id,
        routine,
        HISTORY,
    )
    newest = await db.fetchval(
        "INSERT INTO issues (company_id, title, status, assignee_agent_id, origin_kind, origin_id)"
        " VALUES ($1, 'newest', 'in_progress', $2, 'routine_execution', $3) RETURNING id",
        world.company_id,
        world.agent_id,
        routine,
    )
    await db.execute("ANALYZE issues")
    return uuid.UUID(str(newest))


async def test_deciding_reads_one_open_issue_per_routine_however_many_are_open(
    db: asyncpg.Connection,
) -> None:
    world = await make_world(db)
    busy, quiet = await make_routine(db, world, "always_enqueue"), await make_routine(db, world)
    newest = await _open_issues(db, world, busy)
    query = DISPATCHER_QUERIES["active_issues"]
    rows = await db.fetch(query, [busy, quiet])
    assert [(r["routine_id"], r["id"]) for r in rows] == [(busy, newest)]
    assert await rows_read(db, query, [busy, quiet]) <= FEW


async def test_the_api_reads_one_open_issue_per_routine_however_many_are_open(db: asyncpg.Connection) -> None:
    world = await make_world(db)
    busy = await make_routine(db, world, "always_enqueue")
    newest = await _open_issues(db, world, busy)
    query = API_QUERIES["open_execution_issues"]
    rows = await db.fetch(query, [busy])
    assert [(r["routine_id"], r["id"], r["status"]) for r in rows] == [(busy, newest, "in_progress")]
    assert await rows_read(db, query, [busy]) <= FEW


async def test_a_triggers_latest_run_is_read_without_its_history(db: asyncpg.Connection) -> None:
    world = await make_world(db)
    routine = await make_routine(db, world)
    trigger = await make_schedule_trigger(db, world, routine, "* * * * *", "UTC", None)
    idle = await make_schedule_trigger(db, world, routine, "0 * * * *", "UTC", None)
    await db.execute(
        "INSERT INTO routine_runs (routine_id, company_id, trigger_id, source, status, triggered_at)"
        " SELECT $1, $2, $3, 'schedule', 'coalesced', now() - g * interval '1 minute'"
        " FROM generate_series(1, $4) g",
        routine,
        world.company_id,
        trigger,
        HISTORY,
    )
    latest = await db.fetchval(
        "INSERT INTO routine_runs (routine_id, company_id, trigger_id, source, status)"
        " VALUES ($1, $2, $3, 'schedule', 'issue_created') RETURNING id",
        routine,
        world.company_id,
        trigger,
    )
    await db.execute("ANALYZE routine_runs")
    query = API_QUERIES["latest_run_per_trigger"]
    rows = await db.fetch(query, [trigger, idle])
    assert [(r["trigger_id"], r["status"]) for r in rows] == [(trigger, "issue_created")]
    assert latest is not None
    assert await rows_read(db, query, [trigger, idle]) <= FEW


CHUNK = 100  # runs decided in one transaction (a fetch's worth)


async def test_deciding_reads_the_runs_it_was_given_not_the_routines_backlog(db: asyncpg.Connection) -> None:
    """A hot routine's undecided runs pile up while its dispatcher is stopped or behind. Deciding a
    chunk of them must read those runs, however the table was last analyzed: with the status in
    the query, the planner scanned the partial index of received runs for them — cheap by the
    statistics of a table analyzed while nothing waited (the steady state), a read of the whole
    backlog per transaction once one builds up, and a drain quadratic in it. Checked in the plan
    made for the values and in the generic plan a prepared statement switches to."""
    world = await make_world(db)
    routine = await make_routine(db, world)
    history = await db.fetch(
        "INSERT INTO routine_runs (routine_id, company_id, source, status, triggered_at)"
        " SELECT $1, $2, 'webhook', 'coalesced', now() - interval '1 hour' - g * interval '1 millisecond'"
        " FROM generate_series(1, $3) g RETURNING id",
        routine,
        world.company_id,
        10 * HISTORY,
    )
    await db.execute("ANALYZE routine_runs")  # nothing waits: as autovacuum sees a running system
    backlog = [
        r["id"]
        for r in await db.fetch(
            "INSERT INTO routine_runs (routine_id, company_id, source, triggered_at)"
            " SELECT $1, $2, 'webhook', now() - g * interval '1 millisecond'"
            " FROM generate_series($3, 1, -1) g RETURNING id",
            routine,
            world.company_id,
            HISTORY // 2,
        )
    ]
    wanted, decided_already = backlog[-CHUNK:], history[0]["id"]
    query = DISPATCHER_QUERIES["undecided_runs"]
    no_variables: list[uuid.UUID] = []  # $3: the routines that declare variables
    args = ([decided_already, *reversed(wanted)], [routine], no_variables)
    async with db.transaction():
        rows = await db.fetch(query, *args)
    assert [r["id"] for r in rows] == wanted  # oldest first; not the one decided already
    for mode in ("auto", "force_generic_plan"):
        async with db.transaction():
            await db.execute(f"SET LOCAL plan_cache_mode = {mode}")
            assert await rows_read(db, query, *args) <= 3 * (CHUNK + 1), mode
