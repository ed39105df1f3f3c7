"""Ordered SQL migrations applied under a Postgres advisory lock and recorded in a table."""

from __future__ import annotations

import re
from importlib import resources

import asyncpg

from shared.logging import get_logger

log = get_logger(__name__)

# Arbitrary constant: every `routines migrate` takes this lock, so two at once are serialised.
MIGRATION_LOCK_ID = 0x526F7574696E6573 & 0x7FFFFFFFFFFFFFFF
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) of every migration, in order."""
    folder = resources.files("shared.migrations")
    found = sorted(p.name for p in folder.iterdir() if _NAME.match(p.name))
    return [(name.removesuffix(".sql"), folder.joinpath(name).read_text("utf-8")) for name in found]


async def migrate(dsn: str) -> list[str]:
    """Apply pending migrations; return the versions applied now (empty when up to date)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
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
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
                log.info("migration applied", version=version)
                applied.append(version)
            return applied
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    finally:
        await conn.close()
