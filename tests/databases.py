"""Statements on a test Postgres server's maintenance database: making, cloning and dropping
databases, altering roles (none of which may run inside a transaction)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg

from shared.devservers import PostgresServer

DbFactory = Callable[..., Awaitable[str]]
"""The `db_factory` fixture: `await db_factory(prefix=..., template=...)` is a new database's URL."""


async def execute_on_server(server: PostgresServer, *statements: str) -> None:
    conn = await asyncpg.connect(server.dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()
