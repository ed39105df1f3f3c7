"""Every named query of every package is valid SQL against the migrated schema: each one is
PREPAREd (parsed, planned, its parameter types inferred) without being run."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from shared.db import load_queries

ROOT = Path(__file__).resolve().parents[2]


def _package_of(path: Path) -> str:
    """The importable package holding a .sql file (services/api/routines_api/x.sql → routines_api)."""
    parts = path.relative_to(ROOT).parent.parts
    if parts[0] == "services":
        parts = parts[2:]  # services/<deployable>/<package>/...
    return ".".join(parts)


def named_queries() -> dict[str, str]:
    files = [*ROOT.glob("shared/*.sql"), *ROOT.glob("services/*/routines_*/**/*.sql")]
    queries = {}
    for path in sorted(files):
        for name, sql in load_queries(_package_of(path), path.name).items():
            queries[f"{path.relative_to(ROOT)}:{name}"] = sql
    return queries


async def test_every_named_query_prepares(db: asyncpg.Connection) -> None:
    queries = named_queries()
    assert len(queries) > 100  # every package's files were found
    failures = {}
    for name, sql in queries.items():
        try:
            await db.prepare(sql)
        except asyncpg.PostgresError as exc:
            failures[name] = f"{type(exc).__name__}: {exc}"
    assert not failures, "\n".join(f"{n}: {e}" for n, e in failures.items())
