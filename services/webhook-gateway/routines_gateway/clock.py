"""The gateway's notion of now: the database's clock, so timestamp checks and replay windows
(which Postgres evaluates with now()) agree even when this host's clock is off."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from routines_gateway.metrics import CLOCK_OFFSET
from shared.db import Database
from shared.lifecycle import sleep_unless_stopped
from shared.logging import get_logger

log = get_logger(__name__)


class DbClock:
    """Local wall clock plus an offset to the database's clock, sampled now and then (the offset
    drifts slowly; a sample costs one query)."""

    def __init__(self, db: Database, local: Callable[[], float] = time.time, interval: float = 30.0) -> None:
        self._db = db
        self._local = local
        self._interval = interval
        self.offset = 0.0
        self.sampled = asyncio.Event()

    def now(self) -> float:
        """Unix seconds by the database's clock."""
        return self._local() + self.offset

    async def sample(self) -> None:
        async with self._db.connection() as conn:
            before = self._local()
            db_time = await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8")
            after = self._local()
        # The database read its clock somewhere inside the round trip: assume the middle.
        self.offset = float(db_time) - (before + after) / 2
        CLOCK_OFFSET.set(self.offset)
        if abs(self.offset) > 5:
            log.warning("clock differs from the database's", offset_sec=round(self.offset, 3))
        self.sampled.set()

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.sample()
            except Exception as exc:  # the database is down: keep the last offset, try again
                log.warning("clock sample failed", error=type(exc).__name__)
            if await sleep_unless_stopped(stopping, self._interval if self.sampled.is_set() else 1.0):
                return
