"""Fixtures for the routine-feature tests: the API in-process with a real dispatcher deciding runs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from routines_dispatcher.worker import Dispatcher
from shared.settings import DispatcherSettings
from tests.integration.api_client import Client, call
from tests.support import Stack, service_connections, wait_until


@pytest.fixture
def api_settings() -> dict[str, Any]:
    """Manual runs wait up to 2 s for the dispatcher to decide them."""
    return {"manual_run_wait_sec": 2}


@pytest.fixture
async def dispatcher(stack: Stack) -> AsyncIterator[Dispatcher]:
    """A real dispatcher (consumer and sweeper) in this process, deciding every run recorded."""
    settings = DispatcherSettings(
        database_url=stack.database_url, nats_url=stack.nats_url, sweep_after_sec=0.5, sweep_interval_sec=0.2
    )
    async with service_connections(settings, "test-dispatcher") as (database, bus):
        stopping = asyncio.Event()
        dispatcher = Dispatcher(settings, database, bus, stopping)
        tasks = [asyncio.create_task(dispatcher.consume()), asyncio.create_task(dispatcher.sweep())]
        yield dispatcher
        stopping.set()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)


async def run_status(db: asyncpg.Connection, run_id: str) -> str:
    return str(await db.fetchval("SELECT status FROM routine_runs WHERE id = $1::uuid", run_id))


async def decided(db: asyncpg.Connection, run_id: str) -> dict[str, Any]:
    """Wait until the dispatcher decided the run; return its row."""

    async def check() -> dict[str, Any] | None:
        row = await db.fetchrow("SELECT * FROM routine_runs WHERE id = $1::uuid", run_id)
        return dict(row) if row is not None and row["status"] != "received" else None

    result: dict[str, Any] = await wait_until(check)
    return result


async def get_json(client: Client, path: str, token: str, status: int = 200) -> tuple[Any, dict[str, str]]:
    """GET returning the JSON body and the headers."""
    resp = await client.get(path, headers={"Authorization": f"Bearer {token}"})
    body = await resp.json()
    assert resp.status == status, (path, resp.status, body)
    return body, dict(resp.headers)


__all__ = ["api_settings", "call", "decided", "dispatcher", "get_json", "run_status"]
