"""The shared HTTP skeleton: JSON errors, body limits, request ids, health and readiness."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from shared.http import create_base_app, finish_routes, json_response, read_json
from shared.settings import CommonSettings
from tests.support import Stack


async def _echo(request: web.Request) -> web.Response:
    return json_response({"got": await read_json(request)})


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    settings = CommonSettings(database_url=stack.database_url, nats_url=stack.nats_url, max_body_bytes=2048)
    app = create_base_app("test", settings)
    app.router.add_post("/echo", _echo)
    finish_routes(app)
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_unknown_route_is_a_json_404(
    client: TestClient[web.Request, web.Application],
) -> None:
    resp = await client.get("/no/such/route")
    assert resp.status == 404
    body = await resp.json()
    assert body["error"] == "no route for GET /no/such/route"
    assert "details" in body


async def test_invalid_json_is_a_json_400(client: TestClient[web.Request, web.Application]) -> None:
    resp = await client.post("/echo", data=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert (await resp.json())["error"] == "request body is not valid JSON"


async def test_body_over_the_limit_is_a_json_413(
    client: TestClient[web.Request, web.Application],
) -> None:
    resp = await client.post("/echo", data=b"x" * 5000, headers={"Content-Type": "application/json"})
    assert resp.status == 413
    assert "too large" in (await resp.json())["error"] or "exceeds" in (await resp.json())["error"]


async def test_wrong_content_type_is_a_json_415(
    client: TestClient[web.Request, web.Application],
) -> None:
    resp = await client.post("/echo", data=b"a=b", headers={"Content-Type": "text/plain"})
    assert resp.status == 415


async def test_valid_json_passes_and_request_id_is_echoed(
    client: TestClient[web.Request, web.Application],
) -> None:
    resp = await client.post("/echo", json={"a": 1}, headers={"X-Request-ID": "req-abc-123"})
    assert resp.status == 200
    assert await resp.json() == {"got": {"a": 1}}
    assert resp.headers["X-Request-ID"] == "req-abc-123"


async def test_healthz_metrics_and_readyz(client: TestClient[web.Request, web.Application]) -> None:
    assert (await client.get("/healthz")).status == 200
    metrics = await client.get("/metrics")
    assert metrics.status == 200
    assert "routines_http_requests_total" in await metrics.text()
    app = client.app
    assert app is not None
    from shared.http import BUS_KEY

    await app[BUS_KEY].wait_connected(timeout=10)
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert await ready.json() == {"status": "ready", "postgres": "ok", "nats": "ok"}
