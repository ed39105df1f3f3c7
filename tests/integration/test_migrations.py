"""Migrations: schema from nothing, idempotent re-runs, concurrent runners."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable
from pathlib import Path

import asyncpg
import pytest

from shared.migrate import migrate, migration_files
from tests.databases import DbFactory
from tests.factories import RECORD_RUNS, make_routine, make_world
from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def empty_database(db_factory: DbFactory) -> str:
    return await db_factory(prefix="empty_", template=None)


async def _tables(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        return {r["table_name"] for r in rows}
    finally:
        await conn.close()


async def test_migrations_build_the_whole_domain_schema(empty_database: str) -> None:
    applied = await migrate(empty_database)
    assert applied == [version for version, _ in migration_files()]
    assert {
        "companies",
        "board_memberships",
        "api_tokens",
        "agents",
        "projects",
        "goals",
        "issues",
        "routines",
        "routine_triggers",
        "routine_runs",
        "webhook_secrets",
        "schema_migrations",
    } <= await _tables(empty_database)


async def test_running_migrations_again_changes_nothing(empty_database: str) -> None:
    await migrate(empty_database)
    conn = await asyncpg.connect(empty_database)
    before = await conn.fetch("SELECT version, applied_at FROM schema_migrations ORDER BY version")
    await conn.close()
    assert await migrate(empty_database) == []
    conn = await asyncpg.connect(empty_database)
    after = await conn.fetch("SELECT version, applied_at FROM schema_migrations ORDER BY version")
    await conn.close()
    assert before == after


async def test_two_concurrent_migrations_are_safe(empty_database: str) -> None:
    first, second = await asyncio.gather(migrate(empty_database), migrate(empty_database))
    versions = [version for version, _ in migration_files()]
    assert sorted([first, second], key=len) == [[], versions]


async def test_schema_constraints_carry_the_guarantees(db: asyncpg.Connection) -> None:
    """Run uniqueness per slot, per idempotency key and per delivery id is enforced by Postgres."""
    constraints = {
        r["indexname"]: r["indexdef"]
        for r in await db.fetch("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'routine_runs'")
    }
    assert "UNIQUE" in constraints["routine_runs_slot"]
    assert "(routine_id, idempotency_scope, idempotency_key)" in constraints["routine_runs_idempotency"]
    assert "(trigger_id, delivery_key)" in constraints["routine_runs_delivery"]
    assert "UNIQUE" in constraints["routine_runs_signature"]
    assert "(trigger_id, delivery_signature)" in constraints["routine_runs_signature"]
    due = await db.fetchval("SELECT indexdef FROM pg_indexes WHERE indexname = 'routine_triggers_due'")
    assert "WHERE" in due and "next_run_at" in due


FOREIGN_KEYS = """
SELECT c.conrelid::regclass::text AS referencing, a.attname AS column_name,
       c.confrelid::regclass::text AS referenced, c.confdeltype = 'c' AS cascades,
       EXISTS (SELECT 1 FROM pg_index i
               WHERE i.indrelid = c.conrelid AND i.indkey[0] = c.conkey[1]) AS indexed
FROM pg_constraint c
JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
WHERE c.contype = 'f' AND cardinality(c.conkey) = 1
ORDER BY 1, 2
"""


def _tables_the_services_delete_from() -> set[str]:
    """Every table a service's SQL deletes rows from (each package keeps its queries in .sql)."""
    sources = [
        *Path("services").rglob("*.sql"),
        *Path("services").rglob("*.py"),
        *Path("shared").rglob("*.py"),
    ]
    sources += [p for p in Path("shared").rglob("*.sql") if "migrations" not in p.parts]
    return {
        match.lower()
        for source in sources
        for match in re.findall(r"\bDELETE\s+FROM\s+(\w+)", source.read_text(), re.IGNORECASE)
    }


async def test_rows_that_get_deleted_are_found_by_index_from_what_references_them(
    empty_database: str,
) -> None:
    """Deleting a row makes Postgres find every row that references it, once per deleted row:
    without an index on the referencing column that is a scan of the whole table each time (a
    trigger with 100,000 runs would take minutes to delete). The rows the services delete —
    directly or by cascade — must be reachable by index; foreign keys into tables nothing deletes
    from (companies, agents, issues, routines, runs: archived or kept) need no index, and have none,
    so the hot paths that insert runs and issues do not pay for one."""
    await migrate(empty_database)
    conn = await asyncpg.connect(empty_database)
    try:
        keys = await conn.fetch(FOREIGN_KEYS)
    finally:
        await conn.close()
    deleted = _tables_the_services_delete_from()
    assert {"routine_triggers", "console_sessions"} <= deleted  # the scan found the known deletes
    while True:  # and what those deletes cascade into
        cascaded = {k["referencing"] for k in keys if k["cascades"] and k["referenced"] in deleted}
        if cascaded <= deleted:
            break
        deleted |= cascaded
    unindexed = [
        f"{k['referencing']}.{k['column_name']} → {k['referenced']}"
        for k in keys
        if k["referenced"] in deleted and not k["indexed"]
    ]
    assert not unindexed, (
        "rows are deleted from these tables; index the columns that reference them: " + ", ".join(unindexed)
    )


