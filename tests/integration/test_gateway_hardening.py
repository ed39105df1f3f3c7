"""Gateway hardening (issue 11): each test is named after the defect it guards against."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.integration.api_client import Client, api_app
from tests.integration.test_gateway import MODES, Hook, gateway_app, make_hook, run_count
from tests.netproxy import segmenting_proxy
from tests.support import Stack

LIMIT = 256 * 1024


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[Client]:
    async with TestClient(TestServer(api_app(stack, manual_run_wait_sec=0))) as client:
        yield client


@pytest.fixture
async def gateway_server(stack: Stack) -> AsyncIterator[TestServer]:
    """A gateway on a real port with the default body limit (256 KiB)."""
    server = TestServer(gateway_app(stack, webhook_max_body_bytes=LIMIT))
    await server.start_server()
    assert server.port is not None
    yield server
    await server.close()


def port(server: TestServer) -> int:
    assert server.port is not None
    return server.port


def body_of(size: int, n: int = 0) -> bytes:
    filler = max(0, size - len(b'{"event": "push", "n": 0, "data": ""}'))
    return json.dumps({"event": "push", "n": n, "data": "x" * filler}).encode()


async def _chunks(body: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def post(
    http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], chunked: bool
) -> tuple[int, Any]:
    data: Any = _chunks(body) if chunked else body
    async with http.post(url, data=data, headers=headers) as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize("mode", MODES)
async def test_segmented_body_is_read_whole_not_what_happens_to_be_buffered(
    api: Client, gateway_server: TestServer, admin_token: str, db: asyncpg.Connection, mode: str
) -> None:
    """Bodies that arrive in small, delayed TCP segments (Content-Length and chunked, small and
    ~200 KB) verify and are stored whole, in every signing mode."""
    hook = await make_hook(api, admin_token, mode)
    async with (
        segmenting_proxy(
            gateway_server.host, port(gateway_server), segment=1460, delay=0.001, pause_in_body=10, pause=0.3
        ) as proxy,
        aiohttp.ClientSession() as http,
    ):
        n = 0
        for size in (40, 200 * 1024):
            for chunked in (False, True):
                n += 1
                body = body_of(size, n)
                headers = hook.headers(body, msg_id=f"m-{n}")
                status, answer = await post(http, proxy.url + hook.path, body, headers, chunked)
                assert status == 202, (size, chunked, answer)
                stored = await db.fetchval(
                    "SELECT payload FROM routine_runs WHERE id = $1::uuid", answer["runId"]
                )
                assert stored == json.loads(body)
        assert proxy.connections >= 1
    assert await run_count(db) == 4


async def test_chunked_body_over_the_limit_is_413_not_400(
    api: Client, gateway_server: TestServer, admin_token: str, db: asyncpg.Connection
) -> None:
    hook = await make_hook(api, admin_token, "bearer")
    body = body_of(LIMIT + 50_000)
    async with (
        segmenting_proxy(gateway_server.host, port(gateway_server), segment=8192, delay=0.001) as proxy,
        aiohttp.ClientSession() as http,
    ):
        status, answer = await post(http, proxy.url + hook.path, body, hook.headers(body), chunked=True)
        assert status == 413, answer
        assert "exceeds" in answer["error"]
    assert await run_count(db) == 0


__all__ = ["Hook"]
