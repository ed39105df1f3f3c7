"""A service's NATS bus, built from its settings as the service builds it, for the tests that
point it at production-shaped NATS servers (TLS, tokens, operator mode, a cluster)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from shared.bus import Bus
from shared.settings import CommonSettings


def nats_only_settings(nats_url: str, **values: Any) -> CommonSettings:
    """Settings of a service that only talks to NATS in the test (the database URL is never used)."""
    return CommonSettings(database_url="postgresql://unused@127.0.0.1/x", nats_url=nats_url, **values)


@asynccontextmanager
async def connected_bus(settings: CommonSettings, name: str, timeout: float = 30) -> AsyncIterator[Bus]:
    """The bus of `settings`, connected (and its streams declared) within `timeout` seconds;
    closed after."""
    bus = Bus.from_settings(settings, name)
    try:
        await asyncio.wait_for(bus.connect_forever(), timeout=timeout)
        yield bus
    finally:
        await bus.close()
