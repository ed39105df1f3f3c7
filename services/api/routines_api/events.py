"""What the API tells the other services after a commit: new runs to the dispatcher (waiting
briefly for its decision), trigger changes to the webhook gateways."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from routines_api.sql import QUERIES
from routines_api.state import API_SETTINGS_KEY, WAITER_KEY
from shared.bus import Bus, Subjects
from shared.http import BUS_KEY, DB_KEY
from shared.runs import publish_run_requested


async def publish_and_wait(request: web.Request, run: dict[str, Any]) -> dict[str, Any]:
    """Publish a newly recorded run and wait briefly for its decision (as manual runs do)."""
    waiter = request.app[WAITER_KEY]
    expected = waiter.expect(str(run["id"]))
    await publish_run_requested(request.app[BUS_KEY], run["id"], run["routine_id"])
    if await waiter.wait(str(run["id"]), expected, request.app[API_SETTINGS_KEY].manual_run_wait_sec):
        async with request.app[DB_KEY].connection() as conn:
            decided = await conn.fetchrow(QUERIES["run_by_id"], run["id"])
        if decided is not None:
            return dict(decided)
    return run


async def announce_trigger_change(bus: Bus, **ids: str | None) -> None:
    """Gateways drop cached trigger state on this (secrets, enabled, routine status)."""
    await bus.publish_quietly(Subjects.TRIGGERS_CHANGED, {k: v for k, v in ids.items() if v})
