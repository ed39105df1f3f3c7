"""Fixtures of the production tier: PgBouncer (transaction pooling) with per-service roles,
a 3-node NATS cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from shared.devservers import PostgresServer
from tests.databases import execute_on_server
from tests.production.servers import SERVICE_ROLES, NatsCluster, PgBouncer
from tests.support import running


@pytest.fixture(scope="session")
def pgbouncer(postgres_server: PostgresServer, servers_dir: Path) -> Iterator[PgBouncer]:
    """PgBouncer in transaction pooling mode; the service roles (made by migration 0006 in the
    template database) may log in. A small server pool, so client connections share servers."""

    asyncio.run(
        execute_on_server(postgres_server, *(f"ALTER ROLE {role} LOGIN" for role in SERVICE_ROLES.values()))
    )
    yield from running(
        PgBouncer(
            servers_dir / "pgbouncer",
            postgres_server.port,
            users=[*SERVICE_ROLES.values(), "postgres"],
            pool_size=4,
        )
    )


def database_name(database_url: str) -> str:
    return urlsplit(database_url).path.lstrip("/")


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    yield from running(NatsCluster(tmp_path / "nats-cluster"))