async def test_0008_puts_github_deliveries_without_an_id_under_the_signature_index(
    db: asyncpg.Connection,
) -> None:
    """Runs recorded before 0008 for github_hmac deliveries without an id were keyed 'sig:…' and so
    outside routine_runs_signature: the same signature could come again under an id. The migration
    re-keys them (and leaves hmac_sha256 rows, and any signature that already made two runs, alone)."""
    world = await make_world(db)
    routine = await make_routine(db, world)
    triggers = {}
    for mode in ("github_hmac", "hmac_sha256"):
        triggers[mode] = await db.fetchval(
            "INSERT INTO routine_triggers (routine_id, company_id, kind, signing_mode, public_id, replay_window_sec)"
            " VALUES ($1, $2, 'webhook', $3, $4, 300) RETURNING id",
            routine,
            world.company_id,
            mode,
            uuid.uuid4().hex[:24],
        )
    github, hmac_trigger = triggers["github_hmac"], triggers["hmac_sha256"]

    async def run(trigger: uuid.UUID, key: str, signature: str) -> uuid.UUID:
        return uuid.UUID(
            str(
                await db.fetchval(
                    "INSERT INTO routine_runs (routine_id, company_id, trigger_id, source, delivery_key,"
                    " delivery_signature) VALUES ($1, $2, $3, 'webhook', $4, $5) RETURNING id",
                    routine,
                    world.company_id,
                    trigger,
                    key,
                    signature,
                )
            )
        )

    alone = await run(github, "sig:aaa", "aaa")
    replayed = [await run(github, "delivery-1", "bbb"), await run(github, "sig:bbb", "bbb")]
    timestamped = await run(hmac_trigger, "sig:ccc", "ccc")
    await db.execute(dict(migration_files())["0008_github_signature_keys"])
    keys = {r["id"]: r["delivery_key"] for r in await db.fetch("SELECT id, delivery_key FROM routine_runs")}
    assert keys == {
        alone: "github-sig:aaa",
        replayed[0]: "delivery-1",
        replayed[1]: "sig:bbb",
        timestamped: "sig:ccc",
    }
    with pytest.raises(asyncpg.UniqueViolationError):  # the signature index now holds it
        await run(github, "delivery-2", "aaa")


HISTORY_INDEXES = [
    "issues_assignee",
    "issues_company",
    "routine_runs_history",
    "routine_runs_trigger_history",
]


async def _definitions(conn: asyncpg.Connection, names: list[str]) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT c.relname, pg_get_indexdef(c.oid) AS def, i.indisvalid FROM pg_class c"
        " JOIN pg_index i ON i.indexrelid = c.oid WHERE c.relname = ANY($1::text[])",
        names,
    )
    assert all(r["indisvalid"] for r in rows), rows
    return {r["relname"]: r["def"] for r in rows}


async def test_history_indexes_are_ascending_so_rows_in_time_order_fill_their_pages(
    db: asyncpg.Connection,
) -> None:
    """Declared DESC, an index of (key, time) takes rows arriving in time order at the left of the
    key's range, and every page split leaves half a page empty: twice the size (docs/benchmarks.md
    §8). Ascending, they land at the end and pages fill; a backward scan serves ORDER BY … DESC."""
    definitions = await _definitions(db, HISTORY_INDEXES)
    assert sorted(definitions) == HISTORY_INDEXES
    for definition in definitions.values():
        assert "DESC" not in definition, definition
    plan = "\n".join(
        r[0]
        for r in await db.fetch(
            "EXPLAIN SELECT id FROM routine_runs WHERE routine_id = $1 ORDER BY triggered_at DESC LIMIT 20",
            uuid.uuid4(),
        )
    )
    assert "Index Scan Backward using routine_runs_history " in plan, plan


