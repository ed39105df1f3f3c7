"""Group commit: concurrent accepted fires are inserted together, each answered after the commit."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

from routines_gateway.cache import QUERIES
from routines_gateway.metrics import BATCH_SIZE
from shared.db import Database


@dataclass
class PendingRun:
    routine_id: uuid.UUID
    company_id: uuid.UUID
    trigger_id: uuid.UUID
    payload: dict[str, Any]
    idempotency_key: str | None
    delivery_key: str | None
    delivery_signature: str | None
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    done: asyncio.Future[bool] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class GroupCommitter:
    """A few writer loops. While commits are in flight, new fires queue up and go in the next one.

    More than one writer keeps the disk busy: while one batch waits for its fsync, the next batch
    is already being sent, so throughput is not capped at one batch per commit latency.
    """

    def __init__(self, db: Database, max_batch: int, writers: int = 4) -> None:
        self._db = db
        self._max = max_batch
        self._writers = writers
        self._queue: asyncio.Queue[PendingRun] = asyncio.Queue()

    async def submit(self, run: PendingRun) -> bool:
        """True when this run was inserted; False when a unique key matched an earlier run."""
        await self._queue.put(run)
        return await run.done

    async def run(self, stopping: asyncio.Event) -> None:
        await asyncio.gather(*(self._write(stopping) for _ in range(self._writers)))

    async def _write(self, stopping: asyncio.Event) -> None:
        while not (stopping.is_set() and self._queue.empty()):
            try:
                first = await asyncio.wait_for(self._queue.get(), timeout=0.5)
            except TimeoutError:
                continue
            batch = [first]
            while len(batch) < self._max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._commit(batch)

    async def _commit(self, batch: list[PendingRun]) -> None:
        BATCH_SIZE.observe(len(batch))
        try:
            # One INSERT statement is one transaction already: no BEGIN/COMMIT round trips.
            async with self._db.connection() as conn:
                inserted = {
                    r["id"]
                    for r in await conn.fetch(
                        QUERIES["insert_webhook_runs"],
                        [p.id for p in batch],
                        [p.routine_id for p in batch],
                        [p.company_id for p in batch],
                        [p.trigger_id for p in batch],
                        [p.payload for p in batch],
                        [p.idempotency_key for p in batch],
                        [p.delivery_key for p in batch],
                        [p.delivery_signature for p in batch],
                    )
                }
        except BaseException as exc:
            for p in batch:
                if not p.done.done():
                    p.done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for p in batch:
            if not p.done.done():
                p.done.set_result(p.id in inserted)
