"""Migrations: schema from nothing, idempotent re-runs, concurrent runners."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from shared.migrate import migrate, migration_files
from tests.databases import DbFactory


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
