"""Composition root of the API service."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from routines_api import directory, routines, triggers  # noqa: F401 - they register their routes
from routines_api.openapi import DOCS_PAGE, GATEWAY_OPERATIONS, ROUTES, build_openapi
from routines_api.routines import WAITER_KEY
from routines_api.triggers import API_SETTINGS_KEY, SECRET_BOX_KEY
from routines_api.waiter import DecisionWaiter
from shared.crypto import SecretBox
from shared.errors import NotFound
from shared.http import BUS_KEY, SUPERVISOR_KEY, create_base_app, finish_routes, json_response
from shared.settings import ApiSettings

OPENAPI_KEY = web.AppKey("openapi", dict)


def create_app(settings: ApiSettings) -> web.Application:
    """Wire the API: routes from the route table, the OpenAPI document built from the same table."""
    app = create_base_app("api", settings)
    app[API_SETTINGS_KEY] = settings
    app[SECRET_BOX_KEY] = SecretBox(settings.secret_key)
    app[WAITER_KEY] = DecisionWaiter(app[BUS_KEY])
    app[OPENAPI_KEY] = build_openapi([*ROUTES.operations, *GATEWAY_OPERATIONS], "Routines API", "1.0.0")
    app.router.add_get("/api/openapi.json", _openapi)
    app.router.add_get("/api/docs", _docs)
    ROUTES.install(app)
    app.router.add_route("*", "/api/routine-triggers/public/{publicId}/fire", _fire_is_on_the_gateway)
    app.cleanup_ctx.append(_waiter_ctx)
    finish_routes(app)
    return app


async def _fire_is_on_the_gateway(request: web.Request) -> web.Response:
    """Webhook fires sent to the API's port: say where the webhook gateway is."""
    gateway = request.app[API_SETTINGS_KEY].public_gateway_url.rstrip("/")
    public_id = request.match_info["publicId"]
    raise NotFound(
        f"webhook fires are served by the webhook gateway, not the API: POST them to {gateway}",
        {"fireUrl": f"{gateway}/api/routine-triggers/public/{public_id}/fire", "gatewayUrl": gateway},
    )


async def _openapi(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI_KEY])


async def _docs(_request: web.Request) -> web.Response:
    return web.Response(text=DOCS_PAGE, content_type="text/html")


async def _waiter_ctx(app: web.Application) -> AsyncIterator[None]:
    app[SUPERVISOR_KEY].spawn("decision-waiter", app[WAITER_KEY].subscribe(), critical=False)
    yield
