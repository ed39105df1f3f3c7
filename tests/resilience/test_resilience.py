"""Nothing lost, nothing twice — under SIGKILLs, a NATS outage and a Postgres restart.

Real processes (API, 2 × gateway, 2 × scheduler, 2 × dispatcher), real Postgres and NATS.
`ROUTINES_CHAOS_SECONDS` sets the length of the kill test (default 120).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from shared.devservers import NatsServer, PostgresServer
from tests.resilience.chaos import (
    Fleet,
    Tally,
    mixed_load,
    replay_schedules,
    setup_world,
    verify_database,
    wait_all_decided,
)
from tests.support import Stack

pytestmark = pytest.mark.resilience

SETTINGS: dict[str, Any] = {
    "tick_interval_sec": 0.2,
    "misfire_grace_sec": 3600,
    "sweep_after_sec": 3,
    "sweep_interval_sec": 1,
    "manual_run_wait_sec": 0.5,
    "db_acquire_timeout_sec": 2,
    "rate_limit_trigger_per_sec": 1000,
    "rate_limit_client_per_sec": 5000,
}


async def test_random_sigkills_under_mixed_load(stack: Stack, tmp_path: Path, db: asyncpg.Connection) -> None:
    fleet = Fleet(stack, tmp_path, **SETTINGS)
    try:
        admin, hooks, _ = await setup_world(stack, fleet.api)
        stop = asyncio.Event()
        chaos = asyncio.create_task(fleet.chaos(stop))
        schedules = asyncio.create_task(replay_schedules(db, stop))
        tally = Tally()
        await mixed_load(
            fleet, admin, hooks, float(os.environ.get("ROUTINES_CHAOS_SECONDS", "120")), 40, tally
        )
        stop.set()
        await asyncio.gather(chaos, schedules)
        fleet.ensure_all_running()
        await wait_all_decided(db)
        summary = await verify_database(db, tally, hooks)
        assert summary["accepted"] == summary["sent"]
        assert fleet.kills >= 5
        assert await db.fetchval("SELECT count(*) FROM routine_runs WHERE source = 'schedule'") > 0
    finally:
        fleet.stop()


async def test_nats_down_thirty_seconds_under_load(
    stack: Stack, nats_server: NatsServer, tmp_path: Path, db: asyncpg.Connection
) -> None:
    fleet = Fleet(stack, tmp_path, **SETTINGS)
    try:
        admin, hooks, _ = await setup_world(stack, fleet.api)
        tally = Tally()
        load = asyncio.create_task(mixed_load(fleet, admin, hooks, 40, 30, tally))
        await asyncio.sleep(5)
        nats_server.stop()
        await asyncio.sleep(30)
        nats_server.start()
        await load
        await wait_all_decided(db)
        summary = await verify_database(db, tally, hooks)
        assert summary["accepted"] == summary["sent"]
    finally:
        fleet.stop()


async def test_postgres_restart_under_load(
    stack: Stack, postgres_server: PostgresServer, tmp_path: Path, db_url_conn: asyncpg.Connection
) -> None:
    """503 while Postgres is down (never 500, never a hang past the client's 15 s), then recovery."""
    fleet = Fleet(stack, tmp_path, **SETTINGS)
    try:
        admin, hooks, _ = await setup_world(stack, fleet.api)
        tally = Tally()
        load = asyncio.create_task(mixed_load(fleet, admin, hooks, 30, 30, tally))
        await asyncio.sleep(5)
        await db_url_conn.close()
        postgres_server.stop()
        await asyncio.sleep(8)
        postgres_server.start()
        await load
        db = await asyncpg.connect(stack.database_url)
        try:
            await wait_all_decided(db)
            from shared.db import init_connection

            await init_connection(db)
            summary = await verify_database(db, tally, hooks)
        finally:
            await db.close()
        assert summary["accepted"] == summary["sent"]
        assert tally.statuses[503] > 0  # the outage was seen, and answered properly
        assert tally.slowest < 15
    finally:
        fleet.stop()


@pytest.fixture
async def db_url_conn(db: asyncpg.Connection) -> asyncpg.Connection:
    return db
