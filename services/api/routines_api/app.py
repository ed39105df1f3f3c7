"""Composition root of the API service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from routines_api import (  # noqa: F401 - they register their routes
    backfill,
    directory,
    health,
    history,
    revisions,
    routines,
    triggers,
    upcoming,
    wakeups,
)
from routines_api.console.pages import setup_console
from routines_api.openapi import DOCS_PAGE, GATEWAY_OPERATIONS, ROUTES, build_openapi
from routines_api.state import API_SETTINGS_KEY, SECRET_BOX_KEY, WAITER_KEY
from routines_api.waiter import DecisionWaiter
from shared.crypto import SecretBox
from shared.http import BUS_KEY, SUPERVISOR_KEY, create_base_app, finish_routes, json_response
from shared.settings import ApiSettings

OPENAPI_KEY = web.AppKey("openapi", dict)


def create_app(settings: ApiSettings) -> web.Application:
    """Wire the API: routes from the route table, the OpenAPI document built from the same table."""
    app = create_base_app("api", settings)
    app[API_SETTINGS_KEY] = settings
    app[SECRET_BOX_KEY] = SecretBox(settings.secret_key)
    app[WAITER_KEY] = DecisionWaiter(app[BUS_KEY])
    app[OPENAPI_KEY] = openapi_document()
    app.router.add_get("/api/openapi.json", _openapi)
    app.router.add_get("/api/docs", _docs)
    ROUTES.install(app)
    setup_console(app)
    app.cleanup_ctx.append(_waiter_ctx)
    finish_routes(app)
    return app


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the whole system (API and gateway), from the route table."""
    return build_openapi([*ROUTES.operations, *GATEWAY_OPERATIONS], "Routines API", "1.0.0")


async def _openapi(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI_KEY])


async def _docs(_request: web.Request) -> web.Response:
    return web.Response(text=DOCS_PAGE, content_type="text/html")


async def _waiter_ctx(app: web.Application) -> AsyncIterator[None]:
    app[SUPERVISOR_KEY].spawn("decision-waiter", app[WAITER_KEY].subscribe(), critical=False)
    yield
