"""Random against time-ordered row ids (UUIDv4 against UUIDv7, shared/ids.py) in a primary key
written the way the gateway writes runs: four writers inserting eight rows a statement, into a
table that already holds 500,000 rows, starting right after a checkpoint (as any moment is, some
minutes after the last one). Prints, for each kind, the time taken, the WAL written and the size of
the primary key (a table whose ids are all of that kind), and v7's figures as ratios of v4's in
the same run.

Run: `.venv/bin/python -m bench.id_order` (`--rounds N`: alternate the two kinds N times each).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

from bench.common import RESULTS, servers
from shared.ids import new_id

EXISTING = 500_000
WRITERS = 4
STATEMENTS = 3_000  # per writer
ROWS_PER_STATEMENT = 8

KINDS: dict[str, tuple[Callable[[], uuid.UUID], str]] = {
    # (how the hot path makes an id, how Postgres makes the table's existing ones alike)
    "uuid4": (uuid.uuid4, "gen_random_uuid()"),
    "uuid7": (new_id, "uuidv7()"),
}


async def _writer(pool: asyncpg.Pool, make: Callable[[], uuid.UUID]) -> None:
    for _ in range(STATEMENTS):
        await pool.execute(
            "INSERT INTO ids (id, routine_id, payload) SELECT unnest($1::uuid[]), $2, '{\"n\": 1}'",
            [make() for _ in range(ROWS_PER_STATEMENT)],
            uuid.UUID(int=1),
        )


async def _one(pool: asyncpg.Pool, kind: str) -> dict[str, float]:
    make, sql_make = KINDS[kind]
    await pool.execute("DROP TABLE IF EXISTS ids")
    await pool.execute(
        "CREATE TABLE ids (id uuid PRIMARY KEY, routine_id uuid NOT NULL, payload jsonb NOT NULL)"
    )
    await pool.execute(
        f"INSERT INTO ids SELECT {sql_make}, '00000000-0000-0000-0000-000000000001', '{{}}'"
        f" FROM generate_series(1, {EXISTING})"
    )
    await pool.execute("VACUUM ANALYZE ids")
    await pool.execute("CHECKPOINT")
    wal_before = await pool.fetchval("SELECT wal_bytes FROM pg_stat_wal")
    started = time.perf_counter()
    await asyncio.gather(*(_writer(pool, make) for _ in range(WRITERS)))
    seconds = time.perf_counter() - started
    wal = float(await pool.fetchval("SELECT wal_bytes FROM pg_stat_wal") - wal_before)
    return {
        "seconds": seconds,
        "rows_per_sec": WRITERS * STATEMENTS * ROWS_PER_STATEMENT / seconds,
        "wal_mb": wal / 2**20,
        "pkey_mb": float(await pool.fetchval("SELECT pg_relation_size('ids_pkey')")) / 2**20,
    }


async def main(rounds: int = 2) -> dict[str, Any]:
    results: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
    async with servers() as s:
        pool = await asyncpg.create_pool(s.pg.dsn, min_size=WRITERS, max_size=WRITERS)
        try:
            for n in range(rounds):
                for kind in list(KINDS)[:: 1 if n % 2 == 0 else -1]:  # each kind first in turn
                    r = await _one(pool, kind)
                    results[kind].append(r)
                    print(
                        f"  {kind}: {r['rows_per_sec']:9,.0f} rows/s, WAL {r['wal_mb']:5.1f} MB, "
                        f"primary key {r['pkey_mb']:5.1f} MB",
                        flush=True,
                    )
        finally:
            await pool.close()
    mean = {k: {f: statistics.mean(r[f] for r in rs) for f in rs[0]} for k, rs in results.items()}
    ratios = {f: mean["uuid7"][f] / mean["uuid4"][f] for f in ("rows_per_sec", "wal_mb", "pkey_mb")}
    print(
        f"uuid7 / uuid4 (mean of {rounds}): rows/s {ratios['rows_per_sec']:.2f}, "
        f"WAL {ratios['wal_mb']:.2f}, primary key size {ratios['pkey_mb']:.2f}"
    )
    result = {"rounds": rounds, "mean": mean, "ratios": ratios}
    (RESULTS / "id_order.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=2)
    asyncio.run(main(parser.parse_args().rounds))
