"""Least-privilege database roles (migration 0006) and the schema-version check at start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from shared.migrate import migrate, missing_migrations
from tests.factories import make_routine, make_world
from tests.production.servers import SERVICE_ROLES
from tests.support import Stack, start_service

pytestmark = pytest.mark.production

# (role, statement) pairs a service must NOT be able to run: each is outside what its code needs.
FORBIDDEN = [
    ("routines_gateway", "UPDATE routines SET title = 'x'"),
    ("routines_gateway", "DELETE FROM routine_runs"),
    ("routines_gateway", "UPDATE webhook_secrets SET expires_at = now()"),
    ("routines_gateway", "SELECT count(*) FROM api_tokens"),
    ("routines_scheduler", "SELECT count(*) FROM webhook_secrets"),
    ("routines_scheduler", "UPDATE routine_runs SET status = 'failed'"),
    ("routines_scheduler", "SELECT count(*) FROM issues"),
    ("routines_dispatcher", "SELECT count(*) FROM webhook_secrets"),
    ("routines_dispatcher", "SELECT count(*) FROM api_tokens"),
    ("routines_dispatcher", "DELETE FROM issues"),
    ("routines_api", "INSERT INTO schema_migrations (version) VALUES ('9999_x')"),
    ("routines_api", "CREATE TABLE sneaky (id int)"),
    ("routines_dispatcher", "ALTER TABLE routines ADD COLUMN x int"),
    ("routines_gateway", "SELECT count(*) FROM console_sessions"),
    ("routines_dispatcher", "SELECT count(*) FROM console_sessions"),
    ("routines_scheduler", "SELECT count(*) FROM routine_revisions"),
    ("routines_dispatcher", "DELETE FROM routine_activity"),
    # batches of received runs are written by a trigger as the schema's owner (0010), never directly
    ("routines_gateway", "INSERT INTO received_batches (run_ids) VALUES ('{}')"),
    ("routines_scheduler", "SELECT count(*) FROM received_batches"),
    ("routines_api", "INSERT INTO received_batches (run_ids, run_count) VALUES ('{}', 0)"),
    ("routines_api", "DELETE FROM received_batches"),
    ("routines_gateway", "SELECT routines_note_received_runs()"),
    ("routines_dispatcher", "UPDATE received_batches SET run_ids = '{}' WHERE false"),
]
# What each service needs (a sample of its real statements' privileges).
ALLOWED = [
    ("routines_gateway", "SELECT count(*) FROM webhook_secrets"),
    ("routines_gateway", "SELECT count(*) FROM routine_runs"),
    ("routines_scheduler", "SELECT count(*) FROM (SELECT id FROM routine_triggers FOR UPDATE) t"),
    ("routines_dispatcher", "SELECT count(*) FROM (SELECT id FROM routines FOR NO KEY UPDATE) r"),
    ("routines_dispatcher", "UPDATE issues SET updated_at = now() WHERE false"),
    ("routines_api", "DELETE FROM webhook_secrets WHERE false"),
    ("routines_api", "SELECT count(*) FROM schema_migrations"),
    ("routines_api", "DELETE FROM console_sessions WHERE false"),
    # failure alerts in the dispatcher: auto-pause parks schedule triggers, logs activity
    ("routines_dispatcher", "UPDATE routine_triggers SET next_run_at = NULL WHERE false"),
    ("routines_dispatcher", "INSERT INTO routine_activity SELECT * FROM routine_activity WHERE false"),
    # the sweeper and the runs-received gauge
    ("routines_dispatcher", "DELETE FROM received_batches WHERE false"),
    (
        "routines_dispatcher",
        "SELECT count(*) FROM (SELECT id FROM received_batches FOR UPDATE SKIP LOCKED) b",
    ),
]


async def test_service_roles_are_refused_what_they_do_not_need(db: asyncpg.Connection) -> None:
    for role, statement in FORBIDDEN:
        async with db.transaction():
            await db.execute(f"SET LOCAL ROLE {role}")
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match=r"permission denied|must be owner"):
                await db.execute(statement)


async def test_service_roles_may_do_what_they_need(db: asyncpg.Connection) -> None:
    for role, statement in ALLOWED:
        async with db.transaction():
            await db.execute(f"SET LOCAL ROLE {role}")
            await db.execute(statement)


async def test_a_role_that_records_runs_needs_no_privilege_on_their_batches(db: asyncpg.Connection) -> None:
    """The trigger of 0010 writes the batch as the schema's owner: a service recording runs is not
    refused for want of a grant on received_batches — as in the moment between 0010's commit and
    the grants applied after the last migration, when no service role has one."""
    world = await make_world(db)
    routine = await make_routine(db, world)
    for role in ("routines_gateway", "routines_scheduler", "routines_api"):
        async with db.transaction():
            await db.execute(f"REVOKE ALL ON received_batches FROM {role}")
            await db.execute(f"SET LOCAL ROLE {role}")
            run = await db.fetchval(
                "INSERT INTO routine_runs (routine_id, company_id, source) VALUES ($1, $2, 'api') RETURNING id",
                routine,
                world.company_id,
            )
            await db.execute("RESET ROLE")
            assert (
                await db.fetchval("SELECT count(*) FROM received_batches WHERE $1 = ANY(run_ids)", run) == 1
            )


async def test_a_temporary_table_cannot_stand_in_for_the_batches(db: asyncpg.Connection) -> None:
    """The trigger of 0010 runs as the schema's owner: a service role's temporary table of the same
    name must not receive its batch (the run would be hidden from the sweeper, and a trigger of the
    role's own on that table would run as the owner)."""
    world = await make_world(db)
    routine = await make_routine(db, world)
    async with db.transaction():
        await db.execute("SET LOCAL ROLE routines_gateway")
        await db.execute("CREATE TEMP TABLE received_batches (run_ids uuid[], run_count int)")
        run = await db.fetchval(
            "INSERT INTO routine_runs (routine_id, company_id, source) VALUES ($1, $2, 'webhook') RETURNING id",
            routine,
            world.company_id,
        )
        assert await db.fetchval("SELECT count(*) FROM pg_temp.received_batches") == 0
        await db.execute("RESET ROLE")
        assert (
            await db.fetchval("SELECT count(*) FROM public.received_batches WHERE $1 = ANY(run_ids)", run)
            == 1
        )


async def test_tables_of_later_migrations_get_grants(db: asyncpg.Connection, database_url: str) -> None:
    """0003-0005 (other features) and any later table: `routines migrate` re-applies the grants."""
    await db.execute("CREATE TABLE feature_from_a_later_migration (id int)")
    await migrate(database_url)  # nothing pending; the grants are applied again
    for role in SERVICE_ROLES.values():
        async with db.transaction():
            await db.execute(f"SET LOCAL ROLE {role}")
            await db.execute("INSERT INTO feature_from_a_later_migration VALUES (1)")


def _wait_schema(stack: Stack) -> subprocess.CompletedProcess[str]:
    """`routines wait-schema` as the init containers run it, for half a second at most."""
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "wait-schema", "--timeout", "0.5"],
        env={**os.environ, **stack.env()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_service_refuses_to_start_on_an_older_schema(
    stack: Stack, db: asyncpg.Connection, tmp_path: Path
) -> None:
    await db.execute("DELETE FROM schema_migrations WHERE version = '0006_roles'")
    assert await missing_migrations(db) == ["0006_roles"]
    result = subprocess.run(
        [sys.executable, "-m", "shared.cli", "run-dispatcher"],
        env={**os.environ, **stack.env(http_port=0)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "database schema is older than this release: missing migrations 0006_roles" in result.stderr
    assert "routines migrate" in result.stderr
    # The init container of every Deployment waits for the migration Job the same way.
    waited = _wait_schema(stack)
    assert waited.returncode == 1
    assert "schema still lacks 0006_roles" in waited.stderr
    # After the migration (0006 is repeatable), it starts.
    await migrate(stack.database_url)
    assert await missing_migrations(db) == []
    start_service("run-dispatcher", stack.env(), tmp_path).stop()
    waited = _wait_schema(stack)
    assert waited.returncode == 0, waited.stderr
