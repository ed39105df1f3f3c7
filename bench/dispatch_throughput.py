"""Dispatcher throughput: 20,000 recorded runs over 2,000 routines, published, decided by one
dispatcher process; against inserting the same number of issue rows in one statement.

Run: `.venv/bin/python -m bench.dispatch_throughput`.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import asyncpg

from bench.common import (
    RESULTS,
    PeakRss,
    assert_all_decided,
    dispatcher_bus,
    seeded,
    service_env,
    timed_then_cleared,
    until_decided,
)
from shared.processes import ServiceProcess
from shared.runs import publish_run_requested

RUNS = 20_000
ROUTINES = 2_000


async def insert_baseline(conn: asyncpg.Connection, company: uuid.UUID, agent: uuid.UUID) -> float:
    return await timed_then_cleared(
        conn,
        "issues",
        lambda: conn.execute(
            "INSERT INTO issues (company_id, title, status, assignee_agent_id)"
            " SELECT $1, 'baseline ' || g, 'todo', $2 FROM generate_series(1, $3) g",
            company,
            agent,
            RUNS,
        ),
    )


async def main() -> dict[str, Any]:
    async with seeded("dispatch", ROUTINES, policy="always_enqueue") as (s, stack, conn, world):
        baseline = await insert_baseline(conn, world.company_id, world.agent_id)
        rows = await conn.fetch(
            "INSERT INTO routine_runs (routine_id, company_id, source)"
            " SELECT r, $2, 'api' FROM unnest($1::uuid[]) r, generate_series(1, $3) RETURNING id, routine_id",
            world.routines,
            world.company_id,
            RUNS // ROUTINES,
        )
        bus = await dispatcher_bus(stack.nats_url)
        await asyncio.gather(*(publish_run_requested(bus, r["id"], r["routine_id"]) for r in rows))
        rss = PeakRss()
        # A long sweep delay: every decision here comes through JetStream.
        dispatcher = rss.watch(
            ServiceProcess(
                "run-dispatcher", service_env(stack, sweep_after_sec=600), s.tmp / "dispatcher.log"
            )
        )
        rss.start()
        started = time.perf_counter()
        dispatcher.start(wait_ready=False)
        try:
            await until_decided(bus)
            elapsed = time.perf_counter() - started
            await assert_all_decided(conn, [r["id"] for r in rows])
            issues = await conn.fetchval("SELECT count(*) FROM issues")
        finally:
            await rss.stop()
            dispatcher.stop()
            await bus.close()
    rate = RUNS / elapsed
    print(
        f"{RUNS:,} runs decided in {elapsed:.2f} s incl. process start: {rate:,.0f} runs/s; issues {issues:,}"
    )
    print(
        f"one-statement INSERT of {RUNS:,} issues: {baseline:.2f} s ({RUNS / baseline:,.0f} rows/s); "
        f"dispatcher at {baseline / elapsed:.0%} of that"
    )
    result = {
        "runs": RUNS,
        "seconds": elapsed,
        "runs_per_sec": rate,
        "baseline_seconds": baseline,
        "peak_rss_mb": rss.peaks,
    }
    (RESULTS / "dispatch_throughput.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    asyncio.run(main())
