"""The fire loop: sleep until the earliest due slot, then claim, record, advance and publish."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from nats.aio.msg import Msg

from routines_scheduler.catchup import FirePlan, plan_fires
from routines_scheduler.metrics import DUE_BACKLOG, FIRE_LAG, FIRES, TICK_SECONDS
from routines_scheduler.sql import QUERIES
from shared.bus import Bus, Subjects
from shared.db import Database
from shared.errors import Unprocessable
from shared.lifecycle import run_every
from shared.logging import get_logger
from shared.rules import can_fire
from shared.runs import publish_runs_requested
from shared.settings import SchedulerSettings

# When a due slot is locked by another replica: how soon to look again.
LOCKED_RETRY_SEC = 0.02
# A slot overdue by less than this was missed only by timer granularity: claim again at once.
JUST_DUE_SEC = 0.005
# Planning a claimed batch stops after this long; the triggers not planned stay due for the next
# claim. After a long outage one trigger's missed slots take ~0.2 s to count: a whole batch planned
# in one transaction outlived Postgres' idle-in-transaction timeout, and every tick retried it.
PLAN_BUDGET_SEC = 1.0
log = get_logger(__name__)


@dataclass(eq=False)
class Scheduler:
    """Fires schedule triggers. Replicas are safe together: SKIP LOCKED plus the unique slot."""

    settings: SchedulerSettings
    db: Database
    bus: Bus
    stopping: asyncio.Event
    # Set once trigger changes wake the loop (tests, start-up).
    following: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    last_claimed: int = field(default=0, init=False)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    async def run(self) -> None:
        """Sleep until the earliest due slot (or a trigger change), fire it, repeat until told to stop."""
        await run_every(
            self.settings.tick_interval_sec,
            self._tick_and_plan,
            self.stopping,
            failed="tick failed; retrying",
            retry_after=self.settings.tick_interval_sec,
            sleep=self._sleep,
        )

    async def _tick_and_plan(self) -> float:
        """Fire what is due; how long to sleep then."""
        self._changed.clear()  # a change announced from here on wakes the next sleep
        await self.tick()
        return await self.seconds_until_due()

    async def seconds_until_due(self) -> float:
        """How long to sleep: until the earliest slot on the database clock, at most the max sleep."""
        async with self.db.connection() as conn:
            until: float | None = await conn.fetchval(QUERIES["seconds_until_due"])
        if until is None:
            return self.settings.tick_interval_sec
        if until <= 0:
            # Due yet unclaimed after a drain: it became due just now (we woke a hair early), or
            # another replica holds it (SKIP LOCKED) — then look again soon rather than spin.
            just_due = until > -JUST_DUE_SEC
            return 0.0 if self.last_claimed or just_due else LOCKED_RETRY_SEC
        return min(until, self.settings.tick_interval_sec)

    async def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        stop, change = (
            asyncio.create_task(self.stopping.wait()),
            asyncio.create_task(self._changed.wait()),
        )
        try:
            await asyncio.wait({stop, change}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            change.cancel()

    async def follow_trigger_changes(self) -> None:
        """Wake early on `routines.triggers.changed`: a new or moved slot may be due before we wake."""

        async def on_change(_msg: Msg) -> None:
            self._changed.set()

        await self.bus.wait_connected()
        await self.bus.subscribe(Subjects.TRIGGERS_CHANGED, on_change)
        self.following.set()

    async def tick(self) -> int:
        """Drain everything due now, batch after batch; return the number of runs recorded."""
        started = time.perf_counter()
        self.last_claimed = 0
        publishing: list[asyncio.Task[Any]] = []

        async def drain() -> int:
            recorded = 0
            while not self.stopping.is_set():
                more, new_runs = await self.claim_batch()
                recorded += len(new_runs)
                # Committed runs are safe in Postgres (the outbox); tell the dispatchers while the
                # next batch is being claimed rather than before.
                publishing.append(asyncio.create_task(publish_runs_requested(self.bus, new_runs)))
                if not more:
                    break
            return recorded

        # Several claim transactions at once (SKIP LOCKED hands each its own triggers): one's
        # commit overlaps another's planning, which is what a crowded top of the hour needs.
        recorded = sum(await asyncio.gather(*(drain() for _ in range(self.settings.claim_concurrency))))
        await asyncio.gather(*publishing)
        TICK_SECONDS.observe(time.perf_counter() - started)
        async with self.db.connection() as conn:
            DUE_BACKLOG.set(await conn.fetchval(QUERIES["due_backlog"]))
        return recorded

    async def claim_batch(self) -> tuple[bool, list[tuple[uuid.UUID, uuid.UUID]]]:
        """One transaction: claim up to a batch of due triggers and record their slots. Returns
        whether more may be due (a full batch, or planning stopped at its budget) and the runs
        recorded (id, routine id)."""
        grace = timedelta(seconds=self.settings.misfire_grace_sec)
        async with self.db.transaction() as conn:
            now: datetime = await conn.fetchval("SELECT clock_timestamp()")
            rows = await conn.fetch(QUERIES["claim_due_triggers"], now, self.settings.claim_batch_size)
            if not rows:
                return False, []
            slots: list[tuple[Any, Any, Any, datetime]] = []
            audits: list[tuple[Any, Any, Any, dict[str, object], str]] = []
            advances: list[tuple[Any, datetime | None, datetime]] = []
            skipped = enqueued_late = 0
            plans: dict[tuple[str, str, datetime, str], FirePlan] = {}  # triggers sharing a slot plan once
            planning_ends = time.monotonic() + PLAN_BUDGET_SEC
            for row in rows:
                key = (row["cron_expression"], row["timezone"], row["next_run_at"], row["catch_up_policy"])
                plan = plans.get(key)
                if plan is None:
                    if advances and time.monotonic() >= planning_ends:
                        break  # the rest stay due (unlocked at commit) for the next claim
                    plan = plans[key] = self._plan(row, now, grace)
                    await asyncio.sleep(0)  # a long plan must not starve health checks
                if not can_fire(True, row["routine_status"]):  # claimed triggers are enabled
                    advances.append((row["id"], None, row["next_run_at"]))
                    continue
                slots.extend((row["routine_id"], row["company_id"], row["id"], s) for s in plan.enqueue)
                audit = plan.audit(row["catch_up_policy"])
                if audit is not None:
                    audits.append((row["routine_id"], row["company_id"], row["id"], *audit))
                    skipped += len(plan.dropped)
                enqueued_late += plan.missed_enqueued
                advances.append((row["id"], plan.next_run_at, now))
            inserted = []
            if slots:
                inserted = await conn.fetch(
                    QUERIES["insert_schedule_runs"], *map(list, zip(*slots, strict=True))
                )
            if audits:
                await conn.execute(QUERIES["insert_missed_audit"], *map(list, zip(*audits, strict=True)))
            await conn.execute(QUERIES["advance_triggers"], *map(list, zip(*advances, strict=True)))
        # Counted once committed (a rolled-back claim is done again by the next one).
        FIRES.labels("missed_skipped").inc(skipped)
        FIRES.labels("missed_enqueued").inc(enqueued_late)
        FIRES.labels("enqueued").inc(len(inserted))
        FIRES.labels("duplicate").inc(len(slots) - len(inserted))
        for run in inserted:
            FIRE_LAG.observe(max(0.0, (run["triggered_at"] - run["scheduled_for"]).total_seconds()))
        self.last_claimed += len(advances)
        more = len(rows) == self.settings.claim_batch_size or len(advances) < len(rows)
        return more, [(r["id"], r["routine_id"]) for r in inserted]

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
