"""Postgres terminating a service's connections (failover, pg_terminate_backend, a pooler restart)
is a transient outage: the pool answers ServiceUnavailable at worst, never an internal error that
kills a worker loop (it crashed the run-dispatcher's sweeper, and so the whole service)."""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg

from shared.db import RETRYABLE_ERRORS, Database
from shared.errors import ServiceUnavailable
from shared.settings import DispatcherSettings


async def test_connections_terminated_while_in_use_surface_only_as_service_unavailable(
    database_url: str, db: asyncpg.Connection
) -> None:
    database = Database(DispatcherSettings(database_url=database_url, db_pool_min=4, db_pool_max=4), "victim")
    await database.open()
    outcomes: Counter[str] = Counter()
    unexpected: list[BaseException] = []
    stop = asyncio.Event()

    async def worker() -> None:
        while not stop.is_set():
            try:
                async with database.connection() as conn:
                    await conn.fetchval("SELECT 1")
                outcomes["ok"] += 1
            except ServiceUnavailable:
                outcomes["unavailable"] += 1
            except Exception as exc:  # what a worker loop would not survive
                unexpected.append(exc)
            await asyncio.sleep(0.002)

    workers = [asyncio.create_task(worker()) for _ in range(8)]
    terminated = 0
    try:
        for _ in range(60):
            terminated += await db.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'victim'"
            )
            await asyncio.sleep(0.03)
    finally:
        stop.set()
        await asyncio.gather(*workers)
    try:
        assert terminated > 0
        assert outcomes["unavailable"] > 0  # the storm did hit queries in use
        assert [repr(e) for e in unexpected][:5] == []
        assert all(isinstance(e, RETRYABLE_ERRORS) for e in unexpected)
        # And the pool recovers: no poisoned connection left behind.
        for _ in range(20):
            async with database.connection() as conn:
                assert await conn.fetchval("SELECT 1") == 1
    finally:
        await database.close()
