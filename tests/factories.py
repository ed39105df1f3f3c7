"""Arrange domain rows directly in Postgres (for tests of the services behind the API)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from routines_dispatcher.decide import decide_runs
from shared.db import Database


@dataclass
class World:
    company_id: uuid.UUID
    agent_id: uuid.UUID
    project_id: uuid.UUID


async def make_world(db: asyncpg.Connection, name: str = "Acme") -> World:
    company = await db.fetchval("INSERT INTO companies (name) VALUES ($1) RETURNING id", name)
    agent = await db.fetchval(
        "INSERT INTO agents (company_id, name) VALUES ($1, 'agent') RETURNING id", company
    )
    project = await db.fetchval(
        "INSERT INTO projects (company_id, name) VALUES ($1, 'proj') RETURNING id", company
    )
    return World(company, agent, project)


async def make_routine(
    db: asyncpg.Connection, world: World, policy: str = "coalesce_if_active", **fields: Any
) -> uuid.UUID:
    columns = {
        "company_id": world.company_id,
        "title": "Routine",
        "assignee_agent_id": world.agent_id,
        "project_id": world.project_id,
        "concurrency_policy": policy,
        **fields,
    }
    names = ", ".join(columns)
    params = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    return uuid.UUID(
        str(
            await db.fetchval(
                f"INSERT INTO routines ({names}) VALUES ({params}) RETURNING id", *columns.values()
            )
        )
    )


async def make_schedule_trigger(
    db: asyncpg.Connection,
    world: World,
    routine_id: uuid.UUID,
    cron: str,
    tz: str,
    next_run_at: datetime | None,
) -> uuid.UUID:
    return uuid.UUID(
        str(
            await db.fetchval(
                "INSERT INTO routine_triggers (routine_id, company_id, kind, cron_expression, timezone, next_run_at)"
                " VALUES ($1, $2, 'schedule', $3, $4, $5) RETURNING id",
                routine_id,
                world.company_id,
                cron,
                tz,
                next_run_at,
            )
        )
    )


async def make_run(
    db: asyncpg.Connection, world: World, routine_id: uuid.UUID, source: str = "api"
) -> uuid.UUID:
    return uuid.UUID(
        str(
            await db.fetchval(
                "INSERT INTO routine_runs (routine_id, company_id, source, payload) VALUES ($1, $2, $3, $4)"
                " RETURNING id",
                routine_id,
                world.company_id,
                source,
                {"n": 1},
            )
        )
    )


async def make_issue(db: asyncpg.Connection, world: World, routine_id: uuid.UUID, status: str) -> uuid.UUID:
    return uuid.UUID(
        str(
            await db.fetchval(
                "INSERT INTO issues (company_id, title, status, assignee_agent_id, origin_kind, origin_id)"
                " VALUES ($1, 'earlier', $2, $3, 'routine_execution', $4) RETURNING id",
                world.company_id,
                status,
                world.agent_id,
                routine_id,
            )
        )
    )


async def decide(database: Database, run_ids: list[uuid.UUID]) -> None:
    """Decide these runs in one transaction, as a dispatcher does."""
    async with database.transaction() as conn:
        await decide_runs(conn, run_ids)


RECORD_RUNS = """
INSERT INTO routine_runs (routine_id, company_id, source, status)
SELECT $1, $2, 'webhook', s FROM unnest($3::text[]) AS s
RETURNING id, status
"""
"""Runs of one routine in one statement (one batch of received runs), one per status given ($3)."""
