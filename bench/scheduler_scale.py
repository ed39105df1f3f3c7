"""Scheduler scale: tick time with 1,000 due among 1,000,000 schedule triggers vs 1,000 in all.

Run: `.venv/bin/python -m bench.scheduler_scale` (starts its own Postgres and NATS).
"""

from __future__ import annotations

import asyncio
import statistics
import time

import asyncpg

from bench.common import clear, seed_owner, servers
from routines_scheduler.ticker import Scheduler
from shared.bus import Bus
from shared.db import Database
from shared.devservers import NatsServer, PostgresServer
from shared.migrate import migrate
from shared.settings import SchedulerSettings

DUE = 1_000
TOTAL = 1_000_000
ROUNDS = 5


async def _seed(conn: asyncpg.Connection, total: int) -> None:
    company, agent, project = await seed_owner(conn)
    routine = await conn.fetchval(
        "INSERT INTO routines (company_id, title, assignee_agent_id, project_id) VALUES ($1, 'r', $2, $3) RETURNING id",
        company,
        agent,
        project,
    )
    await conn.execute(
        "INSERT INTO routine_triggers (routine_id, company_id, kind, cron_expression, timezone, next_run_at)"
        " SELECT $1, $2, 'schedule', '* * * * *', 'UTC', now() + interval '30 days'"
        " FROM generate_series(1, $3)",
        routine,
        company,
        total,
    )
    await conn.execute("ANALYZE routine_triggers")


async def _tick_times(scheduler: Scheduler, conn: asyncpg.Connection) -> list[float]:
    times = []
    for round_ in range(ROUNDS):
        await clear(conn, "routine_runs")
        await conn.execute(
            "UPDATE routine_triggers SET next_run_at = date_trunc('minute', now()) - $1 * interval '1 minute'"
            " WHERE id IN (SELECT id FROM routine_triggers ORDER BY id LIMIT $2)",
            round_ + 1,
            DUE,
        )
        started = time.perf_counter()
        recorded = await scheduler.tick()
        times.append(time.perf_counter() - started)
        assert recorded >= DUE, recorded
    return times


async def measure(total: int, pg: PostgresServer, nats: NatsServer) -> float:
    name = f"bench_{total}"
    admin = await asyncpg.connect(pg.dsn)
    await admin.execute(f"DROP DATABASE IF EXISTS {name}")
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    dsn = pg.dsn_for(name)
    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    print(f"seeding {total:,} schedule triggers …", flush=True)
    await _seed(conn, total)
    settings = SchedulerSettings(database_url=dsn, nats_url=nats.url, misfire_grace_sec=3600)
    database = Database(settings, "bench")
    await database.open()
    bus = Bus(nats.url, "bench")
    await bus.connect_forever()
    times = await _tick_times(Scheduler(settings, database, bus, asyncio.Event()), conn)
    await bus.close()
    await database.close()
    await conn.close()
    median = statistics.median(times)
    print(
        f"{total:>9,} triggers, {DUE:,} due: tick median {median * 1000:.1f} ms (runs: "
        + ", ".join(f"{t * 1000:.0f}" for t in times)
        + " ms)",
        flush=True,
    )
    return median


async def main() -> None:
    async with servers(fast=True) as running:
        baseline = await measure(DUE, running.pg, running.nats)
        large = await measure(TOTAL, running.pg, running.nats)
        print(f"ratio (1,000,000 / 1,000): {large / baseline:.2f}  (goal ≤ 1.5)")


if __name__ == "__main__":
    asyncio.run(main())