async def test_an_online_migration_rebuilds_indexes_while_rows_are_written(empty_database: str) -> None:
    """0009 runs outside a transaction (CREATE INDEX CONCURRENTLY): rows inserted meanwhile are
    neither blocked nor missing from the rebuilt indexes, and an interrupted run can run again."""
    versions = [version for version, _ in migration_files()]
    online = versions.index("0009_ascending_history_indexes")
    conn = await asyncpg.connect(empty_database)
    try:
        await migrate(empty_database)
        # Back to before 0009, with the old DESC indexes and rows in the tables.
        # (Only 0009 is run again: the later migrations stay applied.)
        await conn.execute("DELETE FROM schema_migrations WHERE version = $1", versions[online])
        for name in HISTORY_INDEXES:
            await conn.execute(f"DROP INDEX {name}")
        await conn.execute(
            "CREATE INDEX routine_runs_history ON routine_runs (routine_id, triggered_at DESC);"
            "CREATE INDEX routine_runs_trigger_history ON routine_runs (trigger_id, triggered_at DESC)"
            " WHERE trigger_id IS NOT NULL;"
            "CREATE INDEX issues_assignee ON issues (assignee_agent_id, created_at DESC);"
            # What interrupted runs leave: a half-built (invalid) new index; a new index built,
            # the old one dropped, not yet renamed.
            "CREATE INDEX routine_runs_history_asc ON routine_runs (routine_id);"
            "CREATE INDEX issues_company_asc ON issues (company_id, created_at)"
        )
        await conn.execute(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'routine_runs_history_asc'::regclass"
        )
        kept = await conn.fetchval("SELECT 'issues_company_asc'::regclass::oid")
        world = await make_world(conn)
        routine = await make_routine(conn, world)
        insert = "INSERT INTO routine_runs (routine_id, company_id, source) VALUES ($1, $2, 'api')"
        await conn.executemany(insert, [(routine, world.company_id)] * 200)

        writer = await asyncpg.connect(empty_database)
        written = 0

        async def keep_writing(stop: asyncio.Event) -> None:
            nonlocal written
            while not stop.is_set():
                await writer.execute(insert, routine, world.company_id)  # never waits long
                written += 1

        stop = asyncio.Event()
        task = asyncio.create_task(keep_writing(stop))
        try:
            assert await migrate(empty_database) == [versions[online]]
        finally:
            stop.set()
            await task
            await writer.close()
        assert written > 0
        definitions = await _definitions(conn, [*HISTORY_INDEXES, "routine_runs_history_asc"])
        assert sorted(definitions) == HISTORY_INDEXES  # the invalid leftover is gone
        assert all("DESC" not in d for d in definitions.values())
        assert await conn.fetchval("SELECT 'issues_company'::regclass::oid") == kept  # not built twice
        await conn.execute("SET enable_seqscan = off")
        by_index = await conn.fetchval("SELECT count(*) FROM routine_runs WHERE routine_id = $1", routine)
        assert by_index == 200 + written
        assert await migrate(empty_database) == []
    finally:
        await conn.close()


async def _positive(count: Awaitable[int], at_least: int = 1) -> bool:
    return await count >= at_least


async def test_the_runs_undecided_when_batches_began_are_named_by_batches(empty_database: str) -> None:
    """Upgrading: the runs still received when 0010 is applied are put in batches (a thousand
    each); the decided ones are not; runs recorded meanwhile are named too, by the backfill or by
    the trigger. 0011 then drops the index on the status."""
    versions = [version for version, _ in migration_files()]
    first = versions.index("0010_received_batches")
    undone = versions[first : versions.index("0011_drop_received_index") + 1]
    await migrate(empty_database)
    conn = await asyncpg.connect(empty_database)
    try:
        # Back to before 0010: no batches, the index on the status.
        await conn.execute("DELETE FROM schema_migrations WHERE version = ANY($1::text[])", undone)
        await conn.execute(
            "DROP TABLE received_batches;"
            "DROP TRIGGER routine_runs_received_batch ON routine_runs;"
            "DROP FUNCTION routines_note_received_runs();"
            "CREATE INDEX routine_runs_received ON routine_runs (triggered_at) WHERE status = 'received'"
        )
        world = await make_world(conn)
        routine = await make_routine(conn, world)
        rows = await conn.fetch(
            RECORD_RUNS, routine, world.company_id, ["received"] * 2500 + ["skipped"] * 10
        )
        # Runs being recorded as it is applied: one by a transaction open when 0010 begins (the
        # trigger waits for it), one by a statement that comes while 0010 waits (held off by it).
        early, late = await asyncpg.connect(empty_database), await asyncpg.connect(empty_database)
        try:
            early_tx = early.transaction()
            await early_tx.start()
            open_run = await early.fetchval(RECORD_RUNS, routine, world.company_id, ["received"])
            migrating = asyncio.create_task(migrate(empty_database))
            # 0010's lock on routine_runs, waiting for the open transaction.
            waiting = (
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'routine_runs'::regclass"
            )
            await wait_until(lambda: _positive(conn.fetchval(waiting)), timeout=4)
            held_off = asyncio.create_task(
                late.fetchval(RECORD_RUNS, routine, world.company_id, ["received"])
            )
            await wait_until(lambda: _positive(conn.fetchval(waiting), 2), timeout=4)  # both wait
            assert not held_off.done()
            await early_tx.commit()
            assert await migrating == undone
            later_run = await held_off
        finally:
            await early.close()
            await late.close()
        batches = await conn.fetch("SELECT run_ids FROM received_batches ORDER BY id")
        assert sorted(len(b["run_ids"]) for b in batches) == [1, 501, 1000, 1000]
        named = [run for b in batches for run in b["run_ids"]]
        received = [r["id"] for r in rows if r["status"] == "received"]
        assert sorted(named) == sorted([*received, open_run, later_run])
        assert await conn.fetchval("SELECT to_regclass('routine_runs_received')") is None
    finally:
        await conn.close()
