"""Composition root of the webhook-gateway service."""

from __future__ import annotations

from aiohttp import web

from shared.http import create_base_app, finish_routes
from shared.settings import GatewaySettings


def create_app(settings: GatewaySettings) -> web.Application:
    """Wire the webhook-gateway service."""
    app = create_base_app("webhook-gateway", settings)
    finish_routes(app)
    return app
