"""Shared pieces of the benchmarks: servers, service processes, seeding, RSS sampling, stats."""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from shared.crypto import SecretBox, new_public_id, new_webhook_secret
from shared.devservers import NatsServer, PostgresServer
from shared.migrate import migrate
from tests.support import ServiceProcess, Stack

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Servers:
    pg: PostgresServer
    nats: NatsServer
    tmp: Path

    async def fresh_stack(self, name: str) -> Stack:
        admin = await asyncpg.connect(self.pg.dsn)
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {name}")
        await admin.close()
        dsn = self.pg.dsn_for(name)
        await migrate(dsn)
        return Stack(database_url=dsn, nats_url=self.nats.url)


@asynccontextmanager
async def servers() -> AsyncIterator[Servers]:
    """Durable Postgres (fsync on: commits cost what they cost in production) and NATS."""
    with tempfile.TemporaryDirectory() as tmp:
        pg = PostgresServer(Path(tmp) / "pg", fast=False)
        nats = NatsServer(Path(tmp) / "nats")
        pg.start()
        nats.start()
        try:
            yield Servers(pg, nats, Path(tmp))
        finally:
            nats.stop()
            pg.stop()


class PeakRss:
    """Samples the resident set size of service processes; keeps each service's peak (MB)."""

    def __init__(self) -> None:
        self.peaks: dict[str, float] = {}
        self._watched: list[tuple[str, ServiceProcess]] = []
        self._task: asyncio.Task[None] | None = None

    def watch(self, process: ServiceProcess) -> ServiceProcess:
        self._watched.append((process.name, process))
        return process

    async def _sample(self) -> None:
        while True:
            for name, process in self._watched:
                if process.proc is not None and process.proc.poll() is None:
                    try:
                        rss = psutil.Process(process.proc.pid).memory_info().rss / 2**20
                    except psutil.Error:
                        continue
                    self.peaks[name] = max(self.peaks.get(name, 0.0), rss)
            await asyncio.sleep(0.2)

    def start(self) -> None:
        self._task = asyncio.create_task(self._sample())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


@dataclass
class World:
    company_id: uuid.UUID
    agent_id: uuid.UUID
    project_id: uuid.UUID
    routines: list[uuid.UUID] = field(default_factory=list)
    hooks: list[tuple[str, str]] = field(default_factory=list)  # (public id, secret)


async def seed(conn: asyncpg.Connection, routines: int, policy: str = "always_enqueue") -> World:
    company = await conn.fetchval("INSERT INTO companies (name) VALUES ('bench') RETURNING id")
    agent = await conn.fetchval(
        "INSERT INTO agents (company_id, name) VALUES ($1, 'a') RETURNING id", company
    )
    project = await conn.fetchval(
        "INSERT INTO projects (company_id, name) VALUES ($1, 'p') RETURNING id", company
    )
    ids = await conn.fetch(
        "INSERT INTO routines (company_id, title, assignee_agent_id, project_id, concurrency_policy)"
        " SELECT $1, 'bench ' || g, $2, $3, $4 FROM generate_series(1, $5) g RETURNING id",
        company,
        agent,
        project,
        policy,
        routines,
    )
    return World(company, agent, project, [r["id"] for r in ids])


async def add_webhooks(
    conn: asyncpg.Connection, world: World, secret_key: str, mode: str = "hmac_sha256"
) -> None:
    box = SecretBox(secret_key)
    for routine in world.routines:
        trigger_id, public_id, secret = uuid.uuid4(), new_public_id(), new_webhook_secret()
        await conn.execute(
            "INSERT INTO routine_triggers (id, routine_id, company_id, kind, public_id, signing_mode, replay_window_sec)"
            " VALUES ($1, $2, $3, 'webhook', $4, $5, 3600)",
            trigger_id,
            routine,
            world.company_id,
            public_id,
            mode,
        )
        await conn.execute(
            "INSERT INTO webhook_secrets (trigger_id, ciphertext) VALUES ($1, $2)",
            trigger_id,
            box.encrypt(secret, str(trigger_id)),
        )
        world.hooks.append((public_id, secret))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def describe(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 50) * 1000:.1f} ms, p99 {percentile(values, 99) * 1000:.1f} ms, "
        f"mean {statistics.fmean(values) * 1000:.1f} ms (n={len(values)})"
    )


def service_env(stack: Stack, **extra: Any) -> dict[str, str]:
    env = stack.env(log_level="warning", **extra)
    env["ROUTINES_SHUTDOWN_TIMEOUT_SEC"] = "5"
    return env


def now() -> float:
    return time.time()


def cpu_count() -> int:
    return os.cpu_count() or 1
