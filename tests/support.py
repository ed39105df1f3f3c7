"""Test helpers: real servers, real service processes, log capture."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

import aiohttp
import asyncpg
import nats
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.web_runner import BaseRunner

from shared.bus import Bus
from shared.db import Database
from shared.devservers import free_port, wait_for_port
from shared.fastpath import ServiceRunner
from shared.lifecycle import runner_options
from shared.processes import (
    RUNNING,
    ServiceDied,
    ServiceProcess,
    Stack,
    start_service,
    stop_all_processes,
)
from shared.settings import CommonSettings


class Server(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


ServerT = TypeVar("ServerT", bound=Server)
T = TypeVar("T")


async def never_waits_on(db: asyncpg.Connection, pid: int, work: Awaitable[T], what: str) -> T:
    """Run `work`; fail as soon as any backend waits on a lock held by backend `pid` (no timing:
    `pg_blocking_pids` is polled while `work` is in flight)."""
    task: asyncio.Future[T] = asyncio.ensure_future(work)
    while not task.done():
        waiting = await db.fetch(
            "SELECT pid, wait_event_type, left(query, 120) AS query FROM pg_stat_activity"
            " WHERE $1 = ANY(pg_blocking_pids(pid))",
            pid,
        )
        if waiting:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            pytest.fail(f"{what}: {[dict(w) for w in waiting]}")
        await asyncio.sleep(0.01)
    return task.result()


async def triggers_fired(db: asyncpg.Connection, query: str, *args: Any) -> dict[str, int]:
    """The triggers `query` fires, by constraint (or trigger) name → calls: EXPLAIN ANALYZE in a
    transaction rolled back."""
    tx = db.transaction()
    await tx.start()
    try:
        plan = await db.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {query}", *args)  # json: decoded
    finally:
        await tx.rollback()
    return {t.get("Constraint Name", t["Trigger Name"]): t["Calls"] for t in plan[0].get("Triggers", [])}


async def someone_waits_on(db: asyncpg.Connection, pid: int) -> bool:
    """Whether any backend waits on a lock held by backend `pid` (for `wait_until`)."""
    return bool(
        await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))", pid)
    )


def running(server: ServerT) -> Iterator[ServerT]:
    """A fixture's server: started, handed over, stopped when the fixture ends
    (`yield from running(NatsServer(tmp_path / "nats"))`)."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll a predicate (async, or a plain function) until it returns something truthy."""
    import asyncio
    import inspect

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        await asyncio.sleep(interval)


async def publish_raw(nats_url: str, subject: str, *messages: bytes) -> None:
    """Publish bytes no service would send (garbage, poison) from a connection of its own; they
    have reached the server when this returns."""
    nc = await nats.connect(nats_url)
    try:
        for data in messages:
            await nc.publish(subject, data)
        await nc.flush()
    finally:
        await nc.close()


__all__ = [
    "RUNNING",
    "ServiceDied",
    "ServiceProcess",
    "Stack",
    "aiohttp",
    "free_port",
    "open_database",
    "publish_raw",
    "start_service",
    "stop_all_processes",
    "wait_for_port",
    "wait_until",
]


@asynccontextmanager
async def open_database(settings: CommonSettings, name: str) -> AsyncIterator[Database]:
    """A service's database pool (open, as application `name`), closed after the block."""
    database = Database(settings, name)
    await database.open()
    try:
        yield database
    finally:
        await database.close()


@asynccontextmanager
async def service_connections(settings: CommonSettings, name: str) -> AsyncIterator[tuple[Database, Bus]]:
    """A service's database pool (open) and bus (connected) for a service built inside a test,
    closed after it."""
    async with open_database(settings, name) as database:
        bus = Bus(settings.nats_url, name)
        try:
            await bus.connect_forever()
            yield database, bus
        finally:
            await bus.close()


class _ServedAsTheServiceRuns(TestServer):
    """aiohttp's TestServer with the runner options of `shared.lifecycle.serve`. (Its constructor
    drops options it is given, and its runner cancels a handler whose client goes away, which the
    services' runner does not.)"""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return ServiceRunner(self.app, **{**kwargs, **runner_options(self.app)})


def served(app: web.Application) -> TestServer:
    """A test server for `app` run as the service runs it (`serve`): keep-alive and header
    timeouts, lingering, bodies never inflated, handlers never cancelled by a client leaving."""
    return _ServedAsTheServiceRuns(app)
