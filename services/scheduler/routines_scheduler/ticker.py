"""The tick loop: claim due schedule triggers, record their runs, advance them, then publish."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from routines_scheduler.catchup import FirePlan, plan_fires
from routines_scheduler.metrics import DUE_BACKLOG, FIRE_LAG, FIRES, TICK_SECONDS
from shared.bus import Bus
from shared.db import RETRYABLE_ERRORS, Database, load_queries
from shared.errors import Unprocessable
from shared.lifecycle import sleep_unless_stopped
from shared.logging import get_logger
from shared.runs import publish_run_requested
from shared.settings import SchedulerSettings

QUERIES = load_queries("routines_scheduler")
log = get_logger(__name__)


class Scheduler:
    """Fires schedule triggers. Replicas are safe together: SKIP LOCKED plus the unique slot."""

    def __init__(self, settings: SchedulerSettings, db: Database, bus: Bus, stopping: asyncio.Event) -> None:
        self.settings = settings
        self.db = db
        self.bus = bus
        self.stopping = stopping

    async def run(self) -> None:
        """Tick until told to stop; a failing tick is logged and retried on the next one."""
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                await self.tick()
            except RETRYABLE_ERRORS as exc:
                log.warning("tick failed; retrying", error=repr(exc))
            await sleep_unless_stopped(
                self.stopping, self.settings.tick_interval_sec - (time.monotonic() - started)
            )

    async def tick(self) -> int:
        """Drain everything due now, batch after batch; return the number of runs recorded."""
        started = time.perf_counter()
        recorded = 0
        while not self.stopping.is_set():
            claimed, new_runs = await self.claim_batch()
            recorded += len(new_runs)
            await asyncio.gather(*(publish_run_requested(self.bus, run_id, rid) for run_id, rid in new_runs))
            if claimed < self.settings.claim_batch_size:
                break
        TICK_SECONDS.observe(time.perf_counter() - started)
        async with self.db.connection() as conn:
            DUE_BACKLOG.set(await conn.fetchval(QUERIES["due_backlog"]))
        return recorded

    async def claim_batch(self) -> tuple[int, list[tuple[uuid.UUID, uuid.UUID]]]:
        """One transaction: claim up to a batch of due triggers and record their slots."""
        grace = timedelta(seconds=self.settings.misfire_grace_sec)
        async with self.db.transaction() as conn:
            now: datetime = await conn.fetchval("SELECT clock_timestamp()")
            rows = await conn.fetch(QUERIES["claim_due_triggers"], now, self.settings.claim_batch_size)
            if not rows:
                return 0, []
            slots: list[tuple[Any, Any, Any, datetime]] = []
            audits: list[tuple[Any, Any, Any, dict[str, object], str]] = []
            advances: list[tuple[Any, datetime | None, datetime]] = []
            for row in rows:
                plan = self._plan(row, now, grace)
                if row["routine_status"] != "active":
                    advances.append((row["id"], None, row["next_run_at"]))
                    continue
                slots.extend((row["routine_id"], row["company_id"], row["id"], s) for s in plan.enqueue)
                audit = plan.audit(row["catch_up_policy"])
                if audit is not None:
                    audits.append((row["routine_id"], row["company_id"], row["id"], *audit))
                    FIRES.labels("missed_skipped").inc(len(plan.dropped))
                FIRES.labels("missed_enqueued").inc(plan.missed_enqueued)
                advances.append((row["id"], plan.next_run_at, now))
            inserted = []
            if slots:
                inserted = await conn.fetch(
                    QUERIES["insert_schedule_runs"], *map(list, zip(*slots, strict=True))
                )
            if audits:
                await conn.execute(QUERIES["insert_missed_audit"], *map(list, zip(*audits, strict=True)))
            await conn.execute(QUERIES["advance_triggers"], *map(list, zip(*advances, strict=True)))
        FIRES.labels("enqueued").inc(len(inserted))
        FIRES.labels("duplicate").inc(len(slots) - len(inserted))
        for run in inserted:
            FIRE_LAG.observe(max(0.0, (run["triggered_at"] - run["scheduled_for"]).total_seconds()))
        return len(rows), [(r["id"], r["routine_id"]) for r in inserted]

    @staticmethod
    def _plan(row: Any, now: datetime, grace: timedelta) -> FirePlan:
        try:
            return plan_fires(
                row["cron_expression"],
                row["timezone"],
                row["next_run_at"],
                now,
                grace,
                row["catch_up_policy"],
            )
        except Unprocessable as exc:
            # Validated on write; a zone removed from tzdata later must not wedge the tick.
            log.error("trigger cannot be scheduled; parking it", trigger_id=str(row["id"]), error=exc.message)
            return FirePlan(enqueue=[], missed_enqueued=0, next_run_at=None)
