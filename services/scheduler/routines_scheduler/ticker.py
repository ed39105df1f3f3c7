"""The fire loop: sleep until the earliest due slot, then claim, record, advance and publish."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from nats.aio.msg import Msg

from routines_dispatcher.decide import Decision, decide_runs, publish_decisions
from routines_dispatcher.policy import Outcome
from routines_scheduler.catchup import FirePlan, plan_fires
from routines_scheduler.metrics import DUE_BACKLOG, FIRE_LAG, FIRES, RUNS_DECIDED, TICK_SECONDS
from routines_scheduler.sql import QUERIES
from shared.bus import Bus, Subjects
from shared.cron import iso_utc
from shared.db import RETRYABLE_ERRORS, Database
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
# A look that failed on the database is retried this soon (or at the max sleep, if shorter): a
# slot due meanwhile is then late by this, not by the max sleep.
FAILED_TICK_RETRY_SEC = 1.0
# Planning a claimed batch stops after this long; the triggers not planned stay due for the next
# claim. After a long outage one trigger's missed slots take ~0.2 s to count: a whole batch planned
# in one transaction outlived Postgres' idle-in-transaction timeout, and every tick retried it.
PLAN_BUDGET_SEC = 1.0
# A slot prepared ahead begins no batch (and makes no plan) this close to the slot: its commit,
# at the slot, must not wait for them.
PREPARE_MARGIN_SEC = 0.1
# Claims of due triggers have no lower bound on the slot (a prepared slot's claims do).
NO_LOWER_BOUND = datetime.min.replace(tzinfo=UTC)
# A prepared slot's runs are decided this many at a time, each batch in a savepoint (one that
# cannot be decided is left to the dispatcher); a transaction makes at most DECIDE_AHEAD_SAVEPOINTS
# of them (past 64 subtransactions, every snapshot in the database gets slower).
DECIDE_AHEAD_BATCH = 100
DECIDE_AHEAD_SAVEPOINTS = 48
log = get_logger(__name__)


class _LeftToDispatchers(Exception):
    """A batch decided ahead that is rolled back and left to the dispatchers."""


# What a batch decided ahead recovers from by rolling back to its savepoint (the rest of the
# prepared transaction is sound): its lock wait ran out, it deadlocked, a statement timed out.
_GIVE_UP_ERRORS: tuple[type[BaseException], ...] = (
    _LeftToDispatchers,
    asyncpg.LockNotAvailableError,
    asyncpg.DeadlockDetectedError,
    asyncpg.QueryCanceledError,
    asyncpg.SerializationError,
)


@dataclass(frozen=True)
class _Clock:
    """The database clock as read once in a transaction, carried on by the local monotonic clock."""

    at: datetime
    read_at: float  # time.monotonic() when the reading arrived

    def now(self) -> datetime:
        return self.at + timedelta(seconds=time.monotonic() - self.read_at)

    def monotonic_at(self, instant: datetime) -> float:
        """When the local monotonic clock will read `instant` (late by the reading's trip, never early)."""
        return self.read_at + (instant - self.at).total_seconds()


@dataclass(eq=False)
class _Claimed:
    """What one claim did, counted into the metrics once its transaction committed."""

    more: bool
    inserted: list[Any] = field(default_factory=list)  # rows of the runs recorded
    slots: int = 0  # runs asked for (a slot that already had one is not inserted again)
    advanced: int = 0
    skipped: int = 0
    enqueued_late: int = 0

    @property
    def runs(self) -> list[tuple[uuid.UUID, uuid.UUID]]:
        return [(r["id"], r["routine_id"]) for r in self.inserted]


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
    _prepared: datetime | None = field(default=None, init=False)  # the last slot prepared ahead
    _changed: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    async def run(self) -> None:
        """Sleep until the earliest due slot (or a trigger change), fire it, repeat until told to stop."""
        await run_every(
            self.settings.tick_interval_sec,
            self._tick_and_plan,
            self.stopping,
            failed="tick failed; retrying",
            retry_after=min(FAILED_TICK_RETRY_SEC, self.settings.tick_interval_sec),
            sleep=self._sleep,
        )

    async def _tick_and_plan(self) -> float:
        """Fire what is due; prepare the coming slot when it is near; how long to sleep then."""
        self._changed.clear()  # a change announced from here on wakes the next sleep
        await self.tick()
        slot, until = await self._earliest_slot()
        lead = self.settings.prepare_ahead_sec
        if slot is not None and until is not None and until > 0 and slot != self._prepared:
            if until > lead:
                return min(until - lead, self.settings.tick_interval_sec)  # wake to prepare it
            await self.prepare(slot)  # returns at the slot, its runs committed
            return 0.0  # then whatever else is due, at once
        return self._sleep_for(until)

    async def _earliest_slot(self) -> tuple[datetime | None, float | None]:
        """The earliest slot of any enabled schedule trigger and the seconds until it (database
        clock; negative: overdue), or (None, None) when nothing is scheduled."""
        async with self.db.connection() as conn:
            row = await conn.fetchrow(QUERIES["earliest_slot"])
        assert row is not None
        return row["slot"], row["until"]

    async def seconds_until_due(self) -> float:
        """How long to sleep: until the earliest slot on the database clock, at most the max sleep."""
        _, until = await self._earliest_slot()
        return self._sleep_for(until)

    def _sleep_for(self, until: float | None) -> float:
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
        async with self.db.transaction() as conn:
            clock = _Clock(await conn.fetchval("SELECT clock_timestamp()"), time.monotonic())
            claimed = await self._claim(conn, clock.at, after=NO_LOWER_BOUND)
        self._count(claimed, clock.now())
        return claimed.more, claimed.runs

    async def prepare(self, slot: datetime) -> int:
        """Record the slot coming up before it comes: claim its triggers, plan them, insert their
        runs and advance them in transactions that commit at the slot (database clock), then
        publish. Nothing is visible before the slot, and the work a crowded slot takes is done
        while nothing is due. A replica killed meanwhile rolls back: the slot stays due for the
        others (or for itself after a restart), as if it had never looked. Returns the runs recorded."""
        recorded = await asyncio.gather(
            *(self._prepare_one(slot) for _ in range(self.settings.claim_concurrency))
        )
        self._prepared = slot
        return sum(recorded)

    async def _prepare_one(self, slot: datetime) -> int:
        claims: list[_Claimed] = []
        lead = self.settings.prepare_ahead_sec
        started = time.monotonic()
        async with self.db.transaction() as conn:
            # This transaction waits for the slot: its own timeouts, whatever the server's defaults
            # (a pooler passes none of ours). A replica frozen while holding the slot loses it a
            # second after the wait, not at the server's idle timeout.
            row = await conn.fetchrow(
                QUERIES["hold_slot"],
                f"{int((lead + 1) * 1000)}ms",
                f"{self.settings.db_statement_timeout_ms + int(lead * 1000)}ms",
            )
            assert row is not None
            clock = _Clock(row["now"], time.monotonic())
            # No batch is begun, and no plan made, within PREPARE_MARGIN_SEC of the slot: the
            # commit must not wait for them. What is not ready is claimed as any due trigger.
            ready_by = clock.monotonic_at(slot) - PREPARE_MARGIN_SEC
            while time.monotonic() < ready_by:
                claimed = await self._claim(conn, slot, after=clock.at, plan_until=ready_by)
                claims.append(claimed)
                if not claimed.more:
                    break
            runs = [run for claimed in claims for run in claimed.runs]
            decisions = await self._decide_ahead(conn, slot, runs, ready_by)
            # The commit is the fire: never before the slot on the database's clock, so the wait
            # is the database's (bounded, should its clock step meanwhile). A transaction that
            # claimed nothing (another replica, or this one's other transactions, took them all)
            # has nothing to show: it does not hold a connection until the slot.
            if any(claimed.advanced for claimed in claims):
                await conn.execute(QUERIES["wait_for_slot"], slot, lead + 1)
        committed = clock.now()
        for claimed in claims:
            self._count(claimed, committed)
        for status, count in Counter(d.status for d in decisions).items():
            RUNS_DECIDED.labels(status.value).inc(count)
        decided = {d.run_id for d in decisions}
        # What is left to the dispatchers first: they can start on it while the rest is announced.
        await publish_runs_requested(self.bus, [run for run in runs if run[0] not in decided])
        await publish_decisions(self.bus, decisions)
        if runs:
            took = round(time.monotonic() - started, 3)
            log.info("slot prepared", slot=iso_utc(slot), runs=len(runs), decided=len(decided), seconds=took)
        return len(runs)

    async def _decide_ahead(
        self, conn: Any, slot: datetime, runs: list[tuple[uuid.UUID, uuid.UUID]], ready_by: float
    ) -> list[Decision]:
        """Inside the prepared transaction: decide its runs as of the slot, as the dispatcher would,
        batch after batch until `ready_by` (monotonic) — their issues are then committed at the
        slot with the runs. Nothing here may make the slot late or lose it: a routine another
        transaction holds (a dispatcher deciding a webhook fire of it, an edit) is skipped; a lock
        on anything else (an issue an agent is updating) is waited for only until `ready_by`;
        a batch that waited too long, deadlocked, failed on its data, or would fail a run or
        cancel a stale issue (alerts and auto-pause are the dispatchers' — they act on routines
        and triggers this transaction may not lock) is rolled back to its savepoint. What is left
        is asked of the dispatchers, as any run."""
        decisions: list[Decision] = []
        ids = [run_id for run_id, _ in runs]
        size = max(DECIDE_AHEAD_BATCH, -(-len(ids) // DECIDE_AHEAD_SAVEPOINTS))
        for start in range(0, len(ids), size):
            batch = ids[start : start + size]
            left_ms = int((ready_by - time.monotonic()) * 1000)
            if left_ms < 1:
                break
            try:
                async with conn.transaction():  # a savepoint, with the lock wait this batch may spend
                    await conn.execute(QUERIES["lock_timeout"], f"{left_ms}ms")
                    decided = await decide_runs(conn, batch, skip_locked=True, as_of=slot)
                    if any(d.status is Outcome.FAILED or d.stale_cancelled for d in decided):
                        raise _LeftToDispatchers("a run would fail or cancel a stale issue")
            except _GIVE_UP_ERRORS as exc:
                log.info("prepared runs left to the dispatchers", runs=len(batch), reason=repr(exc)[:300])
            except RETRYABLE_ERRORS:
                raise  # the connection or the database: the transaction is lost anyway
            except Exception as exc:  # the data's: the dispatchers decide these runs one by one
                log.warning("prepared runs left to the dispatchers", runs=len(batch), error=repr(exc)[:500])
            else:
                decisions += decided
        return decisions

    async def _claim(
        self, conn: Any, at: datetime, *, after: datetime, plan_until: float | None = None
    ) -> _Claimed:
        """Inside the caller's transaction: claim up to a batch of the triggers due by `at` (and
        after `after`), record their slots as of `at` and advance them. Planning stops after
        PLAN_BUDGET_SEC or at `plan_until` (monotonic), whichever comes first."""
        grace = timedelta(seconds=self.settings.misfire_grace_sec)
        rows = await conn.fetch(QUERIES["claim_due_triggers"], at, self.settings.claim_batch_size, after)
        if not rows:
            return _Claimed(more=False)
        slots: list[tuple[Any, Any, Any, datetime]] = []
        audits: list[tuple[Any, Any, Any, dict[str, object], str]] = []
        advances: list[tuple[Any, datetime | None, datetime]] = []
        claimed = _Claimed(more=False)
        plans: dict[tuple[str, str, datetime, str], FirePlan] = {}  # triggers sharing a slot plan once
        planning_ends = time.monotonic() + PLAN_BUDGET_SEC
        if plan_until is not None:
            planning_ends = min(planning_ends, plan_until)
        for row in rows:
            key = (row["cron_expression"], row["timezone"], row["next_run_at"], row["catch_up_policy"])
            plan = plans.get(key)
            if plan is None:
                if advances and time.monotonic() >= planning_ends:
                    break  # the rest stay due (unlocked at commit) for the next claim
                plan = plans[key] = self._plan(row, at, grace)
                await asyncio.sleep(0)  # a long plan must not starve health checks
            if not can_fire(True, row["routine_status"]):  # claimed triggers are enabled
                advances.append((row["id"], None, row["next_run_at"]))
                continue
            slots.extend((row["routine_id"], row["company_id"], row["id"], s) for s in plan.enqueue)
            audit = plan.audit(row["catch_up_policy"])
            if audit is not None:
                audits.append((row["routine_id"], row["company_id"], row["id"], *audit))
                claimed.skipped += len(plan.dropped)
            claimed.enqueued_late += plan.missed_enqueued
            advances.append((row["id"], plan.next_run_at, at))
        if slots:
            claimed.inserted = await conn.fetch(
                QUERIES["insert_schedule_runs"], *map(list, zip(*slots, strict=True))
            )
        if audits:
            await conn.execute(QUERIES["insert_missed_audit"], *map(list, zip(*audits, strict=True)))
        await conn.execute(QUERIES["advance_triggers"], *map(list, zip(*advances, strict=True)))
        claimed.slots, claimed.advanced = len(slots), len(advances)
        claimed.more = len(rows) == self.settings.claim_batch_size or len(advances) < len(rows)
        return claimed

    def _count(self, claimed: _Claimed, committed: datetime) -> None:
        """Metrics of a claim, once committed (a rolled-back claim is done again by the next one).
        Fire lag is from the slot to the commit that made its run visible."""
        FIRES.labels("missed_skipped").inc(claimed.skipped)
        FIRES.labels("missed_enqueued").inc(claimed.enqueued_late)
        FIRES.labels("enqueued").inc(len(claimed.inserted))
        FIRES.labels("duplicate").inc(claimed.slots - len(claimed.inserted))
        for run in claimed.inserted:
            FIRE_LAG.observe(max(0.0, (committed - run["scheduled_for"]).total_seconds()))
        self.last_claimed += claimed.advanced

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
