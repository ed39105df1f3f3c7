"""Each service as a real process: starts, answers health routes, logs request ids, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import socket
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


async def test_readyz_follows_postgres_down_and_back(
    tmp_path: Path, server_tmp: Path, nats_server: NatsServer
) -> None:
    """503 while Postgres is stopped, 200 again after it restarts, without restarting the service."""
    postgres = PostgresServer(server_tmp / "pg", fast=True)
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


BURST = 600  # new connections at once: more than the 128 aiohttp listens with by default


async def _connect_all(port: int, count: int, within: float) -> list[socket.socket]:
    """Start `count` connections at once; return those whose handshake completed `within` seconds
    (the others are closed)."""
    pending = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        pending.append(sock)
    connected: list[socket.socket] = []
    deadline = time.monotonic() + within
    while pending and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        _, writable, _ = select.select([], pending, [], 0)
        for sock in writable:
            pending.remove(sock)
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                connected.append(sock)
            else:
                sock.close()
    for sock in pending:
        sock.close()
    return connected


async def _healthz(sock: socket.socket) -> bytes:
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: burst\r\nConnection: close\r\n\r\n")
    try:
        return (await asyncio.wait_for(reader.readline(), 30)).split(b" ")[1]
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@pytest.mark.parametrize(("backlog", "expected"), [(None, BURST), (64, 65)])
async def test_a_burst_of_connections_to_a_stalled_service_waits_in_its_accept_queue(
    backlog: int | None, expected: int, stack: Stack, tmp_path: Path
) -> None:
    """Webhook senders open a connection per delivery. While the service's loop is stalled (a GC
    pause, CPU throttling; SIGSTOP here) the kernel completes their handshakes into the listen
    socket's accept queue — only as many as its backlog. Beyond it the kernel drops the SYN, and
    the sender retries 1, 3, 7, 15, 31 s later: the soak's 30 s client timeouts. The default
    backlog holds a burst of 600 (aiohttp's own default is 128); ROUTINES_HTTP_BACKLOG sets it,
    and the kernel keeps backlog + 1 connections."""
    extra = {} if backlog is None else {"http_backlog": backlog}
    service = start_service("webhook-gateway", stack.env(**extra), tmp_path)
    assert service.proc is not None
    try:
        os.kill(service.proc.pid, signal.SIGSTOP)
        try:
            # A dropped SYN is retried after 1 s and 3 s, and dropped again while the service is
            # stopped: whatever has not connected within 2.5 s is waiting on a retry.
            connections = await _connect_all(service.port, BURST, within=2.5)
        finally:
            os.kill(service.proc.pid, signal.SIGCONT)
        try:
            assert len(connections) == expected
        except AssertionError:
            for sock in connections:
                sock.close()
            raise
        statuses = await asyncio.gather(*(_healthz(sock) for sock in connections))
        assert statuses == [b"200"] * expected
    finally:
        service.kill()


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
