"""The in-process test server runs an app as the services' `serve` does (tests/support.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from shared.lifecycle import HANDLER_ARGS_KEY
from tests.support import served


def _app(finished: asyncio.Event) -> web.Application:
    app = web.Application()
    app[HANDLER_ARGS_KEY] = {"keepalive_timeout": 0.3, "lingering_time": 1.0, "auto_decompress": False}

    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        finished.set()
        return web.Response(text="done")

    async def quick(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/slow", slow)
    app.router.add_get("/", quick)
    return app


@contextlib.asynccontextmanager
async def _requested(
    finished: asyncio.Event, path: str
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """`_app` served as the services run it, with a GET of `path` sent on a fresh connection."""
    server = served(_app(finished))
    await server.start_server()
    try:
        assert server.port is not None
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        await writer.drain()
        yield reader, writer
        writer.close()
    finally:
        await server.close()


async def test_the_services_connection_options_hold_in_process() -> None:
    """aiohttp's TestServer drops options given to its constructor: `served` used to pass the
    services' keep-alive (header) timeout, lingering time and `auto_decompress` there, so every
    in-process test ran with aiohttp's defaults instead."""
    async with _requested(asyncio.Event(), "/") as (reader, _writer):
        await reader.readuntil(b"ok")
        # Idle after the answer: closed at the keep-alive (header) timeout, 0.3 s here.
        assert await asyncio.wait_for(reader.read(), 3) == b""


async def test_a_client_gone_before_the_answer_does_not_cancel_the_handler() -> None:
    """The services run without handler cancellation (aiohttp's default for `AppRunner`): a fire
    whose sender hangs up is still recorded and its handler runs to the end. aiohttp's TestServer
    turns cancellation on; `served` turns it off again, or in-process tests would see handlers
    cancelled that never are in production."""
    finished = asyncio.Event()
    async with _requested(finished, "/slow") as (_reader, writer):
        await asyncio.sleep(0.05)
        writer.transport.abort()  # a reset, before the answer
        await asyncio.wait_for(finished.wait(), 3)
