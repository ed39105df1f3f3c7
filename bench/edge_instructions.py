"""Instructions per request at the HTTP edge, counted by valgrind (callgrind): the request goes
through aiohttp's own protocol handler (parser, routing, our middleware and handler, response
writing) over an in-memory transport, so the figure is the process's user-space work for one
request — deterministic to about 1 %, where requests/s on a shared host move by ±30 % between
runs of a minute.

Rows: a bare aiohttp handler on the gateway's route (reads the body, answers 202 — the same
baseline as bench/webhook_ingest.py), then the gateway answering a fire to a webhook out of
budget (429 before the body is read) and to an unknown webhook once the address has spent its failed
attempts (429) — what floods of either become. The gateway is built as the service builds it, its
trigger cache filled by hand, access lines off (their 10 a second are per second, not per
request). Last, accepted fires: signed deliveries to a real webhook, 20 connections at a time (the
group commit takes them in batches, as at saturation), committed in a real Postgres and announced
on a real NATS, both started by this script outside valgrind — the row counts the gateway
process's work per accepted fire (HTTP, checks, HMAC, JSON, asyncpg, publishing), not Postgres's.

Run: `.venv/bin/python -m bench.edge_instructions` (needs valgrind: `apt-get install valgrind`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import add_webhooks, seed, servers, service_env
from shared.fastpath import with_fast_route

REQUESTS = 300  # per phase; each row is a warm-up phase then a measured one
CONCURRENT = 20  # connections at a time for accepted fires
BODY = b'{"event": "deploy", "id": 12345, "ref": "refs/heads/main", "sha": "0123456789abcdef"}'
KNOWN, UNKNOWN = "a" * 24, "b" * 24


class _Transport(asyncio.Transport):
    """Collects what the server writes; wakes the driver when a whole answer is out."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.answered: asyncio.Future[bytes] | None = None
        self.closed = False

    def write(self, data: Any) -> None:
        self.out += data
        self._check()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.out += data
        self._check()

    def _check(self) -> None:
        end = self.out.find(b"\r\n\r\n")
        if end < 0:
            return
        length = re.search(rb"(?i)\r\ncontent-length: (\d+)", bytes(self.out[:end]))
        size = end + 4 + (int(length.group(1)) if length else 0)
        if len(self.out) >= size:
            status = bytes(self.out[9:12])
            del self.out[:size]
            if self.answered is not None and not self.answered.done():
                self.answered.set_result(status)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


def _request(public_id: str) -> bytes:
    head = (
        f"POST /api/routine-triggers/public/{public_id}/fire HTTP/1.1\r\nHost: gw\r\n"
        "Content-Type: application/json\r\nX-Routines-Signature: sha256=00\r\n"
        f"X-Routines-Timestamp: 1700000000\r\nContent-Length: {len(BODY)}\r\n\r\n"
    )
    return head.encode() + BODY


async def _phases(app: Any, request: bytes, handler_args: dict[str, Any]) -> bytes:
    """Warm-up, then the measured phase; os.getppid() marks each phase's start and end for
    callgrind (--dump-before=getppid). Returns the status of the last answer."""
    protocol = with_fast_route(app, app._make_handler(access_log=None, **handler_args))()
    transport = _Transport()
    protocol.connection_made(transport)
    loop = asyncio.get_running_loop()
    status = b""
    for _ in ("warm-up", "measured"):
        os.getppid()
        for _ in range(REQUESTS):
            transport.answered = loop.create_future()
            protocol.data_received(request)
            status = await transport.answered
    os.getppid()
    return status


