"""The shared HTTP skeleton: JSON errors, body limits, request ids, health and readiness."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from shared.devservers import NatsServer
from shared.http import BUS_KEY, DB_KEY, create_base_app, finish_routes, json_response, read_json
from shared.settings import CommonSettings
from tests.support import Stack, free_port, served, wait_until


async def _echo(request: web.Request) -> web.Response:
    return json_response({"got": await read_json(request)})


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    settings = CommonSettings(database_url=stack.database_url, nats_url=stack.nats_url, max_body_bytes=2048)
    app = create_base_app("test", settings)
    app.router.add_post("/echo", _echo)
    finish_routes(app)
    async with TestClient(served(app)) as client:
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
    await app[BUS_KEY].wait_connected(timeout=10)
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert await ready.json() == {"status": "ready", "postgres": "ok", "nats": "ok"}


async def test_livez_answers_and_healthz_is_its_alias(
    client: TestClient[web.Request, web.Application],
) -> None:
    for path in ("/livez", "/healthz"):
        resp = await client.get(path)
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}


async def _ready(client: TestClient[web.Request, web.Application]) -> tuple[int, dict[str, str]]:
    resp = await client.get("/readyz")
    return resp.status, await resp.json()


async def test_readyz_during_a_nats_outage_is_degraded_not_unready(
    client: TestClient[web.Request, web.Application], nats_server: NatsServer
) -> None:
    """Postgres is the outbox: a NATS outage must not take pods out of their Service."""
    app = client.app
    assert app is not None
    await app[BUS_KEY].wait_connected(timeout=10)
    nats_server.stop()

    async def nats_seen_down() -> tuple[int, dict[str, str]] | None:
        status, body = await _ready(client)
        return (status, body) if body["nats"] == "down" else None

    status, body = await wait_until(nats_seen_down, timeout=20)
    assert status == 200
    assert body == {"status": "degraded", "postgres": "ok", "nats": "down"}
    metrics = await (await client.get("/metrics")).text()
    assert 'routines_dependency_up{dependency="nats"} 0.0' in metrics
    assert 'routines_dependency_up{dependency="postgres"} 1.0' in metrics


async def test_readyz_with_every_pool_connection_busy_is_ready(stack: Stack) -> None:
    """A busy pool is not an outage: readiness does not queue behind the work."""
    settings = CommonSettings(
        database_url=stack.database_url, nats_url=stack.nats_url, db_pool_max=1, db_acquire_timeout_sec=5
    )
    app = create_base_app("test", settings)
    finish_routes(app)
    async with TestClient(served(app)) as client:
        async with app[DB_KEY].connection():  # the pool's only connection, held by "work"
            status, body = await _ready(client)
        assert status == 200
        assert body["postgres"] == "ok"


async def test_readyz_with_postgres_unreachable_is_503(stack: Stack) -> None:
    settings = CommonSettings(
        database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/none", nats_url=stack.nats_url
    )
    app = create_base_app("test", settings)
    finish_routes(app)
    async with TestClient(served(app)) as client:
        status, body = await _ready(client)
        assert status == 503
        assert body["status"] == "unavailable" and body["postgres"] == "down"
