"""Composition root of the api service."""

from __future__ import annotations

from aiohttp import web

from shared.http import create_base_app, finish_routes
from shared.settings import ApiSettings


def create_app(settings: ApiSettings) -> web.Application:
    """Wire the api service."""
    app = create_base_app("api", settings)
    finish_routes(app)
    return app
