"""Composition root of the webhook-gateway service."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from routines_gateway.cache import TriggerCache
from routines_gateway.fire import FireHandler
from routines_gateway.ingest import GroupCommitter
from shared.crypto import SecretBox
from shared.http import BUS_KEY, DB_KEY, SUPERVISOR_KEY, create_base_app, finish_routes
from shared.lifecycle import HANDLER_ARGS_KEY
from shared.settings import GatewaySettings

CACHE_KEY = web.AppKey("trigger_cache", TriggerCache)
COMMITTER_KEY = web.AppKey("group_committer", GroupCommitter)


def create_app(settings: GatewaySettings) -> web.Application:
    """Wire the gateway: the fire endpoint, its trigger cache and the group-commit writer."""
    app = create_base_app("webhook-gateway", settings, client_max_size=settings.webhook_max_body_bytes)
    cache = TriggerCache(app[DB_KEY], SecretBox(settings.secret_key), settings.trigger_cache_ttl_sec)
    committer = GroupCommitter(app[DB_KEY], settings.group_commit_max, settings.group_commit_writers)
    app[CACHE_KEY], app[COMMITTER_KEY] = cache, committer
    # aiohttp's keep-alive deadline runs from the moment a connection opens (and again after each
    # answer) until a request's headers are complete: that is the header read timeout. The body
    # has its own, in the handler; after an early answer (408, 413) the unread rest of a body is
    # drained for at most a second (not aiohttp's 10 s), then the connection is closed.
    app[HANDLER_ARGS_KEY] = {"keepalive_timeout": settings.header_timeout_sec, "lingering_time": 1.0}
    app.router.add_post(
        "/api/routine-triggers/public/{publicId}/fire", FireHandler(settings, cache, committer).fire
    )
    app.cleanup_ctx.append(_gateway_ctx)
    finish_routes(app)
    return app


async def _gateway_ctx(app: web.Application) -> AsyncIterator[None]:
    supervisor = app[SUPERVISOR_KEY]
    supervisor.spawn("group-commit", app[COMMITTER_KEY].run(supervisor.stopping))
    supervisor.spawn("cache-invalidation", app[CACHE_KEY].follow_changes(app[BUS_KEY]), critical=False)
    yield
