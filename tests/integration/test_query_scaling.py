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
import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from routines_api.sql import QUERIES as API_QUERIES
from routines_dispatcher.app import create_app as dispatcher_app
from routines_dispatcher.decide import decide_runs
from routines_dispatcher.sql import QUERIES as DISPATCHER_QUERIES
from routines_gateway.app import create_app as gateway_app
from routines_gateway.sql import QUERIES as GATEWAY_QUERIES
from routines_scheduler.app import create_app as scheduler_app
from routines_scheduler.sql import QUERIES as SCHEDULER_QUERIES
from shared.http import DB_KEY
from shared.runs import record_run
from shared.settings import DispatcherSettings, GatewaySettings, SchedulerSettings
from tests.factories import World, make_issue, make_routine, make_schedule_trigger, make_world
from tests.integration.api_client import api_app
from tests.support import Stack

HISTORY = 2_000
FEW = 10
CHUNK = 100  # runs decided in one transaction (up to FETCH_BATCH_SIZE)


async def rows_read(db: asyncpg.Connection, query: str, *args: Any) -> int:
    """Rows the plan's scans read, from EXPLAIN ANALYZE."""
    explained = await db.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {query}", *args)
    return _scanned((json.loads(explained) if isinstance(explained, str) else explained)[0]["Plan"])


async def rows_read_running(conn: asyncpg.Connection, work: Callable[[], Awaitable[object]]) -> int:
    """Rows read by the plans of what `work` runs on `conn`, as they really ran (the plan a
    prepared statement keeps, which EXPLAIN would not show: it plans afresh), from auto_explain
    sent to the client."""
    notices: list[str] = []

    def listen(_: Any, message: asyncpg.PostgresLogMessage) -> None:
        notices.append(message.message)

    await conn.execute("LOAD 'auto_explain'")
    settings = {"log_min_duration": "0", "log_analyze": "on", "log_format": "json", "log_level": "notice"}
    for name, value in settings.items():
        await conn.execute(f"SET auto_explain.{name} = '{value}'")
    conn.add_log_listener(listen)
    try:
        await work()
    finally:
        conn.remove_log_listener(listen)
        for name in settings:
            await conn.execute(f"RESET auto_explain.{name}")
    plans = [json.loads(n[n.index("{") :])["Plan"] for n in notices if '"Plan"' in n]
    return sum(_scanned(plan) for plan in plans)


def _scanned(plan: dict[str, Any]) -> int:
    """Rows a plan's scans read: each scan node's actual rows and the rows its filter removed,
    × its loops."""
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


async def test_deciding_reads_the_runs_it_was_given_not_the_routines_backlog(db: asyncpg.Connection) -> None:
    """A hot routine's undecided runs pile up while its dispatcher is stopped or behind, and the
    partial index of received runs keeps the entries of decided ones until vacuum. Deciding a
    handful of runs must look them up by id: scanning the backlog for them made each transaction
    cost in proportion to the backlog (2.6 ms for 46 runs of a 1,000-run backlog), and draining a
    backlog quadratic."""
    world = await make_world(db)
    routine = await make_routine(db, world)
    ids = await db.fetch(
        "INSERT INTO routine_runs (routine_id, company_id, source, triggered_at)"
        " SELECT $1, $2, 'webhook', now() - g * interval '1 millisecond' FROM generate_series($3, 1, -1) g"
        " RETURNING id",
        routine,
        world.company_id,
        10 * HISTORY,
    )
    # Decided as they came, but for the last HISTORY / 2: the backlog.
    backlog = HISTORY // 2
    await db.execute(
        "UPDATE routine_runs SET status = 'coalesced' WHERE id = ANY($1::uuid[])",
        [r["id"] for r in ids[:-backlog]],
    )
    await db.execute("ANALYZE routine_runs")
    wanted = [r["id"] for r in ids[-CHUNK:]]
    decided_already = ids[0]["id"]
    query = DISPATCHER_QUERIES["undecided_runs"]
    args: tuple[list[Any], ...] = ([*wanted, decided_already], [routine], [])
    async with db.transaction():
        rows = await db.fetch(query, *args)
    assert [r["id"] for r in rows] == wanted  # oldest first
    async with db.transaction():
        assert await rows_read(db, query, *args) <= 3 * (CHUNK + 1)


def _webhook_batch(world: World, routine: uuid.UUID, trigger: uuid.UUID, n: int) -> tuple[Any, ...]:
    """insert_webhook_runs: n fires with new delivery keys, and a retry of an old one."""
    keys = [*(f"sig:new-{uuid.uuid4()}" for _ in range(n)), "sig:old-7"]
    return (
        [uuid.uuid4() for _ in keys],
        [routine] * len(keys),
        [world.company_id] * len(keys),
        [trigger] * len(keys),
        [json.dumps({"n": k}) for k in range(len(keys))],
        [None] * len(keys),
        keys,
        [None] * len(keys),
    )


OLD_SLOT = datetime(2000, 1, 1, tzinfo=UTC)


async def _gateway(conn: asyncpg.Connection, world: World, routine: uuid.UUID, trigger: uuid.UUID) -> None:
    """What the gateway's group commit runs (routines_gateway.ingest): FEW fires and a retry."""
    await conn.fetch(GATEWAY_QUERIES["insert_webhook_runs"], *_webhook_batch(world, routine, trigger, FEW))


