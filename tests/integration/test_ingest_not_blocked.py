"""Ingest never waits on a decision (DESIGN, run pipeline step 3).

A dispatcher transaction is opened with the dispatcher's own code (`decide_runs`: the routine row
lock, the run row updates, the routine touch) and left open — a dispatcher paused mid-transaction
(SIGSTOP, a GC pause, a partition to Postgres). While it is open, every way of recording a run
must complete: a new webhook fire, a retried webhook fire whose original run is the one being
decided, a manual run and its retry, and a scheduler tick. "Blocked" is not judged by time: while
the request is in flight, `pg_blocking_pids` is polled, and any backend waiting on the paused
transaction fails the test at once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from routines_dispatcher.decide import decide_runs
from routines_scheduler.sql import QUERIES as SCHEDULER_QUERIES
from routines_scheduler.ticker import NO_LOWER_BOUND, Scheduler
from shared.db import Database
from shared.settings import SchedulerSettings
from tests.integration import api_client
from tests.integration.api_client import Client, Tenant, call, make_routine, make_tenant
from tests.integration.test_gateway import gateway_app
from tests.support import Stack, never_waits_on, served, service_connections

T = TypeVar("T")


@pytest.fixture
async def gateway(stack: Stack) -> AsyncIterator[Client]:
    async with TestClient(served(gateway_app(stack, trigger_cache_ttl_sec=60))) as client:
        yield client


class PausedDecision:
    """A dispatcher transaction that has decided some runs and not committed."""

    def __init__(self, pid: int) -> None:
        self.pid = pid


@asynccontextmanager
async def paused_decision(database: Database, run_ids: list[uuid.UUID]) -> AsyncIterator[PausedDecision]:
    async with database.transaction() as conn:
        decisions = await decide_runs(conn, run_ids)
        assert {d.run_id for d in decisions} == set(run_ids)  # it really holds them
        yield PausedDecision(int(await conn.fetchval("SELECT pg_backend_pid()")))


async def not_blocked_by(db: asyncpg.Connection, paused: PausedDecision, work: Awaitable[T]) -> T:
    """Run `work`; fail as soon as any backend waits on the paused decision's transaction."""
    return await never_waits_on(db, paused.pid, work, "ingest waits on the paused transaction")


async def _routine_with_hook(api: Client, admin: str, policy: str) -> tuple[Tenant, dict[str, Any], str, str]:
    tenant = await make_tenant(api, admin, "A")
    routine = await make_routine(api, tenant, concurrencyPolicy=policy)
    trigger = await api_client.make_trigger(
        api, tenant, routine["id"], {"kind": "webhook", "signingMode": "bearer"}
    )
    return tenant, routine, f"/api/routine-triggers/public/{trigger['publicId']}/fire", trigger["secret"]


async def _fire(gateway: Client, path: str, secret: str, key: str) -> tuple[int, dict[str, Any]]:
    resp = await gateway.post(
        path,
        data=b'{"k": "%s"}' % key.encode(),
        headers={
            "Authorization": f"Bearer {secret}",
            "Content-Type": "application/json",
            "Idempotency-Key": key,
        },
    )
    return resp.status, await resp.json()


@pytest.mark.parametrize("policy", ["coalesce_if_active", "always_enqueue"])
async def test_webhook_fires_are_not_blocked_by_a_paused_decision(
    api: Client,
    gateway: Client,
    admin_token: str,
    db: asyncpg.Connection,
    dispatcher_db: Database,
    policy: str,
) -> None:
    _, routine, path, secret = await _routine_with_hook(api, admin_token, policy)
    status, first = await _fire(gateway, path, secret, "first")
    assert status == 202, first
    first_run = uuid.UUID(first["runId"])
    async with paused_decision(dispatcher_db, [first_run]) as paused:
        # A new fire to the routine being decided (the foreign key's FOR KEY SHARE on the routine).
        status, new = await not_blocked_by(db, paused, _fire(gateway, path, secret, "second"))
        assert status == 202, new
        row = await db.fetchrow(
            "SELECT routine_id, status FROM routine_runs WHERE id = $1", uuid.UUID(new["runId"])
        )
        assert (str(row["routine_id"]), row["status"]) == (routine["id"], "received")  # committed already
        # A retry of the very run being decided (the unique index on the idempotency key).
        status, retry = await not_blocked_by(db, paused, _fire(gateway, path, secret, "first"))
        assert status == 200, retry
        assert (retry["runId"], retry["duplicate"]) == (str(first_run), True)
    # Once the decision commits, the first run is decided and the second still waits for its own.
    statuses = {
        r["id"]: r["status"] for r in await db.fetch("SELECT id::text AS id, status FROM routine_runs")
    }
    assert statuses == {str(first_run): "issue_created", new["runId"]: "received"}


