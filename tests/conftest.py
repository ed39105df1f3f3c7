"""Fixtures: one real Postgres per session (a fresh database per test, cloned from a migrated
template) and a real NATS server per test, both from the pip wheels, on free ports."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from shared.db import init_connection
from shared.devservers import NatsServer, PostgresServer
from shared.migrate import migrate
from tests.databases import DbFactory, execute_on_server
from tests.support import Stack, running, stop_all_processes

TEMPLATE_DB = "routines_template"


@pytest.fixture(autouse=True)
def _service_processes() -> Iterator[None]:
    """Owns every service process a test starts (tests.support.RUNNING): all are killed when the
    test ends, whether it passed, failed or was interrupted."""
    yield
    stop_all_processes()


@pytest.fixture(scope="session")
def servers_dir() -> Iterator[Path]:
    """Where servers that run as an unprivileged user (Postgres, PgBouncer: we may be root) keep
    their files: outside pytest's temporary directory, whose root (`/tmp/pytest-of-<user>`) every
    pytest session that starts makes private again (mode 0700). Another pytest run on the same
    machine — unit tests in a second terminal — cut the running suite's Postgres off from its data
    directory, and it panicked at its next checkpoint. Removed when the session ends."""
    path = Path(tempfile.mkdtemp(prefix="routines-tests-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def server_tmp(servers_dir: Path) -> Path:
    """A fresh directory for one test's own unprivileged server (see servers_dir)."""
    return Path(tempfile.mkdtemp(prefix="test-", dir=servers_dir))


@pytest.fixture(scope="session")
def postgres_server(servers_dir: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(servers_dir / "pg" / "data", fast=True)
    server.start()

    async def make_template() -> None:
        await execute_on_server(server, f"CREATE DATABASE {TEMPLATE_DB}")
        await migrate(server.dsn_for(TEMPLATE_DB))

    asyncio.run(make_template())
    yield server
    server.stop()


@pytest.fixture
async def db_factory(postgres_server: PostgresServer) -> AsyncIterator[DbFactory]:
    """Makes databases on the session's server and drops them when the test ends (the model is
    procrastinate's tests/conftest.py): `await db_factory()` is a fresh, migrated database (a clone
    of the template); `await db_factory(prefix="empty_", template=None)` an empty one. Returns its URL."""
    made: list[str] = []

    async def make(prefix: str = "t_", template: str | None = TEMPLATE_DB) -> str:
        if not postgres_server.running:
            postgres_server.start()
        name = prefix + uuid.uuid4().hex[:16]
        clone = f" TEMPLATE {template}" if template else ""
        await execute_on_server(postgres_server, f"CREATE DATABASE {name}{clone}")
        made.append(name)
        return postgres_server.dsn_for(name)

    yield make
    if not made:
        return
    if not postgres_server.running:
        postgres_server.start()
    await execute_on_server(
        postgres_server, *(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)" for name in made)
    )


@pytest.fixture
async def database_url(db_factory: DbFactory) -> str:
    """A fresh, migrated database for this test."""
    return await db_factory()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    yield from running(NatsServer(tmp_path / "nats"))


@pytest.fixture
def stack(database_url: str, nats_server: NatsServer) -> Stack:
    return Stack(database_url=database_url, nats_url=nats_server.url)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to this test's database, for arranging and asserting."""
    conn = await asyncpg.connect(database_url)
    await init_connection(conn)
    yield conn
    await conn.close()


@pytest.fixture
async def admin_token(database_url: str) -> str:
    from shared.bootstrap import create_instance_admin_token

    return await create_instance_admin_token(database_url, "tests")
