"""Baselines for the gateway, on the gateway's route.

`bare PORT`: an aiohttp handler that reads the body and answers 202 — no checks, no database.

`durable PORT`: the same plus exactly what a durable acceptance needs, and nothing else — the
gateway's own group-committed INSERT of the run (with its payload) and its run-requested
announcement (one message per commit, as the gateway's) before the answer. No rate limits,
signature, strict JSON checks, middleware, metrics or logs: the ceiling any gateway with the
guarantees of docs/design.md could reach on this machine.
Settings come from the gateway's environment (ROUTINES_DATABASE_URL, ROUTINES_NATS_URL, …).
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator

from aiohttp import web

from routines_gateway.ingest import GroupCommitter, PendingRun, announce_on
from shared.bus import Bus
from shared.db import Database
from shared.settings import GatewaySettings

ROUTE = "/api/routine-triggers/public/{publicId}/fire"


async def fire(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"runId": str(uuid.uuid4()), "status": "received"}, status=202)


def durable_app() -> web.Application:
    settings = GatewaySettings()
    db = Database(settings, application_name="durable-baseline")
    bus = Bus.from_settings(settings, name="durable-baseline")
    committer = GroupCommitter(
        db, settings.group_commit_max, settings.group_commit_writers, announce=announce_on(bus)
    )
    triggers: dict[str, tuple[uuid.UUID, uuid.UUID, uuid.UUID]] = {}

    async def durable_fire(request: web.Request) -> web.Response:
        body = await request.read()
        routine_id, company_id, trigger_id = triggers[request.match_info["publicId"]]
        run = PendingRun(routine_id, company_id, trigger_id, json.loads(body or b"{}"), None, None, None)
        await committer.submit(run)
        return web.json_response({"runId": str(run.id), "status": "received"}, status=202)

    async def lifetime(_app: web.Application) -> AsyncIterator[None]:
        stopping = asyncio.Event()
        await db.open()
        async with db.connection() as conn:
            rows = await conn.fetch(
                "SELECT public_id, routine_id, company_id, id FROM routine_triggers WHERE public_id IS NOT NULL"
            )
        triggers.update({r["public_id"]: (r["routine_id"], r["company_id"], r["id"]) for r in rows})
        connecting = asyncio.create_task(bus.connect_forever(stopping))
        writers = asyncio.create_task(committer.run(stopping))
        await bus.wait_connected(10)
        yield
        stopping.set()
        await writers
        await connecting
        await bus.close()
        await db.close()

    app = web.Application()
    app.router.add_post(ROUTE, durable_fire)
    app.cleanup_ctx.append(lifetime)
    return app


def main() -> None:
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "durable":
        app = durable_app()
    else:
        app = web.Application()
        app.router.add_post(ROUTE, fire)
    web.run_app(
        app, host="127.0.0.1", port=port, access_log=None, print=None, backlog=2048
    )  # as the services


if __name__ == "__main__":
    import uvloop

    uvloop.install()
    main()
