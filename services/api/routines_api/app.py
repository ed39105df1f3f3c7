"""Composition root of the API service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from routines_api import (  # they register their routes
    backfill,
    directory,
    health,
    history,
    issues,
    revisions,
    routines,
    triggers,
    upcoming,
    wakeups,
)
from routines_api.console.pages import setup_console
from routines_api.openapi import GATEWAY_OPERATIONS, build_openapi
from routines_api.routes import ROUTES
from routines_api.state import API_SETTINGS_KEY, SECRET_BOX_KEY, WAITER_KEY
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
    app[OPENAPI_KEY] = openapi_document(settings.public_gateway_url)
    app.router.add_get("/api/openapi.json", _openapi)
    app.router.add_get("/api/docs", _docs)
    app.router.add_get("/api/docs/{asset}", _docs_asset)
    ROUTES.install(app)
    app.router.add_route("*", "/api/routine-triggers/public/{publicId}/fire", _fire_is_on_the_gateway)
    setup_console(app)
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


# Each handler module registers its routes when imported. The document lists them in this order
# (and so does the client generated from it), whatever order Python happened to import them in.
DOCUMENT_ORDER = (
    directory,
    issues,
    backfill,
    health,
    history,
    triggers,
    routines,
    revisions,
    upcoming,
    wakeups,
)


def openapi_document(gateway_url: str = "http://127.0.0.1:8081") -> dict[str, Any]:
    """The OpenAPI document of the whole system (API and gateway), from the route table."""
    rank = {module.__name__: index for index, module in enumerate(DOCUMENT_ORDER)}
    operations = sorted(ROUTES.operations, key=lambda op: rank[getattr(op.handler, "__module__", "")])
    return build_openapi([*operations, *GATEWAY_OPERATIONS], "Routines API", "1.0.0", gateway_url=gateway_url)


async def _openapi(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI_KEY])


# The interactive reference: Swagger UI vendored from the swagger-ui-dist npm package (see
# swagger_ui/NOTICE), served from the package itself; the page loads nothing from elsewhere.
DOCS_DIR = Path(__file__).parent / "swagger_ui"
DOCS_ASSETS = {
    "swagger-ui-bundle.js": "application/javascript",
    "routines-docs.js": "application/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}


def _docs_headers(gateway_url: str) -> dict[str, str]:
    # 'unsafe-inline' styles: Swagger UI sets style attributes; scripts come only from this server.
    # connect-src includes the gateway so "Try it out" can reach the fire operation.
    csp = (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        f"img-src 'self' data:; font-src 'self' data:; connect-src 'self' {gateway_url.rstrip('/')}; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "public, max-age=3600",
    }


async def _docs(request: web.Request) -> web.Response:
    headers = _docs_headers(request.app[API_SETTINGS_KEY].public_gateway_url)
    return web.Response(
        body=(DOCS_DIR / "index.html").read_bytes(),
        content_type="text/html",
        charset="utf-8",
        headers=headers,
    )


async def _docs_asset(request: web.Request) -> web.Response:
    name = request.match_info["asset"]
    content_type = DOCS_ASSETS.get(name)
    if content_type is None:
        raise NotFound(f"no documentation asset {name[:100]!r}")
    headers = _docs_headers(request.app[API_SETTINGS_KEY].public_gateway_url)
    return web.Response(body=(DOCS_DIR / name).read_bytes(), content_type=content_type, headers=headers)


async def _waiter_ctx(app: web.Application) -> AsyncIterator[None]:
    app[SUPERVISOR_KEY].spawn("decision-waiter", app[WAITER_KEY].subscribe(), critical=False)
    yield