async def _concurrent_phases(app: Any, requests: list[bytes], handler_args: dict[str, Any]) -> bytes:
    """Like _phases, with CONCURRENT connections at a time: half of `requests` warm up, the other
    half are measured."""
    protocols = []
    for _ in range(CONCURRENT):
        protocol = with_fast_route(app, app._make_handler(access_log=None, **handler_args))()
        transport = _Transport()
        protocol.connection_made(transport)
        protocols.append((protocol, transport))
    loop = asyncio.get_running_loop()
    pending = iter(requests)
    status = b""
    for _ in ("warm-up", "measured"):
        os.getppid()
        for _ in range(REQUESTS // CONCURRENT):
            for protocol, transport in protocols:
                transport.answered = loop.create_future()
                protocol.data_received(next(pending))
            answers = await asyncio.gather(*(t.answered for _, t in protocols if t.answered is not None))
            status = answers[-1]
    os.getppid()
    return status


def _signed_requests(public_id: str, secret: str) -> list[bytes]:
    """2 × REQUESTS distinct signed deliveries (bench/loadgen.py's format) as HTTP requests."""
    from bench.loadgen import signed_fires, webhook_request

    return [webhook_request("gw", f) for f in signed_fires([(public_id, secret)], 2 * REQUESTS)]


async def _drive() -> None:
    """Under valgrind: the rows, in order."""
    from aiohttp import web

    from bench.bare_server import ROUTE, fire
    from routines_gateway.app import CACHE_KEY, create_app
    from routines_gateway.cache import TriggerState
    from routines_gateway.fire import FireHandler
    from shared.lifecycle import HANDLER_ARGS_KEY
    from shared.logging import configure_logging
    from shared.settings import GatewaySettings

    configure_logging("webhook-gateway", "info", "json")

    bare = web.Application()
    bare.router.add_post(ROUTE, fire)  # bench/bare_server.py's handler: the same baseline
    settings = GatewaySettings(
        database_url="postgresql://bench@127.0.0.1:1/none",
        nats_url="nats://127.0.0.1:1",
        secret_key=os.environ["ROUTINES_SECRET_KEY"],
        rate_limit_trigger_per_sec=0.0001,  # the known webhook: out of budget once its token is spent
        rate_limit_trigger_burst=1,
        rate_limit_failed_per_sec=0.0001,  # the address has spent its failed attempts
        rate_limit_failed_burst=1,
        access_log="off",
    )
    app = create_app(settings)
    cache = app[CACHE_KEY]
    trigger_id = uuid.uuid4()
    cache._entries[KNOWN] = TriggerState(
        trigger_id,
        uuid.uuid4(),
        uuid.uuid4(),
        True,
        "active",
        "hmac_sha256",
        300,
        ("s",),
        time.monotonic() + 1e9,
    )
    # Its one token spent by a verified fire (the signature sent never verifies: without this,
    # the row would measure the failed-attempts refusal instead).
    handler = next(
        getattr(r.handler, "__self__", None) for r in app.router.routes() if r.handler.__name__ == "fire"
    )
    assert isinstance(handler, FireHandler)
    handler.per_trigger.take(str(trigger_id))
    cache._missing[UNKNOWN] = time.monotonic() + 1e9  # looked up once: no such webhook
    statuses = [
        await _phases(bare, _request(KNOWN), {}),
        await _phases(app, _request(KNOWN), app[HANDLER_ARGS_KEY]),
        await _phases(app, _request(UNKNOWN), app[HANDLER_ARGS_KEY]),
    ]
    # The service as it runs: settings from the environment (the stack main() started).
    accepting = create_app(GatewaySettings(access_log="off"))
    accepting.freeze()
    await accepting.startup()
    try:
        requests = _signed_requests(os.environ["BENCH_PUBLIC_ID"], os.environ["BENCH_SECRET"])
        statuses.append(await _concurrent_phases(accepting, requests, accepting[HANDLER_ARGS_KEY]))
    finally:
        await accepting.cleanup()
    print("statuses:", *(s.decode() for s in statuses), file=sys.stderr)


ROWS = (
    "bare aiohttp handler (202)",
    "gateway: webhook out of budget (429)",
    "gateway: unknown webhook (429)",
    f"gateway: accepted fire, {CONCURRENT} at a time (202)",
)


@contextlib.asynccontextmanager
async def _stack() -> AsyncIterator[dict[str, str]]:
    """Postgres and NATS (outside valgrind), one routine with a webhook: the gateway's environment."""
    async with servers() as s:
        stack = await s.fresh_stack("edge")
        conn = await asyncpg.connect(stack.database_url)
        try:
            world = await seed(conn, 1)
            await add_webhooks(conn, world, stack.secret_key)
        finally:
            await conn.close()
        public_id, secret = world.hooks[0]
        yield {**service_env(stack), "BENCH_PUBLIC_ID": public_id, "BENCH_SECRET": secret}


def main() -> dict[str, Any]:
    return asyncio.run(measure())


async def measure() -> dict[str, Any]:
    """The rows (from a running event loop: bench/run.py)."""
    if shutil.which("valgrind") is None:
        print("valgrind not found (apt-get install valgrind): skipping")
        return {}
    async with _stack() as env:
        return await asyncio.to_thread(_callgrind, env)


def callgrind_rows(
    env: dict[str, str], module: str = "bench.edge_instructions"
) -> tuple[list[float], list[str]]:
    """Run `module --drive` (the rows of `_drive`) under callgrind: instructions per request and
    the last status of each row."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg"
        run = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--dump-before=getppid",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-m",
                module,
                "--drive",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, **env, "PYTHONHASHSEED": "0"},
        )
        if run.returncode != 0:
            raise SystemExit(f"the measured process failed:\n{run.stderr[-3000:]}")
        statuses = re.findall(r"^statuses: (.*)$", run.stderr, re.M)[-1].split()
        # Dumps: 1 start-up, then per row: warm-up, measured, the gap before the next row.
        totals = []
        for row in range(len(ROWS)):
            summary = re.search(r"^summary: (\d+)$", Path(f"{out}.{3 + 3 * row}").read_text(), re.M)
            assert summary is not None, "callgrind wrote no summary"
            totals.append(int(summary.group(1)) / REQUESTS)
    return totals, statuses


def _callgrind(env: dict[str, str]) -> dict[str, Any]:
    totals, statuses = callgrind_rows(env)
    bare = totals[0]
    print(f"instructions per request (callgrind, {REQUESTS} requests after {REQUESTS} of warm-up):")
    for name, status, total in zip(ROWS, statuses, totals, strict=True):
        print(f"  {name:<40} {status}  {total:>9,.0f}  = {total / bare:.2f} of bare")
    return {"instructions_per_request": dict(zip(ROWS, totals, strict=True)), "statuses": statuses}


if __name__ == "__main__":
    if "--drive" in sys.argv:
        import uvloop

        uvloop.run(_drive())
    else:
        main()
