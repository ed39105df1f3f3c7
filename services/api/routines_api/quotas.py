"""Per-company quotas: what one tenant may hold, so it cannot crowd out the others."""

from __future__ import annotations

import uuid

import asyncpg
from pydantic.alias_generators import to_camel

from routines_api.sql import QUERIES
from shared.errors import Unprocessable
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
