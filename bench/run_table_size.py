"""What HOT decisions cost on disk, and what they save: `routine_runs` as it is (fillfactor 40, no
index on the status; migrations 0010-0011) against the layout before (fillfactor 100, the partial
index `routine_runs_received`), in the same run. Runs are recorded as the gateway records them
(group commits of `--per-insert` runs, one hot routine) and decided as the dispatcher decides them
(`decide_runs`, `--per-decision` runs a transaction, while later runs are being recorded). Prints,
for each layout: the share of decisions that were HOT updates, the heap's and the indexes' size
(after a VACUUM, as autovacuum would leave them) and the WAL the decisions wrote.

Run: `.venv/bin/python -m bench.run_table_size` (`--runs 100000`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from typing import Any

import asyncpg

from bench.common import RESULTS, clear, seeded
from routines_dispatcher.decide import decide_runs
from shared.db import init_connection

RECORD = """
INSERT INTO routine_runs (routine_id, company_id, source, payload)
SELECT $1, $2, 'webhook', jsonb_build_object('event', 'push', 'n', g) FROM generate_series(1, $3) g
RETURNING id
"""
SIZES = """
SELECT pg_relation_size('routine_runs') AS heap, pg_indexes_size('routine_runs') AS indexes,
       n_tup_upd AS updated, n_tup_hot_upd AS hot
FROM pg_stat_user_tables WHERE relname = 'routine_runs'
"""


async def _layout(conn: asyncpg.Connection, old: bool) -> None:
    for table in ("issues", "routine_runs", "received_batches"):
        await clear(conn, table)
    await conn.execute("VACUUM FULL routine_runs")
    if old:
        await conn.execute("ALTER TABLE routine_runs SET (fillfactor = 100)")
        await conn.execute(
            "CREATE INDEX IF NOT EXISTS routine_runs_received ON routine_runs (triggered_at) WHERE status = 'received'"
        )
    else:
        await conn.execute("ALTER TABLE routine_runs SET (fillfactor = 40)")
        await conn.execute("DROP INDEX IF EXISTS routine_runs_received")
    await conn.execute("SELECT pg_stat_reset()")


async def _measure(dsn: str, world: Any, runs: int, per_insert: int, per_decision: int) -> dict[str, float]:
    """Record `runs` runs while deciding them, `per_decision` a transaction, in arrival order."""
    recorder, decider = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    await init_connection(decider)  # the services' codecs (JSON), as decide_runs expects
    try:
        queue: asyncio.Queue[list[uuid.UUID] | None] = asyncio.Queue()

        async def record() -> None:
            for _ in range(runs // per_insert):
                rows = await recorder.fetch(RECORD, world.routines[0], world.company_id, per_insert)
                await queue.put([r["id"] for r in rows])
            await queue.put(None)

        async def decide() -> None:
            pending: list[uuid.UUID] = []
            done = False
            while not done:
                ids = await queue.get()
                if ids is None:
                    done = True
                else:
                    pending += ids
                while pending and (done or len(pending) >= per_decision):
                    chunk, pending = pending[:per_decision], pending[per_decision:]
                    async with decider.transaction():
                        await decide_runs(decider, chunk)

        wal_before = await decider.fetchval("SELECT pg_current_wal_lsn()::text")
        await asyncio.gather(record(), decide())
        wal = await decider.fetchval("SELECT pg_current_wal_lsn() - $1::text::pg_lsn", wal_before)
        await decider.execute("SELECT pg_stat_force_next_flush()")
        await asyncio.sleep(1.0)  # the counters reach pg_stat_user_tables
        await decider.execute("VACUUM routine_runs")
        row = await decider.fetchrow(SIZES)
        assert row is not None
        return {
            "hot_share": row["hot"] / max(1, row["updated"]),
            "heap_mb": row["heap"] / 2**20,
            "indexes_mb": row["indexes"] / 2**20,
            "wal_mb": float(wal) / 2**20,
        }
    finally:
        await recorder.close()
        await decider.close()


async def main(runs: int = 100_000, per_insert: int = 20, per_decision: int = 300) -> dict[str, Any]:
    async with seeded("run_table_size", 1, policy="coalesce_if_active") as (_s, stack, conn, world):
        result: dict[str, Any] = {}
        for name, old in (
            ("as it is (fillfactor 40, no status index)", False),
            ("before (fillfactor 100, status index)", True),
        ):
            await _layout(conn, old)
            result[name] = await _measure(stack.database_url, world, runs, per_insert, per_decision)
            r = result[name]
            print(
                f"{name}: {runs:,} runs, HOT {r['hot_share']:.0%} of decisions; heap {r['heap_mb']:.1f} MB, "
                f"indexes {r['indexes_mb']:.1f} MB, total {r['heap_mb'] + r['indexes_mb']:.1f} MB; "
                f"WAL {r['wal_mb']:.1f} MB",
                flush=True,
            )
    (RESULTS / "run_table_size.json").write_text(json.dumps(result, indent=2))
    return result


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--per-insert", type=int, default=20, help="runs a group commit records")
    parser.add_argument("--per-decision", type=int, default=300, help="runs a decision transaction decides")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.per_insert, args.per_decision))


if __name__ == "__main__":
    cli()
