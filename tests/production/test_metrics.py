"""Platform metrics on the separate metrics port: build, pool, NATS state, runs still received."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from shared.devservers import NatsServer, free_port
from tests.factories import make_routine, make_run, make_world
from tests.support import Stack, start_service, wait_until

pytestmark = pytest.mark.production


def sample(text: str, name: str, labels: str = "") -> float | None:
    match = re.search(rf"^{re.escape(name + labels)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


async def test_dispatcher_exports_platform_metrics_on_its_metrics_port(
    stack: Stack, nats_server: NatsServer, tmp_path: Path, db: asyncpg.Connection
) -> None:
    world = await make_world(db)
    routine = await make_routine(db, world)
    for _ in range(3):  # recorded, never published, not swept: they stay received
        await make_run(db, world, routine)
    port = free_port()
    dispatcher = start_service(
        "run-dispatcher",
        stack.env(metrics_port=port, metrics_refresh_sec=0.2, sweep_after_sec=600, db_pool_max=7),
        tmp_path,
    )
    try:
        async with aiohttp.ClientSession() as http:

            async def scrape() -> str:
                async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                    assert resp.status == 200
                    return await resp.text()

            async def received_counted() -> str | None:
                text = await scrape()
                pending = sample(text, "routines_nats_consumer_pending", '{consumer="run-dispatcher"}')
                return text if sample(text, "routines_runs_received") == 3 and pending is not None else None

            text = await wait_until(received_counted, timeout=30)
            assert re.search(
                r'^routines_build_info\{python="3\.11\.\d+",service="run-dispatcher",version="[^"]+"\} 1\.0$',
                text,
                re.M,
            )
            assert sample(text, "routines_db_pool_max") == 7
            assert sample(text, "routines_db_pool_connections", '{state="open"}') is not None
            assert sample(text, "routines_nats_connected") == 1
            assert (sample(text, "routines_runs_received_oldest_seconds") or 0) >= 0
            assert sample(text, "routines_nats_consumer_pending", '{consumer="run-dispatcher"}') == 0

            nats_server.stop()

            async def disconnected() -> bool:
                return sample(await scrape(), "routines_nats_connected") == 0

            await wait_until(disconnected, timeout=30)
            nats_server.start()
    finally:
        dispatcher.kill()
