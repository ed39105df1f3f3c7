"""Composition root of the run-dispatcher service."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from routines_dispatcher.worker import Dispatcher
from shared.http import BUS_KEY, DB_KEY, SUPERVISOR_KEY, create_base_app, finish_routes
from shared.settings import DispatcherSettings

DISPATCHER_KEY = web.AppKey("dispatcher", Dispatcher)


def create_app(settings: DispatcherSettings) -> web.Application:
    """Wire the run-dispatcher: consumer and sweeper loops, supervised."""
    app = create_base_app("run-dispatcher", settings)
    supervisor = app[SUPERVISOR_KEY]
    app[DISPATCHER_KEY] = Dispatcher(settings, app[DB_KEY], app[BUS_KEY], supervisor.stopping)
    app.cleanup_ctx.append(_workers_ctx)
    finish_routes(app)
    return app


async def _workers_ctx(app: web.Application) -> AsyncIterator[None]:
    dispatcher, supervisor = app[DISPATCHER_KEY], app[SUPERVISOR_KEY]
    supervisor.spawn("consumer", dispatcher.consume())
    supervisor.spawn("sweeper", dispatcher.sweep())
    yield
