"""The Python client without a stack: signing agrees with the gateway, retries honour Retry-After,
errors are typed, and the generated code matches the OpenAPI document."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from routines_api.app import openapi_document
from routines_client import AsyncRoutinesClient, NotFound, RateLimited, Unavailable, sign
from routines_client.errors import Unprocessable
from routines_client.operations import AsyncOperations, SyncOperations
from routines_gateway.signing import AuthenticationFailed, verify

ROOT = Path(__file__).resolve().parents[2]
MODES = ["bearer", "hmac_sha256", "github_hmac", "standard_webhooks"]


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=40, deadline=None)
@given(body=st.binary(max_size=2048), secret=st.text("abcdef0123456789", min_size=32, max_size=64))
def test_signed_bodies_verify_at_the_gateway_and_tampered_ones_do_not(
    mode: str, body: bytes, secret: str
) -> None:
    now = time.time()
    headers = sign(mode, secret, body, timestamp=int(now))  # type: ignore[arg-type]
    verified = verify(mode, headers, body, [secret], now, 300)  # raises if it does not verify
    assert verified.signature or mode == "bearer"
    if mode != "bearer":  # bearer does not cover the body
        with pytest.raises(AuthenticationFailed):
            verify(mode, headers, body + b" ", [secret], now, 300)
    with pytest.raises(AuthenticationFailed):
        verify(mode, headers, body, [secret + "x"], now, 300)


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("generate", ROOT / "clients/python/generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_openapi_operation_has_a_client_method() -> None:
    doc = openapi_document()
    snake = _generator().snake  # the generator's own naming rule

    for ops in doc["paths"].values():
        for op in ops.values():
            name = snake(op["operationId"])
            assert callable(getattr(AsyncOperations, name, None)), f"no async method {name}"
            assert callable(getattr(SyncOperations, name, None)), f"no sync method {name}"


def test_generated_client_code_is_up_to_date_with_the_openapi_document() -> None:
    result = subprocess.run(
        [sys.executable, "clients/python/generate.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture
async def flaky_server() -> AsyncIterator[tuple[TestServer, list[float]]]:
    """A server answering 429 (Retry-After: 0.2) then 503 then 200, recording arrival times."""
    arrivals: list[float] = []

    async def handler(_request: web.Request) -> web.Response:
        arrivals.append(time.monotonic())
        if len(arrivals) == 1:
            return web.json_response(
                {"error": "slow down", "details": None}, status=429, headers={"Retry-After": "0.2"}
            )
        if len(arrivals) == 2:
            return web.json_response({"error": "database busy", "details": None}, status=503)
        return web.json_response([])

    app = web.Application()
    app.router.add_get("/api/companies", handler)
    server = TestServer(app)
    await server.start_server()
    yield server, arrivals
    await server.close()


async def test_429_and_503_are_retried_honouring_retry_after(
    flaky_server: tuple[TestServer, list[float]],
) -> None:
    server, arrivals = flaky_server
    async with AsyncRoutinesClient(str(server.make_url("")), "token", max_retries=3) as client:
        assert await client.list_companies() == []
    assert len(arrivals) == 3
    assert arrivals[1] - arrivals[0] >= 0.2  # waited as told, not less


async def test_retries_give_up_with_the_typed_error(flaky_server: tuple[TestServer, list[float]]) -> None:
    server, _arrivals = flaky_server
    async with AsyncRoutinesClient(str(server.make_url("")), "token", max_retries=0) as client:
        with pytest.raises(RateLimited) as info:
            await client.list_companies()
    assert info.value.retry_after == 0.2
    assert info.value.error == "slow down"
    async with AsyncRoutinesClient(str(server.make_url("")), "token", max_retries=0) as client:
        with pytest.raises(Unavailable):
            await client.list_companies()


async def test_error_bodies_become_typed_errors_with_message_and_details() -> None:
    async def handler(request: web.Request) -> web.Response:
        status = int(request.match_info["status"])
        return web.json_response({"error": f"e{status}", "details": {"field": "x"}}, status=status)

    app = web.Application()
    app.router.add_route("*", "/api/routines/{status}", handler)
    server = TestServer(app)
    await server.start_server()
    try:
        async with AsyncRoutinesClient(str(server.make_url("")), "t", max_retries=0) as client:
            with pytest.raises(NotFound) as not_found:
                await client.get_routine("404")
            assert (not_found.value.status, not_found.value.details) == (404, {"field": "x"})
            with pytest.raises(Unprocessable):
                await client.get_routine("422")
    finally:
        await server.close()


def test_the_sync_client_raises_the_same_typed_errors() -> None:
    # The sync facade owns its event loop, so it runs in a process of its own here.
    code = (
        "from routines_client import RoutinesClient, ConnectionFailed\n"
        "c = RoutinesClient('http://127.0.0.1:9', 't', max_retries=0)\n"
        "try:\n    c.list_companies()\nexcept ConnectionFailed as e:\n    print('typed', type(e).__name__)\n"
        "c.close()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "typed ConnectionFailed"


@pytest.mark.parametrize(
    ("providers", "command", "extra"),
    [
        (["routines"], "routines", "pip install 'routines[agents]'"),
        (["routines-client"], "routines-client", "pip install './clients/python[mcp]'"),
    ],
)
def test_mcp_names_the_command_and_extra_of_the_installation_it_runs_from(
    monkeypatch: pytest.MonkeyPatch, providers: list[str], command: str, extra: str
) -> None:
    """`pip install ./clients/python` gives `routines-client` and the `mcp` extra; the server
    package gives `routines` and the `agents` extra: the missing-SDK hint must fit the one in use."""
    from routines_client import mcp_server

    monkeypatch.setattr(importlib.metadata, "packages_distributions", lambda: {"routines_client": providers})
    monkeypatch.setitem(sys.modules, "mcp", None)  # the SDK is missing: importing it fails
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    assert mcp_server.main() == 2
    message = stderr.getvalue()
    assert message.startswith(f"{command} mcp: the MCP SDK is not installed; "), message
    assert extra in message, message
