"""Composition root of the scheduler service."""

from __future__ import annotations

from aiohttp import web

from shared.http import create_base_app, finish_routes
from shared.settings import SchedulerSettings


def create_app(settings: SchedulerSettings) -> web.Application:
    """Wire the scheduler service."""
    app = create_base_app("scheduler", settings)
    finish_routes(app)
    return app
