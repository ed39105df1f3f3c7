"""Fixtures shared by the integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from routines_scheduler.ticker import Scheduler
from shared.db import Database
from shared.settings import DispatcherSettings, SchedulerSettings
from tests.integration.api_client import Client, World, api_app, make_routine, make_tenant
from tests.support import Stack, open_database, served, service_connections


@pytest.fixture
def api_settings() -> dict[str, Any]:
    """Settings of the in-process API behind `client`; a module overrides this fixture to change them."""
    return {}


@pytest.fixture
async def client(stack: Stack, api_settings: dict[str, Any]) -> AsyncIterator[Client]:
    """The API in this process, with a test client."""
    async with TestClient(served(api_app(stack, **api_settings))) as client:
        yield client


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[Client]:
    """The API in this process, answering manual runs at once (no wait for their decision)."""
    async with TestClient(served(api_app(stack, manual_run_wait_sec=0))) as client:
        yield client


@pytest.fixture
async def world(client: Client, admin_token: str) -> World:
    """Two tenants, A and B, made through the API (each module provides its `client`)."""
    return World(
        admin_token, await make_tenant(client, admin_token, "A"), await make_tenant(client, admin_token, "B")
    )


@pytest.fixture
async def routine(client: Client, world: World) -> dict[str, Any]:
    """A routine of tenant A."""
    return await make_routine(client, world.a)


@pytest.fixture
async def scheduler(stack: Stack) -> AsyncIterator[Scheduler]:
    """A scheduler in this process (60 s misfire grace), not running: tests call its steps."""
    settings = SchedulerSettings(
        database_url=stack.database_url, nats_url=stack.nats_url, misfire_grace_sec=60
    )
    async with service_connections(settings, "test") as (database, bus):
        yield Scheduler(settings, database, bus, asyncio.Event())


@pytest.fixture
async def dispatcher_db(stack: Stack) -> AsyncIterator[Database]:
    """A database pool with the dispatcher's settings (open), for deciding runs in the test itself."""
    async with open_database(
        DispatcherSettings(database_url=stack.database_url), "test-dispatcher"
    ) as database:
        yield database
