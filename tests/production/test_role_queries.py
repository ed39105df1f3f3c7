"""Every named query a service ships passes Postgres' privilege check under that service's role
(migration 0006, shared/migrations/grants.sql): `EXPLAIN EXECUTE` runs the executor's permission
check without running the query, so a grant missing for any code path shows here, not in
production."""

from __future__ import annotations

import asyncpg
import pytest

from shared.db import load_queries

pytestmark = pytest.mark.production

# The query files each service loads (shared/runs.py: shared/queries.sql; shared/alerts.py:
# shared/alerts.sql, used by the dispatcher's failure alerts and the API).
SERVICE_QUERIES = {
    "routines_api": [
        ("routines_api", "queries.sql"),
        ("routines_api", "features.sql"),
        ("routines_api.console", "queries.sql"),
        ("shared", "queries.sql"),
        ("shared", "alerts.sql"),
    ],
    "routines_dispatcher": [("routines_dispatcher", "queries.sql"), ("shared", "alerts.sql")],
    "routines_scheduler": [("routines_scheduler", "queries.sql")],
    "routines_gateway": [("routines_gateway", "queries.sql"), ("shared", "queries.sql")],
}


@pytest.mark.parametrize("role", sorted(SERVICE_QUERIES))
async def test_every_query_of_a_service_is_permitted_for_its_role(db: asyncpg.Connection, role: str) -> None:
    refused = []
    for package, filename in SERVICE_QUERIES[role]:
        for name, sql in load_queries(package, filename).items():
            async with db.transaction():
                await db.execute(f"SET LOCAL ROLE {role}")
                await db.execute(f"PREPARE q AS {sql}")
                types = await db.fetchval(
                    "SELECT parameter_types FROM pg_prepared_statements WHERE name = 'q'"
                )
                args = ", ".join("NULL" for _ in types)
                try:
                    async with db.transaction():
                        await db.execute(f"EXPLAIN EXECUTE q({args})" if types else "EXPLAIN EXECUTE q")
                except asyncpg.InsufficientPrivilegeError as exc:
                    refused.append(f"{package}/{filename}:{name}: {exc}")
                await db.execute("DEALLOCATE q")
    assert refused == []