async def test_manual_runs_are_not_blocked_by_a_paused_decision(
    api: Client, admin_token: str, db: asyncpg.Connection, dispatcher_db: Database
) -> None:
    tenant = await make_tenant(api, admin_token, "A")
    routine = await make_routine(api, tenant)
    run_path = f"/api/routines/{routine['id']}/run"
    first = await call(api, "POST", run_path, tenant.board, {"idempotencyKey": "m1"}, 202)
    async with paused_decision(dispatcher_db, [uuid.UUID(first["id"])]) as paused:
        new = await not_blocked_by(
            db, paused, call(api, "POST", run_path, tenant.board, {"idempotencyKey": "m2"})
        )
        assert new["status"] == "received" and new["id"] != first["id"], new
        again = await not_blocked_by(
            db, paused, call(api, "POST", run_path, tenant.board, {"idempotencyKey": "m1"})
        )
        assert again["id"] == first["id"], again
        plain = await not_blocked_by(db, paused, call(api, "POST", run_path, tenant.board, {}))
        assert plain["status"] == "received", plain
    assert (
        await db.fetchval("SELECT count(*) FROM routine_runs WHERE routine_id = $1", uuid.UUID(routine["id"]))
        == 3
    )


async def test_schedule_slots_are_not_blocked_by_a_paused_decision(
    api: Client, stack: Stack, admin_token: str, db: asyncpg.Connection, dispatcher_db: Database
) -> None:
    tenant = await make_tenant(api, admin_token, "A")
    routine = await make_routine(api, tenant)
    trigger = await api_client.make_trigger(
        api, tenant, routine["id"], {"kind": "schedule", "cronExpression": "* * * * *"}
    )
    trigger_id = uuid.UUID(trigger["id"])
    replay_from = (
        "UPDATE routine_triggers SET next_run_at = date_trunc('minute', now()) - interval '1 minute'"
    )
    settings = SchedulerSettings(
        database_url=stack.database_url, nats_url=stack.nats_url, misfire_grace_sec=3600
    )
    async with service_connections(settings, "scheduler") as (database, bus):
        scheduler = Scheduler(settings, database, bus, asyncio.Event())
        await db.execute(replay_from + " WHERE id = $1", trigger_id)
        assert await scheduler.tick() >= 1
        slots = [
            r["id"] for r in await db.fetch("SELECT id FROM routine_runs WHERE trigger_id = $1", trigger_id)
        ]
        async with paused_decision(dispatcher_db, slots) as paused:
            # Earlier slots (new) and the ones already recorded and being decided, again.
            await db.execute(replay_from.replace("'1 minute'", "'3 minutes'") + " WHERE id = $1", trigger_id)
            await not_blocked_by(db, paused, scheduler.tick())
            per_slot = await db.fetch(
                "SELECT scheduled_for, count(*) AS n, min(status) AS status FROM routine_runs"
                " WHERE trigger_id = $1 GROUP BY scheduled_for",
                trigger_id,
            )
            assert all(r["n"] == 1 for r in per_slot), per_slot
            assert len(per_slot) > len(slots), per_slot  # the new slots were recorded meanwhile


async def test_manual_run_naming_a_schedule_trigger_is_not_blocked_by_a_paused_tick(
    api: Client, stack: Stack, admin_token: str, db: asyncpg.Connection, dispatcher_db: Database
) -> None:
    """The scheduler's claim on a trigger row (a tick frozen mid-transaction) must not block a
    manual run that names that trigger: the run's foreign key takes FOR KEY SHARE on it."""
    tenant = await make_tenant(api, admin_token, "A")
    routine = await make_routine(api, tenant)
    trigger = await api_client.make_trigger(
        api, tenant, routine["id"], {"kind": "schedule", "cronExpression": "* * * * *"}
    )
    await db.execute(
        "UPDATE routine_triggers SET next_run_at = now() - interval '1 minute' WHERE id = $1::uuid",
        trigger["id"],
    )
    async with dispatcher_db.transaction() as conn:
        claimed = await conn.fetch(
            SCHEDULER_QUERIES["claim_due_triggers"], datetime.now(UTC), 10, NO_LOWER_BOUND
        )
        assert [str(r["id"]) for r in claimed] == [trigger["id"]]
        paused = PausedDecision(int(await conn.fetchval("SELECT pg_backend_pid()")))
        run = await not_blocked_by(
            db,
            paused,
            call(
                api, "POST", f"/api/routines/{routine['id']}/run", tenant.board, {"triggerId": trigger["id"]}
            ),
        )
        assert run["status"] == "received" and run["triggerId"] == trigger["id"], run