async def _scheduler(conn: asyncpg.Connection, world: World, routine: uuid.UUID, trigger: uuid.UUID) -> None:
    """What a scheduler tick runs (routines_scheduler.ticker): FEW new slots and a recorded one."""
    start = datetime.now(UTC) + timedelta(days=random.randint(1, 10**6))
    slots = [*(start + timedelta(minutes=k) for k in range(FEW)), OLD_SLOT + timedelta(minutes=7)]
    n = len(slots)
    await conn.fetch(
        SCHEDULER_QUERIES["insert_schedule_runs"], [routine] * n, [world.company_id] * n, [trigger] * n, slots
    )


async def _api(conn: asyncpg.Connection, world: World, routine: uuid.UUID, trigger: uuid.UUID) -> None:
    """What a manual run naming the trigger records (shared.runs.record_run, in the API's transaction)."""
    async with conn.transaction():
        await record_run(
            conn,
            routine_id=routine,
            company_id=world.company_id,
            trigger_id=trigger,
            source="api",
            payload={"n": 1},
            idempotency_key=str(uuid.uuid4()),
        )


async def _small_table_statistics(db: asyncpg.Connection) -> None:
    """Statistics of a small routine_runs, kept while it grows: autovacuum's ANALYZE would make
    Postgres drop its cached plans, and a test without the fix pass by chance."""
    await db.execute("ALTER TABLE routine_runs SET (autovacuum_enabled = false)")
    await db.execute("ANALYZE routine_runs")


def _service_app(service: str, stack: Stack) -> web.Application:
    url, nats = stack.database_url, stack.nats_url
    if service == "webhook-gateway":
        return gateway_app(GatewaySettings(database_url=url, nats_url=nats, secret_key=stack.secret_key))
    if service == "scheduler":
        return scheduler_app(SchedulerSettings(database_url=url, nats_url=nats))
    if service == "run-dispatcher":
        return dispatcher_app(DispatcherSettings(database_url=url, nats_url=nats))
    assert service == "api"
    return api_app(stack)


INGEST = {"webhook-gateway": _gateway, "scheduler": _scheduler, "api": _api}


@pytest.mark.parametrize("service", list(INGEST))
async def test_recording_a_fire_does_not_read_its_triggers_history(
    db: asyncpg.Connection, stack: Stack, service: str
) -> None:
    """Recording a fire filters out delivery keys, Idempotency-Keys and slots that already have a
    run (NOT EXISTS). A prepared statement soon runs a generic plan, made once from what Postgres
    knew then and kept: made while the table was small (a fresh install, a new trigger's first
    fires), the checks used the trigger's history index and read every earlier run of the trigger
    for each fire — a hot trigger's ingest grew slower with its history (16,598 rows per fire after
    a minute of the pipeline benchmark). Run here on each service's own connection settings."""
    record = INGEST[service]
    world = await make_world(db)
    routine = await make_routine(db, world)
    trigger = await make_schedule_trigger(db, world, routine, "* * * * *", "UTC", None)

    async def history(n: int) -> None:
        await db.execute(
            "INSERT INTO routine_runs (routine_id, company_id, trigger_id, source, delivery_key, scheduled_for)"
            " SELECT $1, $2, $3, 'webhook', 'sig:old-' || g, $4::timestamptz + g * interval '1 minute'"
            " FROM generate_series(1, $5::int) g",
            routine,
            world.company_id,
            trigger,
            OLD_SLOT,
            n,
        )

    await history(20)
    await _small_table_statistics(db)
    database = _service_app(service, stack)[DB_KEY]
    await database.open()
    try:
        async with database.connection() as conn:
            for _ in range(6):  # after five runs Postgres may keep a generic plan
                await record(conn, world, routine, trigger)
            await db.execute("DELETE FROM routine_runs WHERE routine_id = $1", routine)
            await history(10 * HISTORY)
            read = await rows_read_running(conn, lambda: record(conn, world, routine, trigger))
    finally:
        await database.close()
    assert read <= 3 * (FEW + 1)


async def test_deciding_does_not_read_the_routines_history(db: asyncpg.Connection, stack: Stack) -> None:
    """The same for a decision, on the dispatcher's own connection settings: its statements' plans,
    made while the table was small and kept, must not read a hot routine's decided runs."""
    world = await make_world(db)
    routine = await make_routine(db, world)
    await make_issue(db, world, routine, "todo")

    async def received(n: int) -> list[uuid.UUID]:
        rows = await db.fetch(
            "INSERT INTO routine_runs (routine_id, company_id, source) SELECT $1, $2, 'webhook'"
            " FROM generate_series(1, $3::int) RETURNING id",
            routine,
            world.company_id,
            n,
        )
        return [r["id"] for r in rows]

    await received(20)
    await _small_table_statistics(db)
    database = _service_app("run-dispatcher", stack)[DB_KEY]
    await database.open()
    try:
        async with database.connection() as conn:
            for _ in range(6):  # after five runs Postgres may keep a generic plan
                async with conn.transaction():
                    await decide_runs(conn, await received(3))
            history = await received(10 * HISTORY)
            await db.execute(
                "UPDATE routine_runs SET status = 'coalesced' WHERE id = ANY($1::uuid[])", history
            )
            runs = await received(FEW)

            async def decide() -> None:
                async with conn.transaction():
                    assert len(await decide_runs(conn, runs)) == FEW

            read = await rows_read_running(conn, decide)
    finally:
        await database.close()
    assert read <= 10 * (FEW + 1)
