"""Nothing lost, nothing decided twice, nobody left unwoken — under faults, with load running.

Real processes (API, gateways, schedulers, dispatchers), real Postgres and NATS. Faults: random
SIGKILLs, NATS down, Postgres restarted, a gateway frozen with SIGSTOP, every service connection
terminated by Postgres, the API SIGKILLed. After each: every process still alive, no client
request timed out or failed against a live process, every accepted fire recorded with its payload,
every due schedule slot (by the test's clock) fired, coalesced counts and wake-ups matching the
decisions. `ROUTINES_CHAOS_SECONDS` sets the length of the kill test (default 60).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from shared.db import init_connection
from shared.devservers import LocalServer, NatsServer, PostgresServer
from tests.resilience.chaos import (
    CHAOS_SETTINGS,
    Fleet,
    ScheduleOracle,
    Tally,
    Wakeups,
    World,
    mixed_load,
    setup_world,
    terminate_service_connections,
    verify,
)
from tests.support import Stack

pytestmark = pytest.mark.resilience

SETTINGS: dict[str, Any] = CHAOS_SETTINGS
# One of each, two gateways: each fault below must be survived without a sibling to cover for it.
LEAN = {"webhook-gateway": 2, "scheduler": 1, "run-dispatcher": 1}


@pytest.fixture
async def wakeups(stack: Stack) -> AsyncIterator[Wakeups]:
    subscriber = Wakeups(stack.nats_url)
    await subscriber.start()
    yield subscriber
    await subscriber.close()


async def _wait_in_flight(tally: Tally, label: str, timeout: float = 10.0) -> int:
    """Poll until some request to `label` is in flight (so a fault lands mid-request)."""
    deadline = time.monotonic() + timeout
    while tally.in_flight[label] == 0:
        assert time.monotonic() < deadline, f"no request to {label} in flight"
        await asyncio.sleep(0.001)
    return tally.in_flight[label]


@asynccontextmanager
async def _fleet(
    stack: Stack, tmp_path: Path, replicas: int | dict[str, int] = 2
) -> AsyncIterator[tuple[Fleet, World, ScheduleOracle]]:
    """A fleet of real service processes (stopped after), the routines of the chaos world made
    through its API, and an oracle for their schedule slots."""
    fleet = Fleet(stack, tmp_path, replicas, **SETTINGS)
    try:
        world = await setup_world(stack, fleet.api)
        yield fleet, world, ScheduleOracle(world)
    finally:
        fleet.stop()


@asynccontextmanager
async def _feeding(schedules: ScheduleOracle, database_url: str) -> AsyncIterator[asyncio.Event]:
    """Schedule triggers added every few seconds until the block ends (or the event yielded is set)."""
    stop = asyncio.Event()
    feed = asyncio.create_task(schedules.feed(database_url, stop))
    try:
        yield stop
    finally:
        stop.set()
        await feed


async def _outage(server: LocalServer, after: float, lasting: float) -> tuple[float, float]:
    """Stop `server` `after` seconds from now and start it again `lasting` seconds later: the
    wall-clock times it went down and came back up."""
    await asyncio.sleep(after)
    down = time.time()
    server.stop()
    await asyncio.sleep(lasting)
    server.start()
    return down, time.time()


async def test_random_sigkills_under_mixed_load(
    stack: Stack, tmp_path: Path, db: asyncpg.Connection, wakeups: Wakeups
) -> None:
    async with _fleet(stack, tmp_path) as (fleet, world, schedules):
        async with _feeding(schedules, stack.database_url) as stop:
            chaos = asyncio.create_task(fleet.chaos(stop))
            tally = Tally()
            await mixed_load(fleet, world, float(os.environ.get("ROUTINES_CHAOS_SECONDS", "60")), 40, tally)
            stop.set()
            await chaos
        fleet.assert_all_alive("random SIGKILLs")
        # A dispatcher killed between its commit and its publish loses those wake-ups (agents
        # also poll): excused only for decisions made just before a dispatcher was killed.
        windows = [(t - 5, t + 1) for t, label in fleet.kills if label.startswith("run-dispatcher")]
        await verify(db, tally, world, wakeups, schedules, windows)
        assert len(fleet.kills) >= 5
        fleet.assert_all_alive("the checks")


async def test_nats_down_thirty_seconds_under_load(
    stack: Stack, nats_server: NatsServer, tmp_path: Path, db: asyncpg.Connection, wakeups: Wakeups
) -> None:
    async with _fleet(stack, tmp_path) as (fleet, world, schedules):
        async with _feeding(schedules, stack.database_url):
            tally = Tally()
            # Load goes on 10 s after NATS is back: decisions then must wake their agents again.
            load = asyncio.create_task(mixed_load(fleet, world, 45, 30, tally))
            down, up = await _outage(nats_server, after=5, lasting=30)
            await load
        fleet.assert_all_alive("NATS outage")
        await verify(db, tally, world, wakeups, schedules, [(down - 2, up + 5)])
        fleet.assert_all_alive("the checks")


async def test_postgres_restart_under_load(
    stack: Stack, postgres_server: PostgresServer, tmp_path: Path, wakeups: Wakeups
) -> None:
    """503 while Postgres is down — never a 500, a hang or a dropped connection — then recovery."""
    async with _fleet(stack, tmp_path) as (fleet, world, schedules):
        db = await asyncpg.connect(stack.database_url)
        await schedules.add(db, 30)  # slots falling due during the outage must fire after it
        await db.close()
        tally = Tally()
        load = asyncio.create_task(mixed_load(fleet, world, 30, 30, tally))
        down, up = await _outage(postgres_server, after=5, lasting=8)
        await load
        fleet.assert_all_alive("Postgres restart")
        db = await asyncpg.connect(stack.database_url)
        try:
            await init_connection(db)
            await verify(db, tally, world, wakeups, schedules, [(down - 2, up + 5)])
        finally:
            await db.close()
        assert tally.statuses[503] > 0  # the outage was seen, and answered properly
        fleet.assert_all_alive("the checks")


async def test_gateway_frozen_with_sigstop_under_load(
    stack: Stack, tmp_path: Path, db: asyncpg.Connection, wakeups: Wakeups
) -> None:
    """A gateway frozen mid-request: the other keeps serving; the frozen one's requests are
    answered once it is thawed (none lost, none timed out)."""
    async with _fleet(stack, tmp_path, LEAN) as (fleet, world, schedules):
        frozen, other = fleet.gateways
        await schedules.add(db, 10)
        tally = Tally()
        load = asyncio.create_task(mixed_load(fleet, world, 20, 30, tally))
        await asyncio.sleep(4)
        for _ in range(10):  # freeze it while it holds requests (answers it sent are read first)
            await _wait_in_flight(tally, fleet.label(frozen))
            fleet.sigstop(frozen)
            await asyncio.sleep(0.5)
            caught = tally.in_flight[fleet.label(frozen)]
            if caught:
                break
            fleet.sigcont(frozen)
        served = (tally.answered_by[fleet.label(frozen)], tally.answered_by[fleet.label(other)])
        await asyncio.sleep(6)
        during = (tally.answered_by[fleet.label(frozen)], tally.answered_by[fleet.label(other)])
        fleet.sigcont(frozen)
        await load
        fleet.assert_all_alive("SIGSTOP/SIGCONT of a gateway")
        print(f"\n[resilience] requests caught in the frozen gateway: {caught}")
        assert caught > 0
        assert during[0] == served[0]  # it really was frozen
        assert during[1] - served[1] >= 30  # the other one kept serving (30/s offered, 6 s)
        await verify(db, tally, world, wakeups, schedules, [])
        # The requests it held were answered by it after SIGCONT (a client timeout is a failure).
        assert tally.answered_by[fleet.label(frozen)] > during[0]


async def test_service_connections_terminated_under_load(
    stack: Stack, tmp_path: Path, db: asyncpg.Connection, wakeups: Wakeups
) -> None:
    """pg_terminate_backend of every service connection, eight times: 503 at worst, then recovery."""
    async with _fleet(stack, tmp_path, LEAN) as (fleet, world, schedules):
        async with _feeding(schedules, stack.database_url):
            tally = Tally()
            load = asyncio.create_task(mixed_load(fleet, world, 22, 30, tally))
            await asyncio.sleep(3)
            terminated: list[int] = []
            windows: list[tuple[float, float]] = []
            for _ in range(8):
                at = time.time()
                terminated.append(await terminate_service_connections(db))
                windows.append((at - 1, at + 1))
                await asyncio.sleep(2)
            await load
        fleet.assert_all_alive("terminated connections")
        print(f"\n[resilience] connections terminated per round: {terminated}")
        assert all(n > 0 for n in terminated)
        await verify(db, tally, world, wakeups, schedules, windows)
        fleet.assert_all_alive("the checks")


async def test_api_killed_under_load_and_restarted(
    stack: Stack, tmp_path: Path, db: asyncpg.Connection, wakeups: Wakeups
) -> None:
    """SIGKILL of the API with manual runs in flight: their retries (same idempotency key) get the
    run that was recorded, or record it now; nothing lost, nothing twice."""
    async with _fleet(stack, tmp_path, LEAN) as (fleet, world, schedules):
        await schedules.add(db, 10)
        tally = Tally()
        load = asyncio.create_task(mixed_load(fleet, world, 20, 30, tally))
        await asyncio.sleep(4)
        for _ in range(3):  # until a kill cuts a request off (an answer may be on its way back)
            caught = await _wait_in_flight(tally, "api")
            fleet.kill(fleet.api)
            await asyncio.sleep(2)
            await fleet.restart(fleet.api)
            if tally.excused["api"]:
                break
        await load
        fleet.assert_all_alive("API SIGKILL and restart")
        print(f"\n[resilience] manual runs in flight at the kill: {caught}")
        await verify(db, tally, world, wakeups, schedules, [])
        assert tally.excused["api"] > 0  # the kill cut requests off mid-flight
        fleet.assert_all_alive("the checks")
