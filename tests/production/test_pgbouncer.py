"""Every service through PgBouncer in transaction pooling mode, each as its own database role:
the whole pipeline (gateway fire, API manual run, scheduler fire → dispatcher → issue)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from shared.bootstrap import create_instance_admin_token
from tests.production.conftest import database_name
from tests.production.servers import SERVICE_ROLES, PgBouncer
from tests.support import ServiceProcess, Stack, start_service, wait_until

pytestmark = pytest.mark.production


def service_env(stack: Stack, bouncer: PgBouncer, service: str, **extra: object) -> dict[str, str]:
    database = database_name(stack.database_url)
    return {
        **stack.env(db_pooler_mode="transaction", **extra),
        "ROUTINES_DATABASE_URL": bouncer.dsn_for(database, SERVICE_ROLES[service]),
    }


async def _call(
    http: aiohttp.ClientSession, method: str, url: str, token: str, body: object | None = None
) -> tuple[int, dict[str, object]]:
    async with http.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status, await resp.json()


async def test_pipeline_through_pgbouncer_transaction_pooling_with_service_roles(
    stack: Stack, pgbouncer: PgBouncer, tmp_path: Path, db: asyncpg.Connection
) -> None:
    admin = await create_instance_admin_token(stack.database_url, "prod")
    log_before = len(pgbouncer.log())
    env = {name: service_env(stack, pgbouncer, name, sweep_after_sec=600) for name in SERVICE_ROLES}
    services: list[ServiceProcess] = []
    try:
        for name in SERVICE_ROLES:
            services.append(start_service(name, env[name], tmp_path))
        api, gateway = services[0], services[1]
        async with aiohttp.ClientSession() as http:
            _, company = await _call(http, "POST", api.url + "/api/companies", admin, {"name": "Bouncer"})
            cid = company["id"]
            _, agent = await _call(
                http, "POST", f"{api.url}/api/companies/{cid}/agents", admin, {"name": "a"}
            )
            _, project = await _call(
                http, "POST", f"{api.url}/api/companies/{cid}/projects", admin, {"name": "p"}
            )
            status, routine = await _call(
                http,
                "POST",
                f"{api.url}/api/companies/{cid}/routines",
                admin,
                {
                    "title": "Pooled",
                    "assigneeAgentId": agent["agent"]["id"],
                    "projectId": project["id"],
                    "concurrencyPolicy": "always_enqueue",
                },
            )
            assert status == 201, routine
            rid = routine["id"]
            status, hook = await _call(
                http, "POST", f"{api.url}/api/routines/{rid}/triggers", admin, {"kind": "webhook"}
            )
            assert status == 201, hook

            # API manual runs, concurrently: more clients than PgBouncer has server connections (4),
            # so statements of one client connection land on different server connections.
            manual = await asyncio.gather(
                *(
                    _call(http, "POST", f"{api.url}/api/routines/{rid}/run", admin, {"payload": {"n": i}})
                    for i in range(20)
                )
            )
            assert {s for s, _ in manual} == {202}, manual

            # Gateway fires, concurrently.
            async def fire(i: int) -> int:
                async with http.post(
                    f"{gateway.url}/api/routine-triggers/public/{hook['publicId']}/fire",
                    json={"n": i},
                    headers={"Authorization": f"Bearer {hook['secret']}"},
                ) as resp:
                    return resp.status

            fired = await asyncio.gather(*(fire(i) for i in range(30)))
            assert set(fired) == {202}, fired

            # A scheduler fire: a schedule trigger made through the API, then made due now.
            status, schedule = await _call(
                http,
                "POST",
                f"{api.url}/api/routines/{rid}/triggers",
                admin,
                {"kind": "schedule", "cronExpression": "0 3 * * *", "timezone": "UTC"},
            )
            assert status == 201, schedule
            await db.execute(
                "UPDATE routine_triggers SET next_run_at = now() WHERE id = $1::uuid", schedule["id"]
            )

            async def all_decided() -> bool:
                rows = await db.fetch(
                    "SELECT source, count(*) FROM routine_runs WHERE status = 'issue_created' GROUP BY 1"
                )
                counts: dict[str, int] = {r["source"]: r["count"] for r in rows}
                return (
                    counts.get("api", 0) + counts.get("manual", 0) == 20
                    and counts.get("webhook") == 30
                    and counts.get("schedule") == 1
                )

            # sweep_after_sec=600: these were decided through JetStream, each by the dispatcher's role.
            await wait_until(all_decided, timeout=60, interval=0.2)
            assert await db.fetchval("SELECT count(*) FROM routine_runs") == 51
            assert await db.fetchval("SELECT count(DISTINCT origin_run_id) FROM issues") == 51
            assert await db.fetchval("SELECT count(*) FROM issues") == 51

        # Every service's sessions really went through PgBouncer as its own role.
        for service in services:
            assert '"level": "error"' not in service.logs(), service.logs()[-3000:]
        logins = pgbouncer.log()[log_before:]
        database = database_name(stack.database_url)
        for role in SERVICE_ROLES.values():
            assert f"login attempt: db={database} user={role} " in logins, logins[-3000:]
        assert "unsupported startup parameter" not in logins
    finally:
        for service in services:
            service.kill()


async def test_role_timeouts_hold_behind_pgbouncer(stack: Stack, pgbouncer: PgBouncer) -> None:
    """Timeouts cannot be startup parameters behind a transaction pooler: the role defaults of
    migration 0006 give every server connection the same values."""
    database = database_name(stack.database_url)
    for role in SERVICE_ROLES.values():
        conn = await asyncpg.connect(pgbouncer.dsn_for(database, role), statement_cache_size=0)
        try:
            async with conn.transaction():
                assert await conn.fetchval("SHOW statement_timeout") == "15s"
                assert await conn.fetchval("SHOW lock_timeout") == "5s"
                assert await conn.fetchval("SHOW idle_in_transaction_session_timeout") == "30s"
                assert await conn.fetchval("SELECT current_user") == role
        finally:
            await conn.close()


async def test_timeouts_as_startup_parameters_are_refused_by_pgbouncer(
    stack: Stack, pgbouncer: PgBouncer
) -> None:
    """Why pooler mode exists: what the services sent before (shared/db.py) does not connect."""
    database = database_name(stack.database_url)
    with pytest.raises(asyncpg.PostgresError, match="unsupported startup parameter"):
        await asyncpg.connect(
            pgbouncer.dsn_for(database, "routines_api"), server_settings={"statement_timeout": "15000"}
        )
