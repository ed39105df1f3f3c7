"""Each service as a real process: starts, answers health routes, logs request ids, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from shared.devservers import NatsServer, PostgresServer
from shared.migrate import migrate
from tests.support import Stack, start_service

pytestmark = pytest.mark.e2e

SERVICES = ["api", "scheduler", "webhook-gateway", "run-dispatcher"]


@pytest.mark.parametrize("name", SERVICES)
async def test_service_starts_answers_and_stops_on_sigterm(name: str, stack: Stack, tmp_path: Path) -> None:
    service = start_service(name, stack.env(), tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            for path in ("/healthz", "/readyz", "/metrics"):
                async with http.get(service.url + path) as resp:
                    assert resp.status == 200, path
            async with http.get(service.url + "/nope", headers={"X-Request-ID": "trace-" + name}) as resp:
                assert resp.status == 404
                assert (await resp.json())["error"].startswith("no route")
        started = time.monotonic()
        assert service.stop() == 0
        assert time.monotonic() - started < 10
        lines = service.log_lines()
        assert any(
            line.get("request_id") == "trace-" + name and line.get("event") == "request" for line in lines
        )
    finally:
        service.kill()


async def test_readyz_follows_postgres_down_and_back(tmp_path: Path, nats_server: NatsServer) -> None:
    """503 while Postgres is stopped, 200 again after it restarts, without restarting the service."""
    postgres = PostgresServer(tmp_path / "pg", fast=True)
    postgres.start()
    try:
        await migrate(postgres.dsn)
        stack = Stack(database_url=postgres.dsn, nats_url=nats_server.url)
        service = start_service("api", stack.env(), tmp_path)
        try:
            postgres.stop()
            async with aiohttp.ClientSession() as http:
                async with http.get(service.url + "/readyz") as resp:
                    assert resp.status == 503
                    assert (await resp.json())["postgres"] == "down"
                postgres.start()
                for _ in range(100):
                    async with http.get(service.url + "/readyz") as resp:
                        if resp.status == 200:
                            break
                    await asyncio.sleep(0.1)
                assert resp.status == 200
        finally:
            service.kill()
    finally:
        postgres.stop()


def test_missing_setting_is_named_at_start(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTINES_")}
    result = subprocess.run(
        [sys.executable, "-m", "shared.cli", "api"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "ROUTINES_DATABASE_URL" in result.stderr
    assert "ROUTINES_SECRET_KEY" in result.stderr
