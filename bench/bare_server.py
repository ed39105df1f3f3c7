"""The baseline: a bare aiohttp handler that reads the body and answers 202 (no checks, no database)."""

from __future__ import annotations

import sys
import uuid

from aiohttp import web


async def fire(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"runId": str(uuid.uuid4()), "status": "received"}, status=202)


def main() -> None:
    app = web.Application()
    app.router.add_post("/api/routine-triggers/public/{publicId}/fire", fire)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    import uvloop

    uvloop.install()
    main()
