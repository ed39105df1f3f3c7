"""Undecided runs are found through the batches that recorded them (migrations 0010 and 0011), so
that no index of routine_runs names anything a decision changes: decisions are HOT updates."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import asyncpg

from routines_dispatcher.decide import decide_runs
from routines_dispatcher.worker import SWEEP_FROM_THE_OLDEST
from shared.metrics import UNDECIDED_RUNS
from tests.factories import RECORD_RUNS, make_routine, make_run, make_world


async def _batches(db: asyncpg.Connection) -> list[set[uuid.UUID]]:
    return [set(r["run_ids"]) for r in await db.fetch("SELECT run_ids FROM received_batches ORDER BY id")]


async def test_every_statement_recording_runs_names_its_received_runs_in_one_batch(
    db: asyncpg.Connection,
) -> None:
    world = await make_world(db)
    routine = await make_routine(db, world)
    assert await _batches(db) == []
    rows = await db.fetch(
        RECORD_RUNS, routine, world.company_id, ["received", "skipped", "received", "received"]
    )
    received = {r["id"] for r in rows if r["status"] == "received"}
    assert len(received) == 3
    assert await _batches(db) == [received]  # one batch, without the skipped run

    # A statement recording no received run (the scheduler's audit of missed slots) adds none.
    await db.fetch(RECORD_RUNS, routine, world.company_id, ["skipped", "failed"])
    # Nor does one whose rows all conflicted (ON CONFLICT DO NOTHING recorded nothing).
    key = "same-key"
    keyed = """INSERT INTO routine_runs (routine_id, company_id, source, idempotency_key, idempotency_scope)
               VALUES ($1, $2, 'api', $3, 'api') ON CONFLICT DO NOTHING RETURNING id"""
    first = await db.fetchval(keyed, routine, world.company_id, key)
    assert await db.fetchval(keyed, routine, world.company_id, key) is None
    assert await _batches(db) == [received, {first}]


async def test_decisions_are_hot_updates_that_write_no_index(db: asyncpg.Connection) -> None:
    """Every run a decision updates stays in its page and gets no new index entry (a HOT update);
    with an index on the status, as before migration 0011, none would."""
    world = await make_world(db)
    routines = [await make_routine(db, world, policy) for policy in ("coalesce_if_active", "always_enqueue")]

    async def hot_and_all(runs: list[uuid.UUID]) -> tuple[int, int]:
        counts = """SELECT pg_stat_get_xact_tuples_hot_updated('routine_runs'::regclass) AS hot,
                           pg_stat_get_xact_tuples_updated('routine_runs'::regclass) AS updated"""
        async with db.transaction():  # the session's counts not yet reported: before and after
            before = await db.fetchrow(counts)
            decisions = await decide_runs(db, runs)
            assert {d.run_id for d in decisions} == set(runs)
            after = await db.fetchrow(counts)
        assert before is not None and after is not None
        return after["hot"] - before["hot"], after["updated"] - before["updated"]

    runs = [await make_run(db, world, r) for r in routines for _ in range(20)]
    assert await hot_and_all(runs) == (40, 40)

    # The measurement can tell: with the old index back, the same decisions are not HOT.
    await db.execute(
        "CREATE INDEX routine_runs_received ON routine_runs (triggered_at) WHERE status = 'received'"
    )
    runs = [await make_run(db, world, r) for r in routines for _ in range(20)]
    assert await hot_and_all(runs) == (0, 40)


def _decided_columns() -> set[str]:
    """The columns the dispatcher's decision and the API's completion of a run set."""
    sources = [
        Path("services/run-dispatcher/routines_dispatcher/queries.sql").read_text(),
        Path("services/api/routines_api/queries.sql").read_text(),
    ]
    columns: set[str] = set()
    for source in sources:
        for update in re.findall(r"UPDATE routine_runs\b.*?\bSET\b(.*?)(?:\bFROM\b|\bWHERE\b)", source, re.S):
            columns |= set(re.findall(r"(\w+)\s*=", update))
    return columns


async def test_no_index_of_the_runs_names_a_column_their_decision_sets(db: asyncpg.Connection) -> None:
    decided = _decided_columns()
    assert {"status", "linked_issue_id", "coalesced_into_run_id", "decided_at"} <= decided
    indexes = await db.fetch("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'routine_runs'")
    assert len(indexes) >= 5
    for index in indexes:
        named = set(re.findall(r"\w+", index["indexdef"].split(" USING ", 1)[1]))
        assert not named & decided, index["indexdef"]


async def test_the_runs_received_gauge_counts_the_undecided_runs_of_the_batches(
    db: asyncpg.Connection,
) -> None:
    world = await make_world(db)
    routine = await make_routine(db, world)
    assert dict((await db.fetchrow(UNDECIDED_RUNS)) or {}) == {"n": 0, "oldest": 0}
    rows = await db.fetch(RECORD_RUNS, routine, world.company_id, ["received"] * 4)
    later = await make_run(db, world, routine)
    await db.execute(
        "UPDATE routine_runs SET status = 'skipped', decided_at = now() WHERE id = ANY($1::uuid[])",
        [rows[0]["id"], later],
    )
    row = await db.fetchrow(UNDECIDED_RUNS)
    assert row is not None and row["n"] == 3 and row["oldest"] >= 0


async def test_the_gauge_and_the_sweep_read_the_runs_by_primary_key_only(db: asyncpg.Connection) -> None:
    """Planned by statistics taken while nothing was undecided, with many batches, the queries over
    received_batches still probe the runs of each batch by primary key: never a scan of the runs,
    whose cost is the table's size every METRICS_REFRESH_SEC and every sweep."""
    world = await make_world(db)
    routine = await make_routine(db, world)
    for _ in range(300):
        await db.fetch(RECORD_RUNS, routine, world.company_id, ["received"] * 5)
    await db.execute("UPDATE routine_runs SET status = 'skipped', decided_at = now()")
    await db.execute("ANALYZE routine_runs, received_batches")
    sweep = Path("services/run-dispatcher/routines_dispatcher/queries.sql").read_text()
    sweep = sweep.split("-- sweep_received_batches --", 1)[1].split("\n\n-- ", 1)[0]
    for query, args in ((UNDECIDED_RUNS, ()), (sweep, (0, 500, 1000, *SWEEP_FROM_THE_OLDEST))):
        tx = db.transaction()  # EXPLAIN ANALYZE of the sweep deletes batches: rolled back
        await tx.start()
        try:
            rows = await db.fetch(f"EXPLAIN (ANALYZE, COSTS OFF) {query}", *args)
        finally:
            await tx.rollback()
        plan = "\n".join(r[0] for r in rows)
        assert "Seq Scan on routine_runs" not in plan, plan
        assert "routine_runs_pkey" in plan, plan
