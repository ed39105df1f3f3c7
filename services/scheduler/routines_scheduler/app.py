"""Composition root of the scheduler service."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from routines_scheduler.ticker import Scheduler
from shared.http import BUS_KEY, DB_KEY, SUPERVISOR_KEY, create_base_app, finish_routes
from shared.settings import SchedulerSettings

SCHEDULER_KEY = web.AppKey("scheduler", Scheduler)


def create_app(settings: SchedulerSettings) -> web.Application:
    """Wire the scheduler: one supervised fire loop, woken early by trigger changes."""
    app = create_base_app("scheduler", settings)
    app[SCHEDULER_KEY] = Scheduler(settings, app[DB_KEY], app[BUS_KEY], app[SUPERVISOR_KEY].stopping)
    app.cleanup_ctx.append(_ticker_ctx)
    finish_routes(app)
    return app


async def _ticker_ctx(app: web.Application) -> AsyncIterator[None]:
    scheduler = app[SCHEDULER_KEY]
    app[SUPERVISOR_KEY].spawn("fire-loop", scheduler.run())
    app[SUPERVISOR_KEY].spawn("trigger-changes", scheduler.follow_trigger_changes(), critical=False)
    yield
