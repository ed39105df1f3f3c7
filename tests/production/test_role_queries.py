"""Every named query a service ships passes Postgres' privilege check under that service's role
(migration 0006, shared/migrations/grants.sql): `EXPLAIN EXECUTE` runs the executor's permission
check without running the query, so a grant missing for any code path shows here, not in
production."""

from __future__ import annotations

import asyncpg
import pytest

from shared.db import load_queries

pytestmark = pytest.mark.production

# The query files each service loads (shared/sql.py: shared/queries.sql for runs, shared/alerts.sql
# for the dispatcher's failure alerts and the API). shared/bootstrap.sql runs as the owner only.
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


async def refusals(db: asyncpg.Connection, role: str, files: list[tuple[str, str]]) -> list[str]:
    """The named queries of `files` that Postgres' privilege check refuses to `role`."""
    refused = []
    for package, filename in files:
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
    return refused


@pytest.mark.parametrize("role", sorted(SERVICE_QUERIES))
async def test_every_query_of_a_service_is_permitted_for_its_role(db: asyncpg.Connection, role: str) -> None:
    assert await refusals(db, role, SERVICE_QUERIES[role]) == []


# The API mints tokens (agent keys, board tokens), so its role holds INSERT on api_tokens; none other.
@pytest.mark.parametrize("role", sorted(set(SERVICE_QUERIES) - {"routines_api"}))
async def test_no_other_service_role_may_mint_an_instance_admin_token(
    db: asyncpg.Connection, role: str
) -> None:
    bootstrap = load_queries("shared", "bootstrap.sql")
    assert len(await refusals(db, role, [("shared", "bootstrap.sql")])) == len(bootstrap) > 0
