"""Group commit: concurrent accepted fires are inserted together, each answered after the commit."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from routines_gateway.metrics import BATCH_SIZE, COMMIT_SECONDS
from routines_gateway.sql import QUERIES
from shared.bus import Bus, current_request_id
from shared.db import Database
from shared.errors import BadRequest, NotFound, RoutinesError
from shared.ids import new_id
from shared.logging import get_logger
from shared.runs import publish_runs_requested

log = get_logger(__name__)

# What one row can cause: a value the database (or the driver) cannot store, a check it breaks, or
# a routine deleted since the trigger was cached. Anything else (connection, timeout) is the batch's.
ROW_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, UnicodeError)


@dataclass(slots=True)
class PendingRun:
    routine_id: uuid.UUID
    company_id: uuid.UUID
    trigger_id: uuid.UUID
    payload: dict[str, Any]
    idempotency_key: str | None
    delivery_key: str | None
    delivery_signature: str | None
    id: uuid.UUID = field(default_factory=new_id)  # time-ordered: see shared/ids.py
    # The request that recorded it, for the trace header of the message announcing it.
    request_id: str | None = field(default_factory=current_request_id)
    done: asyncio.Future[bool] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    queued_at: float = field(default_factory=time.monotonic)


Announce = Callable[[Sequence[PendingRun]], Awaitable[object]]
"""Tells the dispatchers about runs just committed (step 2 of the pipeline). A failure is logged;
the runs are left to the sweeper."""


def announce_on(bus: Bus) -> Announce:
    """Announce committed runs on `bus`, up to a hundred per message, each traced to its request."""

    async def announce(runs: Sequence[PendingRun]) -> None:
        await publish_runs_requested(bus, [(p.id, p.routine_id) for p in runs], [p.request_id for p in runs])

    return announce


class GroupCommitter:
    """A few writer loops. While commits are in flight, new fires queue up and go in the next one.

    More than one writer keeps the disk busy: while one batch waits for its fsync, the next batch
    is already being sent, so throughput is not capped at one batch per commit latency. Not many
    more: every INSERT has a fixed cost (a round trip, a statement, a commit), and more writers
    take the queue in smaller batches (on 2 cores, one hot routine: 4 writers accepted 12–14 % fewer
    fires than 2; 100 webhooks: as many, at 9 % more CPU each). The runs a
    commit inserted are announced together, before their fires are answered: one message names
    up to a hundred of them, so the dispatchers fetch, parse and ack one message per commit
    rather than one per fire.
    """

    def __init__(self, db: Database, max_batch: int, writers: int = 2, *, announce: Announce) -> None:
        self._db = db
        self._max = max_batch
        self._writers = writers
        self._announce = announce
        self._queue: asyncio.Queue[PendingRun] = asyncio.Queue()

    @property
    def waiting(self) -> int:
        """Fires queued for the next commit."""
        return self._queue.qsize()

    async def submit(self, run: PendingRun) -> bool:
        """True when this run was inserted; False when a unique key matched an earlier run."""
        self._queue.put_nowait(run)  # unbounded: never waits
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
            COMMIT_SECONDS.observe(time.monotonic() - first.queued_at, "wait")
            await self._commit(batch)

    async def _commit(self, batch: list[PendingRun]) -> None:
        BATCH_SIZE.observe(len(batch))
        began = time.monotonic()
        try:
            inserted = await self._insert(batch)
        except ROW_ERRORS as exc:
            if len(batch) == 1:
                _fail(batch, _row_error(exc))
                return
            # One bad row must not fail the others' fires: retry them one by one.
            for n, p in enumerate(batch):
                try:
                    await self._commit_one(p)
                except BaseException as cancelled:  # a stop: the rest were never sent
                    _fail(batch[n + 1 :], cancelled)
                    raise
            return
        except BaseException as exc:
            _fail(batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        COMMIT_SECONDS.observe(time.monotonic() - began, "insert")
        await self._settle(batch, inserted)

    async def _settle(self, batch: list[PendingRun], inserted: set[uuid.UUID]) -> None:
        """Announce what was inserted, then answer every fire of the batch: also when announcing
        fails or the writer is cancelled meanwhile — the runs are committed, and the dispatchers'
        sweeper finds any that were not announced."""
        try:
            if inserted:
                began = time.monotonic()
                await self._announce([p for p in batch if p.id in inserted])
                COMMIT_SECONDS.observe(time.monotonic() - began, "announce")
        except Exception:
            log.exception("announcing committed runs failed; the sweeper will dispatch them")
        finally:
            for p in batch:
                if not p.done.done():
                    p.done.set_result(p.id in inserted)

    async def _commit_one(self, p: PendingRun) -> None:
        try:
            inserted = await self._insert([p])
        except ROW_ERRORS as exc:
            _fail([p], _row_error(exc))
        except BaseException as exc:
            _fail([p], exc)
            if not isinstance(exc, Exception):
                raise
        else:
            await self._settle([p], inserted)

    async def _insert(self, batch: list[PendingRun]) -> set[uuid.UUID]:
        # One INSERT statement is one transaction already: no BEGIN/COMMIT round trips.
        async with self._db.connection() as conn:
            return {
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


def _fail(batch: list[PendingRun], exc: BaseException) -> None:
    for p in batch:
        if not p.done.done():
            p.done.set_exception(exc)


def _row_error(exc: BaseException) -> RoutinesError:
    """The answer for a fire whose own row cannot be stored."""
    if isinstance(exc, asyncpg.ForeignKeyViolationError):
        return NotFound("webhook not found")
    return BadRequest("the delivery cannot be stored", {"reason": type(exc).__name__})
