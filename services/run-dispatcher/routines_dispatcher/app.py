"""Composition root of the run-dispatcher service."""

from __future__ import annotations

from aiohttp import web

from shared.http import create_base_app, finish_routes
from shared.settings import DispatcherSettings


def create_app(settings: DispatcherSettings) -> web.Application:
    """Wire the run-dispatcher service."""
    app = create_base_app("run-dispatcher", settings)
    finish_routes(app)
    return app
