"""What a decision costs, in CPU: one hot `coalesce_if_active` routine with an open execution issue
(`--policy always_enqueue`: an issue created for every run),
20,000 recorded runs announced `--per-message` runs a message (default 1, as API manual runs are;
the gateway announces each group commit's fires together, 10-30 a message under load), decided by
one dispatcher process. Prints the CPU seconds per decided run of the dispatcher, Postgres and
NATS — to set against an accepted fire's (bench/webhook_ingest.py): on a host where both share the
cores, the ingest rate with the dispatcher running can be at most accepted / (accepted + decided)
of the rate with it stopped.

Run: `.venv/bin/python -m bench.decision_cost` (`--rate 1000`: announce at that many runs a second,
as a steady stream of fires would; 0: all at once; `--statements`: also print where Postgres spent
its time, by statement, from pg_stat_statements; `--per-message N`: N runs named per message, as
the gateway announces a group commit's; `--concurrency N`: the dispatcher's decide concurrency;
`--policy`: the routine's concurrency policy; `--runs`: how many).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import asyncpg

from bench.common import (
    RESULTS,
    STATEMENT_STATS,
    CpuMeter,
    assert_all_decided,
    dispatcher_bus,
    reset_statement_stats,
    seeded,
    service_env,
    top_statements,
    until_decided,
)
from shared.processes import ServiceProcess
from shared.runs import publish_runs_requested

RUNS = 20_000  # by default


async def wal_counters(conn: asyncpg.Connection) -> dict[str, int]:
    """The cluster's WAL written so far, and the runs table's updates (HOT and all)."""
    await conn.execute("SELECT pg_stat_force_next_flush()")
    await asyncio.sleep(1.1)  # other backends report their counts within a second
    row = await conn.fetchrow(
        "SELECT w.wal_bytes::bigint AS bytes, w.wal_records AS records, w.wal_fpi AS fpi,"
        " t.n_tup_upd AS updates, t.n_tup_hot_upd AS hot_updates"
        " FROM pg_stat_wal w, pg_stat_user_tables t WHERE t.relname = 'routine_runs'"
    )
    assert row is not None
    return dict(row)


async def main(
    rate: float = 1000.0,
    statements: bool = False,
    per_message: int = 1,
    concurrency: int = 3,
    policy: str = "coalesce_if_active",
    runs: int = RUNS,
) -> dict[str, Any]:
    settings = STATEMENT_STATS if statements else ()
    async with seeded("decision_cost", 1, policy=policy, pg_settings=settings) as (
        s,
        stack,
        conn,
        world,
    ):
        routine = world.routines[0]
        await conn.execute(
            "INSERT INTO issues (company_id, title, status, assignee_agent_id, origin_kind, origin_id)"
            " VALUES ($1, 'open', 'todo', $2, 'routine_execution', $3)",
            world.company_id,
            world.agent_id,
            routine,
        )
        rows = await conn.fetch(
            "INSERT INTO routine_runs (routine_id, company_id, source) SELECT $1, $2, 'webhook'"
            " FROM generate_series(1, $3) RETURNING id, routine_id",
            routine,
            world.company_id,
            runs,
        )
        bus = await dispatcher_bus(stack.nats_url)
        # A long sweep delay: every decision here comes through JetStream.
        env = service_env(stack, sweep_after_sec=600, decide_concurrency=concurrency)
        dispatcher = ServiceProcess("run-dispatcher", env, s.tmp / "dispatcher.log").start()
        assert dispatcher.proc is not None and s.pg._proc is not None and s.nats._proc is not None
        cpu = CpuMeter(
            {"run-dispatcher": dispatcher.proc.pid, "postgres": s.pg._proc.pid, "nats": s.nats._proc.pid}
        )
        try:
            await asyncio.sleep(1.0)  # started and idle
            if statements:
                await reset_statement_stats(conn)
            wal_before = await wal_counters(conn)
            before = cpu.read()
            started = time.perf_counter()
            paced = 0
            for n in range(0, len(rows), per_message):
                chunk = rows[n : n + per_message]
                await publish_runs_requested(bus, [(row["id"], row["routine_id"]) for row in chunk])
                sent = n + len(chunk)
                if rate and sent >= paced + 50:  # on schedule every 50 runs or so
                    paced = sent
                    await asyncio.sleep(max(0.0, started + sent / rate - time.perf_counter()))
            await until_decided(bus)
            elapsed = time.perf_counter() - started
            after = cpu.read()
            wal = {k: v - wal_before[k] for k, v in (await wal_counters(conn)).items()}
            top = await top_statements(conn, 8) if statements else []
            await assert_all_decided(conn, [row["id"] for row in rows])  # after the CPU was read
            coalesced = await conn.fetchval("SELECT sum(coalesced_fire_count) FROM issues")
            created = await conn.fetchval("SELECT count(*) FROM routine_runs WHERE status = 'issue_created'")
            # Runs decided in one transaction share its now().
            transactions = await conn.fetchval("SELECT count(DISTINCT decided_at) FROM routine_runs")
        finally:
            dispatcher.stop()
            await bus.close()
    per_run = {name: (after[name] - before[name]) / runs * 1e6 for name in before}
    print(
        f"{runs:,} runs announced {per_message} a message "
        f"{'at ' + format(rate, ',.0f') + '/s' if rate else 'at once'}, decided in "
        f"{elapsed:.2f} s ({runs / elapsed:,.0f}/s; {coalesced:,} coalesced into the open issue, "
        f"{created:,} issues created) "
        f"in {transactions:,} transactions ({runs / transactions:.1f} runs each)"
    )
    print(
        "CPU per decided run: "
        + ", ".join(f"{name} {us:.0f} µs" for name, us in per_run.items())
        + f"; total {sum(per_run.values()):.0f} µs (NATS includes this benchmark's publishing)"
    )
    print(
        "WAL per decided run: "
        f"{wal['bytes'] / runs:,.0f} bytes in {wal['records'] / runs:.1f} records, "
        f"{wal['fpi'] / runs:.2f} full-page images; "
        f"updates of runs that were HOT: {wal['hot_updates']:,} of {wal['updates']:,}"
    )
    if top:
        print(
            "Postgres time by statement, waits for locks included (calls, ms in all, ms per call, µs per decided run):"
        )
        for row in top:
            ms = row["total_exec_time"]
            print(
                f"  {row['calls']:>6,} {ms:8.1f} {ms / row['calls']:6.2f} {ms / runs * 1000:6.1f}  {row['query'][:80]}"
            )
    result = {
        "runs": runs,
        "rate": rate,
        "policy": policy,
        "per_message": per_message,
        "seconds": elapsed,
        "transactions": transactions,
        "cpu_us_per_run": per_run,
        "wal_bytes_per_run": wal["bytes"] / runs,
    }
    (RESULTS / "decision_cost.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--statements", action="store_true")
    parser.add_argument(
        "--per-message", type=int, default=1, help="runs named per message (a gateway commit's: 10-30)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=3, help="the dispatcher's ROUTINES_DECIDE_CONCURRENCY"
    )
    parser.add_argument(
        "--policy", default="coalesce_if_active", choices=["coalesce_if_active", "always_enqueue"]
    )
    parser.add_argument("--runs", type=int, default=RUNS, help="runs recorded and decided")
    args = parser.parse_args()
    asyncio.run(main(args.rate, args.statements, args.per_message, args.concurrency, args.policy, args.runs))
