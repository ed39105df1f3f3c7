"""Ordered SQL migrations applied under a Postgres advisory lock and recorded in a table."""

from __future__ import annotations

import asyncio
import re
from importlib import resources

import asyncpg

from shared.errors import ConfigurationError
from shared.logging import get_logger

log = get_logger(__name__)

# Arbitrary constant: every `routines migrate` takes this lock, so two at once are serialised.
MIGRATION_LOCK_ID = 0x526F7574696E6573 & 0x7FFFFFFFFFFFFFFF
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# A migration whose first line is this runs outside a transaction, one statement at a time: what
# CREATE/DROP INDEX CONCURRENTLY need, so that a large table is re-indexed without blocking its
# writes. Each of its statements must be safe to run again (a run can be interrupted anywhere).
ONLINE = "-- routines:online"
_RECORD = "INSERT INTO schema_migrations (version) VALUES ($1)"


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) of every migration, in order."""
    folder = resources.files("shared.migrations")
    found = sorted(p.name for p in folder.iterdir() if _NAME.match(p.name))
    return [(name.removesuffix(".sql"), folder.joinpath(name).read_text("utf-8")) for name in found]


def _online_statements(sql: str) -> list[str]:
    """The statements of an online migration: its lines without comments, split at each `;` that
    ends a line (its statements hold no `;` of their own)."""
    text = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [statement.strip() for statement in re.split(r";\s*$", text, flags=re.M) if statement.strip()]


_CONCURRENT_BUILD = re.compile(r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(\w+)", re.IGNORECASE)


async def _run_online(conn: asyncpg.Connection, statement: str) -> None:
    """One statement of an online migration. A concurrent index build whose index exists already
    is the work of an interrupted run: a valid index is kept (not built twice, and never missing
    while it is), an invalid one (the build was cut short) is dropped and built again."""
    built = _CONCURRENT_BUILD.match(statement)
    if built is not None:
        valid = await conn.fetchval(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)", built.group(1)
        )
        if valid:
            return
        if valid is False:
            await conn.execute(f'DROP INDEX CONCURRENTLY "{built.group(1)}"')
    await conn.execute(statement)


def grants_sql() -> str:
    """The repeatable grants of the service roles (shared/migrations/grants.sql)."""
    return resources.files("shared.migrations").joinpath("grants.sql").read_text("utf-8")


async def migrate(dsn: str) -> list[str]:
    """Apply pending migrations; return the versions applied now (empty when up to date)."""
    # No statement timeout for DDL (the database default of 0006 is meant for the services).
    conn = await asyncpg.connect(dsn, server_settings={"statement_timeout": "0"})
    try:
        # Polled, not waited for in one statement: a runner waiting would hold a transaction open,
        # and the one holding the lock may be building an index CONCURRENTLY, which waits for
        # every open transaction to end (a deadlock).
        locked = "SELECT pg_try_advisory_lock($1)"
        while not await conn.fetchval(locked, MIGRATION_LOCK_ID):  # noqa: ASYNC110 - a lock in Postgres
            await asyncio.sleep(0.2)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version text PRIMARY KEY,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            applied = []
            for version, sql in migration_files():
                if version in done:
                    continue
                if sql.startswith(ONLINE):
                    for statement in _online_statements(sql):
                        await _run_online(conn, statement)
                    await conn.execute(_RECORD, version)
                else:
                    async with conn.transaction():
                        await conn.execute(sql)
                        await conn.execute(_RECORD, version)
                log.info("migration applied", version=version)
                applied.append(version)
            # Grants follow every table, also those of migrations written after 0006.
            async with conn.transaction():
                await conn.execute(grants_sql())
            return applied
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    finally:
        await conn.close()


class SchemaTooOld(ConfigurationError):
    """The database lacks migrations this release needs."""


async def missing_migrations(conn: asyncpg.Connection) -> list[str]:
    """Migrations this code ships that the database has not applied (all of them on an empty one)."""
    known = [version for version, _ in migration_files()]
    if not await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
        return known
    done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    return [version for version in known if version not in done]


async def check_schema(conn: asyncpg.Connection) -> None:
    """Raise SchemaTooOld, naming what is missing, when the schema is older than this code.
    A newer schema is fine: migrations are additive, so the previous release keeps working."""
    missing = await missing_migrations(conn)
    if missing:
        raise SchemaTooOld(
            "database schema is older than this release: missing migrations "
            + ", ".join(missing)
            + "; run `routines migrate` (the migration Job) first"
        )


async def wait_for_schema(dsn: str, timeout: float, interval: float = 2.0) -> list[str]:
    """Poll until the schema has every migration this code ships (the migration Job of this
    release has run); return what is still missing when `timeout` runs out (empty: ready)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    missing = [version for version, _ in migration_files()]
    while True:
        try:
            conn = await asyncpg.connect(dsn, statement_cache_size=0, timeout=5)
            try:
                missing = await missing_migrations(conn)
            finally:
                await conn.close()
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("waiting for the database", error=repr(exc))
        if not missing:
            return []
        if loop.time() >= deadline:
            return missing
        log.info("waiting for migrations", missing=missing)
        await asyncio.sleep(interval)
