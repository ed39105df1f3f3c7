"""Per-company quotas: what one tenant may hold, so it cannot crowd out the others."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from aiohttp import web
from pydantic.alias_generators import to_camel

from routines_api.sql import QUERIES
from routines_api.state import API_SETTINGS_KEY
from shared.errors import Unprocessable
from shared.http import DB_KEY
from shared.settings import ApiSettings

# quota name (settings field after `quota_`) → (what it counts, the count query)
QUOTAS = {
    "routines_per_company": ("routines (not archived) per company", "count_routines"),
    "triggers_per_routine": ("triggers per routine", "count_triggers"),
    "webhook_triggers_per_company": ("webhook triggers per company", "count_webhook_triggers"),
    "agents_per_company": ("agents (not terminated) per company", "count_agents"),
    "board_tokens_per_company": ("live board tokens per company", "count_board_tokens"),
    "projects_per_company": ("projects per company", "count_projects"),
    "goals_per_company": ("goals per company", "count_goals"),
}


async def lock_company(conn: asyncpg.Connection, company_id: uuid.UUID) -> None:
    """Serialise one company's creates, so a count and the insert after it cannot race."""
    await conn.execute(QUERIES["lock_company"], company_id)


async def enforce_quota(
    settings: ApiSettings, conn: asyncpg.Connection, name: str, owner_id: uuid.UUID
) -> None:
    """422 if creating one more would exceed the quota. Call in the creating transaction, after
    locking the owner (the company row via `lock_company`, or the routine row)."""
    limit: int = getattr(settings, f"quota_{name}")
    what, query = QUOTAS[name]
    if await conn.fetchval(QUERIES[query], owner_id) >= limit:
        raise Unprocessable(
            f"quota exceeded: at most {limit} {what}", {"quota": to_camel(name), "limit": limit}
        )


@asynccontextmanager
async def within_company_quota(
    request: web.Request, name: str, company_id: uuid.UUID
) -> AsyncIterator[asyncpg.Connection]:
    """A transaction that holds the company's lock and has checked quota `name` (422 when one more
    would exceed it): the company's one more thing is created in it."""
    async with request.app[DB_KEY].transaction() as conn:
        await lock_company(conn, company_id)
        await enforce_quota(request.app[API_SETTINGS_KEY], conn, name, company_id)
        yield conn
