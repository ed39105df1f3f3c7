"""Top of the hour: 10,000 active routines share one cron slot. Time from the slot to the last of
the 10,000 execution issues committed, against COPYing 10,000 issue rows into the same database.

Run: `.venv/bin/python -m bench.top_of_hour`.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from bench.common import (
    RESULTS,
    PeakRss,
    announcements_settled,
    dispatcher_bus,
    seeded,
    service_env,
    timed_then_cleared,
)
from shared.processes import ServiceProcess

ROUTINES = 10_000


async def copy_baseline(conn: asyncpg.Connection, company: uuid.UUID, agent: uuid.UUID) -> float:
    rows = [(uuid.uuid4(), company, f"copy {i}", "todo", agent) for i in range(ROUTINES)]
    columns = ["id", "company_id", "title", "status", "assignee_agent_id"]
    return await timed_then_cleared(
        conn, "issues", lambda: conn.copy_records_to_table("issues", records=rows, columns=columns)
    )


async def main() -> dict[str, Any]:
    async with seeded("top_of_hour", ROUTINES, policy="coalesce_if_active") as (s, stack, conn, world):
        baseline = await copy_baseline(conn, world.company_id, world.agent_id)
        now: datetime = await conn.fetchval("SELECT now()")
        slot = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        if (slot - now).total_seconds() < 8:
            slot += timedelta(minutes=1)
        await conn.execute(
            "INSERT INTO routine_triggers (routine_id, company_id, kind, cron_expression, timezone, next_run_at)"
            " SELECT id, company_id, 'schedule', '* * * * *', 'UTC', $1 FROM routines",
            slot,
        )
        rss = PeakRss()
        env = service_env(stack)  # default settings
        processes = [
            rss.watch(ServiceProcess(name, env, s.tmp / f"{name}.log").start())
            for name in ("scheduler", "run-dispatcher")
        ]
        bus = await dispatcher_bus(stack.nats_url)
        rss.start()
        try:
            print(f"waiting for the slot {slot:%H:%M:%S} …", flush=True)
            # The observer must not compete with what it measures: counting the issues every
            # 10 ms cost Postgres about a tenth of the burst's CPU. Until runs exist and the
            # dispatchers' consumer has settled every announcement (asked of JetStream), only that
            # is asked; then the issues are counted.
            count = 0
            while count < ROUTINES:
                await asyncio.sleep(0.01)
                if time.time() > slot.timestamp() + 120:
                    raise TimeoutError(f"only {count} issues after 120 s")
                if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM routine_runs)"):
                    continue
                if not await announcements_settled(bus):
                    continue
                count = await conn.fetchval("SELECT count(*) FROM issues")
            done = time.time()
            last_commit: datetime = await conn.fetchval("SELECT max(created_at) FROM issues")
            last_run: datetime = await conn.fetchval("SELECT max(triggered_at) FROM routine_runs")
            # Decided ahead by the scheduler (committed with their runs at the slot, as of the slot).
            ahead = await conn.fetchval("SELECT count(*) FROM issues WHERE created_at = $1", slot)
        finally:
            await rss.stop()
            await bus.close()
            for process in processes:
                process.stop()
    elapsed = done - slot.timestamp()
    print(
        f"slot → 10,000th issue seen committed: {elapsed:.2f} s (goal ≤ 1.0 s); "
        f"last run recorded {(last_run - slot).total_seconds():.2f} s, last issue transaction began "
        f"{(last_commit - slot).total_seconds():.2f} s after the slot"
    )
    print(
        f"decided ahead by the scheduler and committed at the slot: {ahead:,}; by the dispatcher after it: {ROUTINES - ahead:,}"
    )
    print(f"COPY of 10,000 issue rows: {baseline:.2f} s; ratio {elapsed / baseline:.1f}×")
    print(f"peak RSS MB: { {k: round(v, 1) for k, v in rss.peaks.items()} }")
    result = {"seconds": elapsed, "copy_seconds": baseline, "decided_ahead": ahead, "peak_rss_mb": rss.peaks}
    (RESULTS / "top_of_hour.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    asyncio.run(main())
