"""Composition root of the webhook-gateway service."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from routines_gateway.cache import TriggerCache
from routines_gateway.clock import DbClock
from routines_gateway.fire import FireHandler
from routines_gateway.ingest import GroupCommitter, announce_on
from shared.crypto import SecretBox
from shared.fastpath import FAST_ROUTE_KEY, FastRoute
from shared.http import BUS_KEY, DB_KEY, SUPERVISOR_KEY, create_base_app, fast_edge, finish_routes
from shared.logging import get_logger
from shared.settings import GatewaySettings

log = get_logger(__name__)
CACHE_KEY = web.AppKey("trigger_cache", TriggerCache)
COMMITTER_KEY = web.AppKey("group_committer", GroupCommitter)
CLOCK_KEY = web.AppKey("db_clock", DbClock)
FIRE_ROUTE = "/api/routine-triggers/public/{publicId}/fire"
# The requests the fast path may take (shared.fastpath): well-formed public ids; others get
# aiohttp's handling (their 404 included).
_FIRE_PATH = re.compile(r"/api/routine-triggers/public/([0-9a-f]{24})/fire")


def create_app(settings: GatewaySettings, local_clock: Callable[[], float] = time.time) -> web.Application:
    """Wire the gateway: the fire endpoint, its trigger cache and the group-commit writer.
    `local_clock` is this host's wall clock (tests give it a skew)."""
    app = create_base_app("webhook-gateway", settings, client_max_size=settings.webhook_max_body_bytes)
    cache = TriggerCache(
        app[DB_KEY],
        SecretBox(settings.secret_key),
        settings.trigger_cache_ttl_sec,
        negative_ttl=settings.trigger_cache_negative_ttl_sec,
    )
    # Each commit's runs are announced together, before its fires are answered.
    committer = GroupCommitter(
        app[DB_KEY],
        settings.group_commit_max,
        settings.group_commit_writers,
        announce=announce_on(app[BUS_KEY]),
    )
    clock = DbClock(app[DB_KEY], local_clock)
    app[CACHE_KEY], app[COMMITTER_KEY], app[CLOCK_KEY] = cache, committer, clock
    fire = FireHandler(settings, app[DB_KEY], cache, committer, clock)
    app.router.add_post(FIRE_ROUTE, fire.fire)
    # Fires that are plainly well formed and whole are taken off the wire without aiohttp's request
    # machinery (~85 % of a bare handler's time), with the same edge and the same answers.
    app[FAST_ROUTE_KEY] = FastRoute(
        _FIRE_PATH, settings.webhook_max_body_bytes, fast_edge(app, FIRE_ROUTE, fire.fire_taken)
    )
    app.cleanup_ctx.append(_gateway_ctx)
    finish_routes(app)
    return app


async def _gateway_ctx(app: web.Application) -> AsyncIterator[None]:
    supervisor = app[SUPERVISOR_KEY]
    clock = app[CLOCK_KEY]
    try:  # timestamps are checked by the database's clock from the first request on
        await asyncio.wait_for(clock.sample(), timeout=5)
    except Exception as exc:  # the database is not there yet: the sampling loop keeps trying
        log.warning("initial clock sample failed", error=type(exc).__name__)
    supervisor.spawn("db-clock", clock.run(supervisor.stopping), critical=False)
    supervisor.spawn("group-commit", app[COMMITTER_KEY].run(supervisor.stopping))
    supervisor.spawn("cache-invalidation", app[CACHE_KEY].follow_changes(app[BUS_KEY]), critical=False)
    yield
