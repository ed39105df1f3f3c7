"""Every answer is counted once in the request metrics, under its route, method and status (the
edge counts them on the event loop, shared/loop_metrics.py; this holds them to the same counts)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY, generate_latest

from shared.errors import Conflict
from shared.http import _observe, create_base_app, finish_routes, json_response
from shared.settings import CommonSettings
from tests.support import Stack, served

Client = TestClient[web.Request, web.Application]


async def _ok(_request: web.Request) -> web.Response:
    return json_response({"ok": True})


async def _conflict(_request: web.Request) -> web.Response:
    raise Conflict("no")


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[Client]:
    settings = CommonSettings(database_url=stack.database_url, nats_url=stack.nats_url)
    app = create_base_app("test", settings)
    app.router.add_get("/metered/{id}", _ok)
    app.router.add_post("/metered/{id}", _conflict)
    finish_routes(app)
    async with TestClient(served(app)) as client:
        yield client


async def _value(client: Client, metric: str, labels: str) -> float:
    text = await (await client.get("/metrics")).text()
    match = re.search(rf"^{metric}\{{{re.escape(labels)}\}} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def test_each_answer_is_counted_once_by_route_method_and_status(client: Client) -> None:
    ok = 'method="GET",route="/metered/{id}",status="200"'
    conflict = 'method="POST",route="/metered/{id}",status="409"'
    timed = 'method="GET",route="/metered/{id}"'
    before = [
        await _value(client, "routines_http_requests_total", ok),
        await _value(client, "routines_http_requests_total", conflict),
        await _value(client, "routines_http_request_seconds_count", timed),
    ]
    for i in range(5):
        assert (await client.get(f"/metered/{i}")).status == 200
    for i in range(3):
        assert (await client.post(f"/metered/{i}")).status == 409
    after = [
        await _value(client, "routines_http_requests_total", ok),
        await _value(client, "routines_http_requests_total", conflict),
        await _value(client, "routines_http_request_seconds_count", timed),
    ]
    assert [a - b for a, b in zip(after, before, strict=True)] == [5, 3, 5]


def test_methods_made_up_are_counted_as_one() -> None:
    """Without aiohttp's C parser any token is a method: each would have been a series of its own."""
    before = generate_latest(REGISTRY).decode()
    for i in range(5):
        _observe("/made-up-route", f"MADEUP{i}", 404, 0.001)
    text = generate_latest(REGISTRY).decode()
    assert "MADEUP" not in text
    line = 'routines_http_requests_total{method="other",route="/made-up-route",status="404"}'
    assert f"{line} 5.0" in text and line not in before
